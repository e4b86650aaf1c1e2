/* test_codec.c - percent decoding, form decoding and UTF-8 validation.
 *
 * Inputs are copied into exact-size heap buffers before each call, so an
 * address-sanitized build catches any read or write one byte too far.
 */
#include "kv/codec.h"

#include "kv/error.h"
#include "test.h"

/* Sentinel for "*outlen was not touched". */
#define UNTOUCHED ((size_t)0xDEADBEEF)

/* Returns a malloc'd copy of n bytes of p (never NULL, even for n == 0). */
static char *dup_exact(const void *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (!d) KV__FAIL("out of memory");
  if (n) memcpy(d, p, n);
  return d;
}

/* Returns n uninitialised-looking (0xA5) heap bytes, never NULL. */
static char *alloc_exact(size_t n) {
  char *d = malloc(n ? n : 1);
  if (!d) KV__FAIL("out of memory");
  memset(d, 0xA5, n ? n : 1);
  return d;
}

/* Percent-decodes src (n bytes) out of place and in place, checks both
 * agree, and returns the code; the output goes to out/outlen. */
static int pdec(const void *src, size_t n, char *out, size_t *outlen) {
  char *in = dup_exact(src, n);
  char *dst = alloc_exact(n);
  char *inplace = dup_exact(src, n);
  size_t len = UNTOUCHED, len2 = UNTOUCHED;
  int rc = kv_percent_decode(in, n, dst, &len);
  int rc2 = kv_percent_decode(inplace, n, inplace, &len2);
  CHECK_INT(rc2, rc);
  if (rc == 0) {
    CHECK(len <= n);
    CHECK_MEM(inplace, len2, dst, len);
    memcpy(out, dst, len);
  } else {
    CHECK_INT(len, UNTOUCHED);
    CHECK_INT(len2, UNTOUCHED);
  }
  *outlen = len;
  free(in);
  free(dst);
  free(inplace);
  return rc;
}

/* Checks that the C string src percent-decodes to the n bytes of want. */
static void pdec_ok(const char *src, const void *want, size_t n) {
  char out[256];
  size_t len;
  CHECK(strlen(src) <= sizeof out);
  int rc = pdec(src, strlen(src), out, &len);
  if (rc != 0) KV__FAIL("decoding '%s' returned %d", src, rc);
  CHECK_MEM(out, len, want, n);
}

/* Checks that the C string src is rejected as a bad encoding. */
static void pdec_bad(const char *src) {
  char out[256];
  size_t len;
  int rc = pdec(src, strlen(src), out, &len);
  if (rc != KV_EENCODING) KV__FAIL("decoding '%s' returned %d", src, rc);
}

/* Runs kv_form_value on the C string body out of place and in place,
 * checks both agree and returns the code; the value goes to out/outlen. */
static int form(const char *body, const char *name, char *out,
                size_t *outlen) {
  size_t n = strlen(body);
  char *in = dup_exact(body, n);
  char *dst = alloc_exact(n);
  char *inplace = dup_exact(body, n);
  size_t len = UNTOUCHED, len2 = UNTOUCHED;
  int rc = kv_form_value(in, n, name, dst, &len);
  int rc2 = kv_form_value(inplace, n, name, inplace, &len2);
  CHECK_INT(rc2, rc);
  if (rc == 0) {
    CHECK(len <= n);
    CHECK_MEM(inplace, len2, dst, len);
    memcpy(out, dst, len);
  } else {
    CHECK_INT(len, UNTOUCHED);
    CHECK_INT(len2, UNTOUCHED);
  }
  *outlen = len;
  free(in);
  free(dst);
  free(inplace);
  return rc;
}

/* Checks that field name of body decodes to the n bytes of want. */
static void form_ok(const char *body, const char *name, const void *want,
                    size_t n) {
  char out[256];
  size_t len;
  CHECK(strlen(body) <= sizeof out);
  int rc = form(body, name, out, &len);
  if (rc != 0) KV__FAIL("field '%s' of '%s' returned %d", name, body, rc);
  CHECK_MEM(out, len, want, n);
}

/* Checks that looking up name in body fails with the error want. */
static void form_err(const char *body, const char *name, int want) {
  char out[256];
  size_t len;
  int rc = form(body, name, out, &len);
  if (rc != want)
    KV__FAIL("field '%s' of '%s' returned %d, expected %d", name, body, rc,
             want);
}

