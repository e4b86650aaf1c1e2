/* fuzz_utf8.c - kv_utf8_valid against two slow reference validators.
 *
 * The input is validated as is and from each of its first eight offsets
 * (which moves it across the 8- and 16-byte ASCII fast paths).  Any
 * disagreement between kv_utf8_valid and either reference aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes the shortest UTF-8 form of cp to out and returns its length. */
static size_t encode(uint32_t cp, uint8_t out[4]) {
  if (cp < 0x80) {
    out[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (uint8_t)(0xC0 | cp >> 6);
    out[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (uint8_t)(0xE0 | cp >> 12);
    out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (uint8_t)(0xF0 | cp >> 18);
  out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
  out[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* Reference 1, by round trip: take the length the lead byte announces,
 * gather the payload bits, and accept only if the result is a Unicode
 * scalar value whose shortest encoding is exactly the bytes read.  That
 * rejects overlong forms, bad trailing bytes and truncation without
 * listing any of them. */
static int ref_roundtrip(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i], enc[4];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return 0;
    }
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) cp = cp << 6 | (s[i + k] & 0x3F);
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    if (encode(cp, enc) != len) return 0;
    for (size_t k = 0; k < len; k++)
      if (enc[k] != s[i + k]) return 0;
    i += len;
  }
  return 1;
}

/* Returns 1 if byte b is in lo..hi. */
static int in(uint8_t b, uint8_t lo, uint8_t hi) {
  return b >= lo && b <= hi;
}

/* Reference 2, the grammar of RFC 3629 section 4 written out literally:
 *   UTF8-2 = %xC2-DF UTF8-tail
 *   UTF8-3 = %xE0 %xA0-BF UTF8-tail / %xE1-EC 2( UTF8-tail ) /
 *            %xED %x80-9F UTF8-tail / %xEE-EF 2( UTF8-tail )
 *   UTF8-4 = %xF0 %x90-BF 2( UTF8-tail ) / %xF1-F3 3( UTF8-tail ) /
 *            %xF4 %x80-8F 2( UTF8-tail )
 * Returns the length of the character at s (n bytes left), or 0. */
static size_t rfc_char(const uint8_t *s, size_t n) {
  if (in(s[0], 0x00, 0x7F)) return 1;
  if (n >= 2 && in(s[0], 0xC2, 0xDF) && in(s[1], 0x80, 0xBF)) return 2;
  if (n >= 3 && in(s[2], 0x80, 0xBF)) {
    if (s[0] == 0xE0 && in(s[1], 0xA0, 0xBF)) return 3;
    if (in(s[0], 0xE1, 0xEC) && in(s[1], 0x80, 0xBF)) return 3;
    if (s[0] == 0xED && in(s[1], 0x80, 0x9F)) return 3;
    if (in(s[0], 0xEE, 0xEF) && in(s[1], 0x80, 0xBF)) return 3;
  }
  if (n >= 4 && in(s[2], 0x80, 0xBF) && in(s[3], 0x80, 0xBF)) {
    if (s[0] == 0xF0 && in(s[1], 0x90, 0xBF)) return 4;
    if (in(s[0], 0xF1, 0xF3) && in(s[1], 0x80, 0xBF)) return 4;
    if (s[0] == 0xF4 && in(s[1], 0x80, 0x8F)) return 4;
  }
  return 0;
}

/* Returns 1 if n bytes at s are a sequence of RFC 3629 characters. */
static int ref_rfc(const uint8_t *s, size_t n) {
  for (size_t i = 0, k; i < n; i += k)
    if ((k = rfc_char(s + i, n - i)) == 0) return 0;
  return 1;
}

/* Checks the input from offsets 0..7; aborts on any disagreement. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  for (size_t off = 0; off < 8 && off <= size; off++) {
    const uint8_t *s = data + off;
    size_t n = size - off;
    int got = kv_utf8_valid((const char *)s, n);
    int want = ref_roundtrip(s, n);
    if (got != want || ref_rfc(s, n) != want) abort();
  }
  return 0;
}
