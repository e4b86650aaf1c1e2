/* codec.c - percent decoding, form decoding and strict UTF-8 validation.
 *
 * Everything here runs on the event loop over request data of up to 16 MiB,
 * so the hot loops skip plain runs with memchr or eight bytes at a time,
 * and multi-byte UTF-8 goes through a branch-free DFA.  Nothing allocates.
 */
#include "kv/codec.h"

#include <stdint.h>
#include <string.h>

#include "kv/error.h"

/* Returns the value of the hex digit c (either case), or -1. */
static int hex_digit(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20; /* 'A'..'F' -> 'a'..'f'; nothing else lands in 'a'..'f' */
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Decodes the escape at p, which points at a '%' with n bytes left
 * (counting the '%').  Stores the byte in *out and returns 0, or returns
 * KV_EENCODING if two hex digits do not follow. */
static int decode_escape(const char *p, size_t n, char *out) {
  if (n < 3) return KV_EENCODING;
  int hi = hex_digit((unsigned char)p[1]);
  int lo = hex_digit((unsigned char)p[2]);
  if (hi < 0 || lo < 0) return KV_EENCODING;
  *out = (char)(hi << 4 | lo);
  return 0;
}

/* Copies n plain bytes from src to dst, turning '+' into a space when plus
 * is set.  dst may equal src or lie before it (in-place decoding), so the
 * copy runs forwards.  The '+' loop is branch-free and vectorises. */
static void copy_run(char *dst, const char *src, size_t n, int plus) {
  if (!plus) {
    if (dst != src) memmove(dst, src, n);
    return;
  }
  for (size_t k = 0; k < n; k++) dst[k] = src[k] == '+' ? ' ' : src[k];
}

/* Decodes n bytes of src into dst: %XX escapes always, '+' as a space when
 * plus is set.  dst may equal src.  Sets *outlen and returns 0, or returns
 * KV_EENCODING (leaving *outlen alone and dst partly written) at the first
 * bad escape.  Runs between escapes are found with memchr and copied
 * whole, so escape-free data goes at memmove speed. */
static int decode(const char *src, size_t n, char *dst, size_t *outlen,
                  int plus) {
  size_t i = 0, o = 0;
  while (i < n) {
    const char *pct = memchr(src + i, '%', n - i);
    size_t run = pct ? (size_t)(pct - (src + i)) : n - i;
    copy_run(dst + o, src + i, run, plus);
    i += run;
    o += run;
    if (!pct) break;
    if (decode_escape(src + i, n - i, dst + o) < 0) return KV_EENCODING;
    i += 3;
    o++;
  }
  *outlen = o;
  return 0;
}

/* A path keeps '+' as itself, so only %XX is decoded.  *outlen is set
 * only on success; on KV_EENCODING dst may hold a partial result. */
int kv_percent_decode(const char *src, size_t len, char *dst,
                      size_t *outlen) {
  return decode(src, len, dst, outlen, 0);
}

int kv_form_decode(const char *src, size_t len, char *dst, size_t *outlen) {
  return decode(src, len, dst, outlen, 1);
}

/* Checks that every '%' in n bytes at p starts a valid escape.  Returns 0
 * or KV_EENCODING. */
static int check_escapes(const char *p, size_t n) {
  const char *end = p + n;
  char ignored;
  while (p < end) {
    const char *pct = memchr(p, '%', (size_t)(end - p));
    if (!pct) break;
    if (decode_escape(pct, (size_t)(end - pct), &ignored) < 0)
      return KV_EENCODING;
    p = pct + 3;
  }
  return 0;
}

/* Decodes the form-encoded field name at p (n bytes; '+' is a space) on
 * the fly and compares it with the nlen bytes of want, without a buffer.
 * Returns 1 on a match, 0 on a mismatch, or KV_EENCODING if the name holds
 * a bad escape.  The whole name is checked for bad escapes even once it
 * is known not to match, so where an error is reported does not depend on
 * which name the caller asked for. */
static int name_matches(const char *p, size_t n, const char *want,
                        size_t nlen) {
  size_t i = 0, o = 0;
  while (i < n) {
    char c = p[i];
    if (c == '%') {
      if (decode_escape(p + i, n - i, &c) < 0) return KV_EENCODING;
      i += 3;
    } else {
      if (c == '+') c = ' ';
      i++;
    }
    if (o >= nlen || want[o] != c)
      return check_escapes(p + i, n - i); /* 0 or KV_EENCODING */
    o++;
  }
  return o == nlen;
}

/* Fields are split on '&' only (';' is data) and each at its first '='; a
 * field with no '=' has an empty value; empty fields ("a=1&&b=2") are
 * skipped, as the WHATWG parser does, so an empty body has no fields.
 *
 * What is examined, and so where KV_EENCODING can come from: the name of
 * every field up to and including the first match, and the value of that
 * match.  Values of earlier fields and all fields after the match are
 * skipped unchecked; a body whose only bad escape lies there still
 * succeeds.  On KV_EFORM every name has been checked.
 *
 * dst may equal body: the value is decoded forwards to dst[0..], which
 * never overtakes the reading position.  *outlen is set only on success. */
int kv_form_value(const char *body, size_t len, const char *name, char *dst,
                  size_t *outlen) {
  size_t nlen = strlen(name);
  size_t i = 0;
  while (i < len) {
    const char *amp = memchr(body + i, '&', len - i);
    size_t end = amp ? (size_t)(amp - body) : len;
    if (end > i) {
      const char *eq = memchr(body + i, '=', end - i);
      size_t name_end = eq ? (size_t)(eq - body) : end;
      int m = name_matches(body + i, name_end - i, name, nlen);
      if (m < 0) return m;
      if (m) {
        if (!eq) {
          *outlen = 0;
          return 0;
        }
        return decode(eq + 1, end - name_end - 1, dst, outlen, 1);
      }
    }
    i = end + 1;
  }
  return KV_EFORM;
}

#define KV_HIGH_BITS UINT64_C(0x8080808080808080)

/* Returns the index of the first byte with its high bit set in the eight
 * bytes loaded (by memcpy) into w; w & KV_HIGH_BITS must be non-zero. */
static size_t first_high_byte(uint64_t w) {
  w &= KV_HIGH_BITS;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return (size_t)__builtin_clzll(w) / 8;
#else
  return (size_t)__builtin_ctzll(w) / 8;
#endif
}

/* UTF-8 validation is a DFA over the well-formed byte sequences of
 * Unicode 15, table 3-7 (which is exactly RFC 3629):
 *
 *   00..7F
 *   C2..DF 80..BF
 *   E0     A0..BF 80..BF          (E0 80..9F would be overlong)
 *   E1..EC 80..BF 80..BF
 *   ED     80..9F 80..BF          (ED A0..BF would be a surrogate)
 *   EE..EF 80..BF 80..BF
 *   F0     90..BF 80..BF 80..BF   (F0 80..8F would be overlong)
 *   F1..F3 80..BF 80..BF 80..BF
 *   F4     80..8F 80..BF 80..BF   (F4 90.. would be above U+10FFFF)
 *
 * Anything else (80..C1 or F5..FF as a lead, a missing or out-of-range
 * trailing byte) leads to ERR, which every byte maps back to ERR.
 *
 * It is a "shift DFA": a state is a bit offset, and row[b] packs, at each
 * state's offset, the 6-bit offset of the state byte b leads to, so a step
 * is one load and one shift with no branch.  ERR is offset 0 so rows need
 * no entry for it.  T1..T3 await 1..3 trailing bytes 80..BF; the other
 * states await the one restricted second byte of their lead. */
enum {
  U8_ERR = 0, U8_ACC = 6, U8_T1 = 12, U8_T2 = 18, U8_T3 = 24,
  U8_E0 = 30, U8_ED = 36, U8_F0 = 42, U8_F4 = 48
};

#define U8_IN(b, lo, hi) ((b) >= (lo) && (b) <= (hi))
#define U8_GO(b, lo, hi, to) (U8_IN(b, lo, hi) ? (uint64_t)(to) : 0)
#define U8_LEAD(b)                                                          \
  ((b) < 0x80 ? U8_ACC : (b) < 0xC2 ? U8_ERR : (b) < 0xE0 ? U8_T1          \
   : (b) == 0xE0 ? U8_E0 : (b) == 0xED ? U8_ED : (b) < 0xF0 ? U8_T2        \
   : (b) == 0xF0 ? U8_F0 : (b) < 0xF4 ? U8_T3 : (b) == 0xF4 ? U8_F4        \
   : U8_ERR)
#define U8_ROW(b)                                                           \
  ((uint64_t)U8_LEAD(b) << U8_ACC | U8_GO(b, 0x80, 0xBF, U8_ACC) << U8_T1  \
   | U8_GO(b, 0x80, 0xBF, U8_T1) << U8_T2                                  \
   | U8_GO(b, 0x80, 0xBF, U8_T2) << U8_T3                                  \
   | U8_GO(b, 0xA0, 0xBF, U8_T1) << U8_E0                                  \
   | U8_GO(b, 0x80, 0x9F, U8_T1) << U8_ED                                  \
   | U8_GO(b, 0x90, 0xBF, U8_T2) << U8_F0                                  \
   | U8_GO(b, 0x80, 0x8F, U8_T2) << U8_F4)
#define U8_R4(b) U8_ROW(b), U8_ROW(b + 1), U8_ROW(b + 2), U8_ROW(b + 3)
#define U8_R16(b) U8_R4(b), U8_R4(b + 4), U8_R4(b + 8), U8_R4(b + 12)
#define U8_R64(b) U8_R16(b), U8_R16(b + 16), U8_R16(b + 32), U8_R16(b + 48)

static const uint64_t utf8_row[256] = {
  U8_R64(0), U8_R64(64), U8_R64(128), U8_R64(192)
};

/* Returns 1 if the len bytes at str are valid UTF-8, else 0.  In state
 * ACC, ASCII is skipped sixteen or eight bytes at a time, and a word that
 * holds a high byte is entered at that byte.  Everything else runs through
 * the DFA in blocks of up to 32 bytes, testing for ERR (which is absorbing)
 * only between blocks.  st keeps the whole row and only the shift count is
 * masked, which x86's shift instruction does for free. */
int kv_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  uint64_t st = U8_ACC;
  size_t i = 0;
  while (i < len) {
    if ((st & 63) == U8_ACC) {
      uint64_t a, b;
      while (len - i >= 16) {
        memcpy(&a, s + i, 8);
        memcpy(&b, s + i + 8, 8);
        if ((a | b) & KV_HIGH_BITS) break;
        i += 16;
      }
      if (len - i >= 8) {
        memcpy(&a, s + i, 8);
        if (!(a & KV_HIGH_BITS)) {
          i += 8;
          continue;
        }
        i += first_high_byte(a);
      }
    }
    size_t end = len - i > 32 ? i + 32 : len;
    for (; i < end; i++) st = utf8_row[s[i]] >> (st & 63);
    if ((st & 63) == U8_ERR) return 0;
  }
  return (st & 63) == U8_ACC;
}