/* ---- kv_percent_decode ------------------------------------------------ */

KV_TEST(pct_plain_passthrough, "text without escapes decodes to itself") {
  pdec_ok("", "", 0);
  pdec_ok("abc", "abc", 3);
  pdec_ok("AZaz09-._~", "AZaz09-._~", 10);
  pdec_ok("a/b?c=d&e;f", "a/b?c=d&e;f", 11);
}

KV_TEST(pct_hex_either_case, "escapes decode with hex digits in any case") {
  pdec_ok("%41%62%2f%2F%7e%7E", "Ab//~~", 6);
  pdec_ok("%c3%A9%C3%a9", "\xc3\xa9\xc3\xa9", 4);
  pdec_ok("%aB%Ab%ab%AB", "\xab\xab\xab\xab", 4);
  pdec_ok("%0a%0A", "\n\n", 2);
}

KV_TEST(pct_plus_stays_plus, "a plus sign in a path is not a space") {
  pdec_ok("a+b", "a+b", 3);
  pdec_ok("+", "+", 1);
  pdec_ok("%2B%2b", "++", 2);
  pdec_ok("%20", " ", 1);
}

KV_TEST(pct_nul_and_high_bytes, "escapes may produce NUL and 0x80-0xFF") {
  pdec_ok("%00", "\0", 1);
  pdec_ok("a%00b", "a\0b", 3);
  pdec_ok("%ff%FF%80%00%01", "\xff\xff\x80\x00\x01", 5);
}

KV_TEST(pct_positions, "escapes decode at the start, middle and end") {
  pdec_ok("%41", "A", 1);
  pdec_ok("%41bc", "Abc", 3);
  pdec_ok("a%42c", "aBc", 3);
  pdec_ok("ab%43", "abC", 3);
  pdec_ok("%41%42%43", "ABC", 3);
}

KV_TEST(pct_no_double_decode, "a decoded % is not decoded again") {
  pdec_ok("%2541", "%41", 3);
  pdec_ok("%25", "%", 1);
  pdec_ok("%2525", "%25", 3);
}

KV_TEST(pct_rejects_bad_escapes, "bad or truncated escapes are rejected") {
  pdec_bad("%");
  pdec_bad("abc%");
  pdec_bad("%4");
  pdec_bad("a%4");
  pdec_bad("%zz");
  pdec_bad("%g0");
  pdec_bad("%0g");
  pdec_bad("%G0");
  pdec_bad("%%41");
  pdec_bad("% 41");
  pdec_bad("%+1");
  pdec_bad("%-1");
  pdec_bad("%x1");
  pdec_bad("%41%");
  pdec_bad("%41%4");
  pdec_bad("ok%41%zzok");
}

KV_TEST(pct_all_pairs, "every byte pair after a % is judged right") {
  const char *hex = "0123456789abcdef0123456789ABCDEF";
  for (int a = 0; a < 256; a++) {
    for (int b = 0; b < 256; b++) {
      char src[3] = {'%', (char)a, (char)b}, out[3];
      size_t len;
      const char *ha = a ? strchr(hex, a) : NULL;
      const char *hb = b ? strchr(hex, b) : NULL;
      int rc = pdec(src, 3, out, &len);
      if (ha && hb) {
        CHECK_INT(rc, 0);
        CHECK_INT(len, 1);
        int want = (int)((ha - hex) % 16 * 16 + (hb - hex) % 16);
        CHECK_INT((unsigned char)out[0], want);
      } else {
        CHECK_INT(rc, KV_EENCODING);
      }
    }
  }
}

KV_TEST(pct_in_place, "decoding in place gives the same bytes") {
  char buf[] = "%2Fkey%20one%2fx+y";
  size_t len = 0;
  CHECK_INT(kv_percent_decode(buf, strlen(buf), buf, &len), 0);
  CHECK_MEM(buf, len, "/key one/x+y", 12);
}

KV_TEST(pct_writes_only_output, "bytes past the decoded length are untouched") {
  const char *src = "a%41%42c";
  char dst[16];
  size_t len;
  memset(dst, 0x5a, sizeof dst);
  CHECK_INT(kv_percent_decode(src, strlen(src), dst, &len), 0);
  CHECK_MEM(dst, len, "aABc", 4);
  for (size_t i = len; i < sizeof dst; i++) CHECK_INT(dst[i], 0x5a);
}


/* A tiny deterministic generator (xorshift64*) for reproducible data. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1Du) >> 32);
}

/* Returns the value of hex digit c, or -1; written independently of the
 * codec's own helper. */
static int ref_hex(unsigned char c) {
  static const char digits[] = "0123456789abcdefABCDEF";
  for (int i = 0; i < 22; i++)
    if (digits[i] == c) return i < 16 ? i : i - 6;
  return -1;
}

/* A byte-at-a-time decoder to check long inputs against: %XX always,
 * '+' as a space when plus is set. */
static int ref_decode(const char *s, size_t n, char *d, size_t *outlen,
                      int plus) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      if (n - i < 3) return KV_EENCODING;
      int h = ref_hex((unsigned char)s[i + 1]);
      int l = ref_hex((unsigned char)s[i + 2]);
      if (h < 0 || l < 0) return KV_EENCODING;
      d[o++] = (char)(h * 16 + l);
      i += 2;
    } else if (plus && s[i] == '+') {
      d[o++] = ' ';
    } else {
      d[o++] = s[i];
    }
  }
  *outlen = o;
  return 0;
}

/* Fills n bytes of buf with text that is mostly plain, with some '+',
 * valid escapes and high bytes, and never '&' or a bad escape. */
static void fill_mixed(char *buf, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t r = rng() % 100;
    if (r < 5 && n - i >= 3) {
      snprintf(buf + i, 4, "%%%02X", (unsigned)(rng() & 0xFF));
      if (rng() & 1) buf[i + 1] = (char)(buf[i + 1] | 0x20);
      i += 3;
    } else if (r < 10) {
      buf[i++] = '+';
    } else if (r < 15) {
      buf[i++] = (char)(0x80 | (rng() & 0x7F));
    } else {
      buf[i++] = (char)('a' + rng() % 26);
    }
  }
}

KV_TEST(pct_long_input, "a long input decodes as a reference decoder does") {
  size_t n = (size_t)4 << 20;
  char *src = malloc(n), *got = malloc(n), *want = malloc(n);
  CHECK(src && got && want);
  fill_mixed(src, n);
  size_t glen = 0, wlen = 0;
  CHECK_INT(kv_percent_decode(src, n, got, &glen), 0);
  CHECK_INT(ref_decode(src, n, want, &wlen, 0), 0);
  CHECK_MEM(got, glen, want, wlen);
  CHECK_INT(kv_percent_decode(src, n, src, &glen), 0);
  CHECK_MEM(src, glen, want, wlen);
  free(src);
  free(got);
  free(want);
}

KV_TEST(pct_random_short, "random short inputs match a reference decoder") {
  static const char alphabet[] = "%%%%+aZ09fFgG\x80\xff";
  for (int t = 0; t < 200000; t++) {
    char src[12], got[12], want[12];
    size_t n = rng() % sizeof src, glen = UNTOUCHED, wlen = UNTOUCHED;
    for (size_t i = 0; i < n; i++)
      src[i] = alphabet[rng() % (sizeof alphabet - 1)];
    int rc = pdec(src, n, got, &glen);
    CHECK_INT(rc, ref_decode(src, n, want, &wlen, 0));
    if (rc == 0) CHECK_MEM(got, glen, want, wlen);
  }
}

/* ---- kv_form_value ---------------------------------------------------- */

KV_TEST(form_basic_value, "a single field yields its value") {
  form_ok("value=hello", "value", "hello", 5);
  form_ok("value=1", "value", "1", 1);
  form_ok("v=x", "v", "x", 1);
}

KV_TEST(form_value_decoding, "in a value plus is a space and escapes decode") {
  form_ok("value=a+b%2Bc%20d", "value", "a b+c d", 7);
  form_ok("value=++", "value", "  ", 2);
  form_ok("value=%00%ff%C3%A9", "value", "\0\xff\xc3\xa9", 4);
  form_ok("value=%2541", "value", "%41", 3);
  form_ok("value=a%3Db%26c", "value", "a=b&c", 5);
}

KV_TEST(form_first_match_wins, "the first field with the name wins") {
  form_ok("value=1&value=2", "value", "1", 1);
  form_ok("x=0&value=1&value=2", "value", "1", 1);
  form_ok("value&value=2", "value", "", 0);
  form_ok("val%75e=1&value=2", "value", "1", 1);
}

KV_TEST(form_semicolon_is_data, "a semicolon does not separate fields") {
  form_err("a=1;value=2", "value", KV_EFORM);
  form_ok("value=1;x=2", "value", "1;x=2", 5);
  form_ok("a=1;value=2", "a", "1;value=2", 9);
}

KV_TEST(form_first_equals, "a field splits at its first equals sign") {
  form_ok("value=a=b", "value", "a=b", 3);
  form_ok("value==", "value", "=", 1);
  form_ok("=x&value=y", "value", "y", 1);
}

KV_TEST(form_no_equals, "a field with no equals sign has an empty value") {
  form_ok("value", "value", "", 0);
  form_ok("x=1&value", "value", "", 0);
  form_ok("value&x=1", "value", "", 0);
  form_ok("value=", "value", "", 0);
  form_ok("value=&x=1", "value", "", 0);
}

KV_TEST(form_names_are_decoded, "names are decoded before they are compared") {
  form_ok("val%75e=x", "value", "x", 1);
  form_ok("%76%61%6C%75%65=x", "value", "x", 1);
  form_ok("my+key=1", "my key", "1", 1);
  form_ok("my%20key=2", "my key", "2", 1);
  form_ok("a%2Bb=3", "a+b", "3", 1);
  form_err("a+b=3", "a+b", KV_EFORM);
  form_ok("value%3D=x", "value=", "x", 1);
  form_err("value%3D=x", "value", KV_EFORM);
  form_ok("a%26b=y", "a&b", "y", 1);
}

KV_TEST(form_names_are_exact, "names match only exactly and case-sensitively") {
  form_err("Value=1", "value", KV_EFORM);
  form_err("valuex=1", "value", KV_EFORM);
  form_err("valu=1", "value", KV_EFORM);
  form_err("value%00=1", "value", KV_EFORM);
  form_err("+value=1", "value", KV_EFORM);
  form_err("x=value", "value", KV_EFORM);
}

KV_TEST(form_absent, "an empty body or one without the field fails") {
  form_err("", "value", KV_EFORM);
  form_err("&", "value", KV_EFORM);
  form_err("&&&", "value", KV_EFORM);
  form_err("=", "value", KV_EFORM);
  form_err("x=1&y=2", "value", KV_EFORM);
  form_err("", "", KV_EFORM);
  form_err("&&", "", KV_EFORM);
}

KV_TEST(form_empty_fields, "empty fields between ampersands are skipped") {
  form_ok("&&value=1&&", "value", "1", 1);
  form_ok("&value=1", "value", "1", 1);
  form_ok("=x", "", "x", 1);
  form_ok("&=y&", "", "y", 1);
}

KV_TEST(form_bad_value_escape, "a bad escape in the value is an error") {
  form_err("value=%zz", "value", KV_EENCODING);
  form_err("value=abc%4", "value", KV_EENCODING);
  form_err("value=%", "value", KV_EENCODING);
  form_err("value=%4&x=1", "value", KV_EENCODING);
  form_err("value=ok%41%g1", "value", KV_EENCODING);
}

KV_TEST(form_bad_name_escape, "a bad escape in a name up to the match fails") {
  form_err("val%zze=1", "value", KV_EENCODING);
  form_err("a%zz=1&value=2", "value", KV_EENCODING);
  form_err("%=1&value=2", "value", KV_EENCODING);
  form_err("x%4&value=2", "value", KV_EENCODING);
  form_err("xyz%g0=1&value=2", "value", KV_EENCODING);
  form_err("valueX%zz=1&value=ok", "value", KV_EENCODING);
  form_err("a%zz", "value", KV_EENCODING);
  form_err("x=1&b%", "value", KV_EENCODING);
}

KV_TEST(form_unexamined, "earlier values and later fields are not examined") {
  form_ok("a=%zz&value=ok", "value", "ok", 2);
  form_ok("a=%&value=ok", "value", "ok", 2);
  form_ok("value=ok&b%zz=%zz", "value", "ok", 2);
  form_ok("value=ok&%", "value", "ok", 2);
  form_err("a=%zz", "value", KV_EFORM);
}

KV_TEST(form_in_place, "decoding a value in place gives the same bytes") {
  char body[] = "x=1&value=a+b%21c";
  size_t len = 0;
  CHECK_INT(kv_form_value(body, strlen(body), "value", body, &len), 0);
  CHECK_MEM(body, len, "a b!c", 5);
}

KV_TEST(form_writes_only_output, "only the decoded value is written to dst") {
  const char *body = "value=a+%41";
  char dst[16];
  size_t len;
  memset(dst, 0x5a, sizeof dst);
  CHECK_INT(kv_form_value(body, strlen(body), "value", dst, &len), 0);
  CHECK_MEM(dst, len, "a A", 3);
  for (size_t i = len; i < sizeof dst; i++) CHECK_INT(dst[i], 0x5a);
}

KV_TEST(form_long_value, "a long value decodes as a reference decoder does") {
  size_t vlen = (size_t)8 << 20;
  const char *pre = "a=1&b%20c=2&value=";
  size_t plen = strlen(pre), n = plen + vlen + 6;
  char *body = malloc(n), *got = malloc(n), *want = malloc(n);
  CHECK(body && got && want);
  memcpy(body, pre, plen);
  fill_mixed(body + plen, vlen);
  memcpy(body + plen + vlen, "&x=%zz", 6);
  size_t glen = 0, wlen = 0;
  CHECK_INT(kv_form_value(body, n, "value", got, &glen), 0);
  CHECK_INT(ref_decode(body + plen, vlen, want, &wlen, 1), 0);
  CHECK_MEM(got, glen, want, wlen);
  CHECK_INT(kv_form_value(body, n, "value", body, &glen), 0);
  CHECK_MEM(body, glen, want, wlen);
  free(body);
  free(got);
  free(want);
}

/* ---- kv_utf8_valid ---------------------------------------------------- */

/* A reference validator that decodes each code point arithmetically and
 * then checks its range; it shares no table with the codec. */
static int ref_utf8(const unsigned char *s, size_t n) {
  static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t more;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      more = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      more = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      more = 3;
      cp = c & 0x07;
    } else {
      return 0;
    }
    if (n - i <= more) return 0;
    for (size_t k = 1; k <= more; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if (cp < min_cp[more] || cp > 0x10FFFF) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    i += more + 1;
  }
  return 1;
}

/* Validates n bytes of p from an exact-size heap copy. */
static int utf8(const void *p, size_t n) {
  char *d = dup_exact(p, n);
  int v = kv_utf8_valid(d, n);
  free(d);
  return v;
}

/* Checks that n bytes of p validate as want, alone and padded with every
 * amount of ASCII before (0..19 bytes, which moves the sequence across the
 * 8- and 16-byte fast paths) and after (0, 1, 9 and 17 bytes). */
static void utf8_check(const char *p, size_t n, int want) {
  static const size_t after[] = {0, 1, 9, 17};
  char buf[64];
  CHECK(n <= 20);
  for (size_t pre = 0; pre < 20; pre++) {
    for (size_t a = 0; a < 4; a++) {
      memset(buf, 'x', sizeof buf);
      memcpy(buf + pre, p, n);
      int got = utf8(buf, pre + n + after[a]);
      if (got != want)
        KV__FAIL("%zu-byte sequence at %zu with %zu after: got %d, want %d",
                 n, pre, after[a], got, want);
    }
  }
  CHECK_INT(ref_utf8((const unsigned char *)p, n), want);
}

#define VALID(lit) utf8_check(lit, sizeof lit - 1, 1)
#define INVALID(lit) utf8_check(lit, sizeof lit - 1, 0)

KV_TEST(utf8_ascii, "empty, NUL, control and ASCII strings are valid") {
  CHECK_INT(kv_utf8_valid("", 0), 1);
  CHECK_INT(kv_utf8_valid(NULL, 0), 1);
  for (int c = 0; c < 128; c++) {
    char b = (char)c;
    CHECK_INT(utf8(&b, 1), 1);
  }
  VALID("\0");
  VALID("\0\0\0\0\0\0\0\0\0");
  VALID("\x7f\x01\x1b\t\r\n");
}

KV_TEST(utf8_boundaries, "code points at each boundary are judged right") {
  VALID("\x7f");                 /* U+007F */
  VALID("\xc2\x80");             /* U+0080 */
  VALID("\xdf\xbf");             /* U+07FF */
  VALID("\xe0\xa0\x80");         /* U+0800 */
  VALID("\xef\xbf\xbf");         /* U+FFFF */
  VALID("\xf0\x90\x80\x80");     /* U+10000 */
  VALID("\xf4\x8f\xbf\xbf");     /* U+10FFFF */
  INVALID("\xf4\x90\x80\x80");   /* U+110000 */
  VALID("\xed\x9f\xbf");         /* U+D7FF */
  INVALID("\xed\xa0\x80");       /* U+D800 */
  INVALID("\xed\xbf\xbf");       /* U+DFFF */
  VALID("\xee\x80\x80");         /* U+E000 */
  VALID("\xe1\x80\x80");         /* U+1000 */
  VALID("\xec\xbf\xbf");         /* U+CFFF */
  VALID("\xed\x80\x80");         /* U+D000 */
  VALID("\xef\xbb\xbf");         /* BOM */
  VALID("\xef\xbf\xbe");         /* U+FFFE, a noncharacter but valid */
  VALID("\xf1\x80\x80\x80");     /* U+40000 */
  VALID("\xf3\xbf\xbf\xbf");     /* U+FFFFF */
  VALID("\xf4\x80\x80\x80");     /* U+100000 */
  VALID("h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80");
}

KV_TEST(utf8_rejects_overlong, "every overlong form is rejected") {
  INVALID("\xc0\x80");           /* U+0000 in two bytes */
  INVALID("\xc0\xaf");           /* '/' in two bytes */
  INVALID("\xc1\x80");
  INVALID("\xc1\xbf");           /* U+007F in two bytes */
  INVALID("\xe0\x80\x80");       /* U+0000 in three bytes */
  INVALID("\xe0\x80\xaf");
  INVALID("\xe0\x9f\xbf");       /* U+07FF in three bytes */
  INVALID("\xf0\x80\x80\x80");   /* U+0000 in four bytes */
  INVALID("\xf0\x80\x80\xaf");
  INVALID("\xf0\x8f\xbf\xbf");   /* U+FFFF in four bytes */
  INVALID("\xf8\x88\x80\x80\x80");
  INVALID("\xfc\x84\x80\x80\x80\x80");
  INVALID("\xf8\x80\x80\x80\xaf");
  INVALID("\xfc\x80\x80\x80\x80\xaf");
}

KV_TEST(utf8_rejects_surrogates, "encoded UTF-16 surrogates are rejected") {
  INVALID("\xed\xa0\x80");       /* U+D800 */
  INVALID("\xed\xad\xbf");       /* U+DB7F */
  INVALID("\xed\xae\x80");       /* U+DB80 */
  INVALID("\xed\xaf\xbf");       /* U+DBFF */
  INVALID("\xed\xb0\x80");       /* U+DC00 */
  INVALID("\xed\xbe\x80");       /* U+DF80 */
  INVALID("\xed\xbf\xbf");       /* U+DFFF */
  INVALID("\xed\xa0\x80\xed\xb0\x80"); /* a CESU-8 pair */
  INVALID("\xed\xaf\xbf\xed\xbf\xbf");
}

KV_TEST(utf8_above_max, "code points above U+10FFFF and F5-FF are rejected") {
  INVALID("\xf4\x90\x80\x80");
  INVALID("\xf4\xbf\xbf\xbf");
  INVALID("\xf5\x80\x80\x80");
  INVALID("\xf7\xbf\xbf\xbf");
  for (int c = 0xF5; c <= 0xFF; c++) {
    char b[4] = {(char)c, '\x80', '\x80', '\x80'};
    utf8_check(b, 1, 0);
    utf8_check(b, 4, 0);
  }
  INVALID("\xfe");
  INVALID("\xff");
  INVALID("\xfe\xfe\xff\xff");
}

KV_TEST(utf8_stray_trailing, "continuation bytes without a lead are rejected") {
  for (int c = 0x80; c <= 0xBF; c++) {
    char b[2] = {(char)c, 'a'};
    utf8_check(b, 1, 0);
    utf8_check(b, 2, 0);
  }
  INVALID("a\x80");
  INVALID("\xc2\x80\x80");
  INVALID("\xe1\x80\x80\x80");
  INVALID("\xf1\x80\x80\x80\x80");
  INVALID("\x80\xbf\x80\xbf");
}

KV_TEST(utf8_truncated, "every truncated sequence is rejected") {
  static const char *const full[] = {
      "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xe1\x80\x80",
      "\xed\x9f\xbf", "\xef\xbf\xbf", "\xf0\x90\x80\x80",
      "\xf1\x80\x80\x80", "\xf4\x8f\xbf\xbf",
  };
  for (size_t f = 0; f < sizeof full / sizeof *full; f++) {
    size_t n = strlen(full[f]);
    utf8_check(full[f], n, 1);
    for (size_t cut = 1; cut < n; cut++) {
      char b[8];
      memcpy(b, full[f], cut);
      utf8_check(b, cut, 0);
      b[cut] = 'A';              /* ASCII where a trailing byte belongs */
      utf8_check(b, cut + 1, 0);
      memcpy(b + cut, "\xc2\x80", 2); /* a new lead byte there */
      utf8_check(b, cut + 2, 0);
    }
  }
}

KV_TEST(utf8_bad_trailing, "a trailing byte out of its range is rejected") {
  INVALID("\xc2\x7f");
  INVALID("\xc2\xc0");
  INVALID("\xdf\xff");
  INVALID("\xe0\x9f\x80");
  INVALID("\xe0\xc0\x80");
  INVALID("\xe1\x7f\x80");
  INVALID("\xe1\x80\x7f");
  INVALID("\xe1\x80\xc0");
  INVALID("\xed\xc0\x80");
  INVALID("\xef\xbf\xc0");
  INVALID("\xf0\x8f\x80\x80");
  INVALID("\xf0\xc0\x80\x80");
  INVALID("\xf1\x7f\x80\x80");
  INVALID("\xf1\x80\x7f\x80");
  INVALID("\xf1\x80\x80\x7f");
  INVALID("\xf1\x80\x80\xc0");
  INVALID("\xf4\x90\x80\x80");
  INVALID("\xf4\x8f\xc0\x80");
}

KV_TEST(utf8_all_short, "all 1- to 3-byte strings match a reference decoder") {
  unsigned char b[3];
  for (unsigned x = 0; x < 256; x++) {
    b[0] = (unsigned char)x;
    CHECK_INT(kv_utf8_valid((char *)b, 1), ref_utf8(b, 1));
    for (unsigned y = 0; y < 256; y++) {
      b[1] = (unsigned char)y;
      CHECK_INT(kv_utf8_valid((char *)b, 2), ref_utf8(b, 2));
      for (unsigned z = 0; z < 256; z++) {
        b[2] = (unsigned char)z;
        if (kv_utf8_valid((char *)b, 3) != ref_utf8(b, 3))
          KV__FAIL("%02x %02x %02x disagrees", x, y, z);
      }
    }
  }
}

KV_TEST(utf8_all_four_byte, "all F0-F7 4-byte forms match a reference") {
  unsigned char b[4];
  long valid = 0;
  for (unsigned w = 0xF0; w <= 0xF7; w++) {
    b[0] = (unsigned char)w;
    for (unsigned x = 0x80; x <= 0xBF; x++) {
      b[1] = (unsigned char)x;
      for (unsigned y = 0x80; y <= 0xBF; y++) {
        b[2] = (unsigned char)y;
        for (unsigned z = 0x80; z <= 0xBF; z++) {
          b[3] = (unsigned char)z;
          int v = kv_utf8_valid((char *)b, 4);
          if (v != ref_utf8(b, 4))
            KV__FAIL("%02x %02x %02x %02x disagrees", w, x, y, z);
          valid += v;
        }
      }
    }
  }
  CHECK_INT(valid, 0x100000);    /* U+10000..U+10FFFF */
}

KV_TEST(utf8_random_four, "random 4-byte strings match a reference") {
  for (long t = 0; t < 8000000; t++) {
    uint32_t r = rng();
    unsigned char b[4];
    memcpy(b, &r, 4);
    if (t & 1) b[0] = (unsigned char)(0xE8 | (b[0] & 0x17)); /* leads */
    if (kv_utf8_valid((char *)b, 4) != ref_utf8(b, 4))
      KV__FAIL("%02x %02x %02x %02x disagrees", b[0], b[1], b[2], b[3]);
  }
}

/* Appends the UTF-8 encoding of cp to p and returns the new end. */
static char *put_cp(char *p, uint32_t cp) {
  if (cp < 0x80) {
    *p++ = (char)cp;
  } else if (cp < 0x800) {
    *p++ = (char)(0xC0 | cp >> 6);
    *p++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *p++ = (char)(0xE0 | cp >> 12);
    *p++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *p++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *p++ = (char)(0xF0 | cp >> 18);
    *p++ = (char)(0x80 | (cp >> 12 & 0x3F));
    *p++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *p++ = (char)(0x80 | (cp & 0x3F));
  }
  return p;
}

/* Returns a random scalar value, mostly ASCII, of every length. */
static uint32_t random_cp(void) {
  for (;;) {
    uint32_t r = rng(), cp;
    switch (r % 8) {
    case 0: cp = rng() % 0x780 + 0x80; break;
    case 1: cp = rng() % 0xF800 + 0x800; break;
    case 2: cp = rng() % 0x100000 + 0x10000; break;
    default: cp = rng() % 0x80; break;
    }
    if (cp < 0xD800 || cp > 0xDFFF) return cp;
  }
}

KV_TEST(utf8_long_text, "long valid text passes and one bad byte fails it") {
  size_t cap = (size_t)4 << 20, n;
  char *buf = malloc(cap + 4), *p = buf;
  CHECK(buf);
  while ((size_t)(p - buf) < cap) p = put_cp(p, random_cp());
  n = (size_t)(p - buf);
  CHECK_INT(utf8(buf, n), 1);
  CHECK_INT(ref_utf8((unsigned char *)buf, n), 1);
  for (int t = 0; t < 64; t++) {
    size_t at = t < 32 ? n - 1 - (size_t)t : rng() % n;
    char old = buf[at];
    buf[at] = (char)0xFF;
    CHECK_INT(kv_utf8_valid(buf, n), 0);
    buf[at] = old;
  }
  memset(buf, 'a', cap);
  CHECK_INT(kv_utf8_valid(buf, cap), 1);
  for (size_t at = 0; at < 64; at++) {
    buf[cap - 1 - at] = (char)0x80;
    CHECK_INT(utf8(buf + cap - 64, 64), 0);
    buf[cap - 1 - at] = 'a';
  }
  free(buf);
}

KV_TEST(utf8_every_offset, "a sequence is judged right at every offset") {
  char buf[80];
  for (size_t at = 0; at + 4 <= sizeof buf; at++) {
    memset(buf, 'q', sizeof buf);
    memcpy(buf + at, "\xf0\x9f\x98\x80", 4);
    CHECK_INT(utf8(buf, sizeof buf), 1);
    CHECK_INT(utf8(buf, at + 3), 0);
    buf[at + 3] = 'q';
    CHECK_INT(utf8(buf, sizeof buf), 0);
    memset(buf, 'q', sizeof buf);
    memcpy(buf + at, "\xc2\x80", 2);
    CHECK_INT(utf8(buf, sizeof buf), 1);
    buf[at + 1] = 'q';
    CHECK_INT(utf8(buf, sizeof buf), 0);
    buf[at] = (char)0xBF;
    CHECK_INT(utf8(buf, sizeof buf), 0);
  }
}

KV_TEST(utf8_mutations, "mutated short texts match a reference decoder") {
  char buf[40];
  for (int t = 0; t < 300000; t++) {
    char *p = buf;
    while (p - buf < 30) p = put_cp(p, random_cp());
    size_t n = (size_t)(p - buf);
    int flips = (int)(rng() % 3);
    for (int f = 0; f < flips; f++) buf[rng() % n] = (char)rng();
    if (rng() & 1) n -= rng() % 4;
    if (utf8(buf, n) != ref_utf8((unsigned char *)buf, n))
      KV__FAIL("mutation %d disagrees", t);
  }
}
