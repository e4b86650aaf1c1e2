/* fuzz_codec.c - properties of kv_percent_decode and kv_form_value.
 *
 * Input: NAME '\n' BODY, or just BODY (then NAME is "value", the field kvd
 * reads).  NAME ends at its first NUL, as a C string does.  For BODY it
 * checks, aborting on any violation:
 *   - both decoders return 0 or their documented error, write only inside
 *     a buffer of exactly len bytes (ASan) and only the decoded bytes
 *     (a canary fills the rest), produce at most len bytes, and leave
 *     *outlen alone on an error;
 *   - both agree with slow reference decoders written here from the spec;
 *   - decoding in place gives the same result as decoding out of place;
 *   - text made only of unreserved characters decodes to itself, and any
 *     bytes, fully %XX-encoded, decode back to themselves.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CANARY 0xA5
#define UNTOUCHED ((size_t)0x5EED)

#define REQUIRE(cond)                                                       \
  do {                                                                      \
    if (!(cond)) abort();                                                   \
  } while (0)

/* Returns a heap copy of n bytes of p (exact size; never NULL). */
static char *copy(const void *p, size_t n) {
  char *d = malloc(n ? n : 1);
  REQUIRE(d);
  if (n) memcpy(d, p, n);
  return d;
}

/* Returns n heap bytes, exactly, filled with CANARY. */
static char *canary_buf(size_t n) {
  char *d = malloc(n ? n : 1);
  REQUIRE(d);
  memset(d, CANARY, n ? n : 1);
  return d;
}

/* Returns the value of hex digit c, or -1. */
static int ref_hex(uint8_t c) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++)
    if (c == digits[i] || (i >= 10 && c == digits[i] - 32)) return i;
  return -1;
}

/* The spec as a byte loop: %XX always, '+' as a space when plus is set. */
static int ref_decode(const char *s, size_t n, char *d, size_t *outlen,
                      int plus) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      if (i + 2 >= n) return KV_EENCODING;
      int h = ref_hex((uint8_t)s[i + 1]), l = ref_hex((uint8_t)s[i + 2]);
      if (h < 0 || l < 0) return KV_EENCODING;
      d[o++] = (char)(h * 16 + l);
      i += 2;
    } else {
      d[o++] = plus && s[i] == '+' ? ' ' : s[i];
    }
  }
  *outlen = o;
  return 0;
}

/* The form spec, field by field: split on '&', skip empty fields, split
 * at the first '=', decode the name (a bad escape is an error), and on
 * the first name equal to want decode that field's value. */
static int ref_form(const char *b, size_t n, const char *want, char *d,
                    size_t *outlen) {
  size_t start = 0;
  char *name = malloc(n ? n : 1);
  REQUIRE(name);
  int rc = KV_EFORM;
  while (start < n) {
    size_t end = start, eq;
    while (end < n && b[end] != '&') end++;
    for (eq = start; eq < end && b[eq] != '='; eq++) {}
    if (end > start) {
      size_t nlen;
      if (ref_decode(b + start, eq - start, name, &nlen, 1) < 0) {
        rc = KV_EENCODING;
        break;
      }
      if (nlen == strlen(want) && memcmp(name, want, nlen) == 0) {
        if (eq == end) {
          *outlen = 0;
          rc = 0;
        } else {
          rc = ref_decode(b + eq + 1, end - eq - 1, d, outlen, 1);
        }
        break;
      }
    }
    start = end + 1;
  }
  free(name);
  return rc;
}

/* Checks one call's result: the code is 0 or an allowed error; on success
 * the output is at most n bytes, matches the reference and nothing past
 * it in dst (n bytes) was written; on an error *outlen is untouched. */
static void check(int rc, const char *dst, size_t outlen, size_t n,
                  int ref_rc, const char *ref, size_t ref_len) {
  REQUIRE(rc == ref_rc);
  if (rc != 0) {
    REQUIRE(outlen == UNTOUCHED);
    return;
  }
  REQUIRE(outlen <= n && outlen == ref_len);
  REQUIRE(memcmp(dst, ref, outlen) == 0);
  for (size_t i = outlen; i < n; i++) REQUIRE((uint8_t)dst[i] == CANARY);
}

/* Percent-decodes body out of place and in place and checks both against
 * the reference. */
static void fuzz_percent(const char *body, size_t n) {
  char *dst = canary_buf(n), *ref = canary_buf(n), *inpl = copy(body, n);
  size_t len = UNTOUCHED, rlen = UNTOUCHED, ilen = UNTOUCHED;
  int rc = kv_percent_decode(body, n, dst, &len);
  REQUIRE(rc == 0 || rc == KV_EENCODING);
  int rrc = ref_decode(body, n, ref, &rlen, 0);
  check(rc, dst, len, n, rrc, ref, rlen);
  int irc = kv_percent_decode(inpl, n, inpl, &ilen);
  REQUIRE(irc == rc && ilen == len);
  if (rc == 0) REQUIRE(memcmp(inpl, dst, len) == 0);
  free(dst);
  free(ref);
  free(inpl);
}

/* Looks up name in body out of place and in place and checks both against
 * the reference. */
static void fuzz_form(const char *body, size_t n, const char *name) {
  char *dst = canary_buf(n), *ref = canary_buf(n), *inpl = copy(body, n);
  size_t len = UNTOUCHED, rlen = UNTOUCHED, ilen = UNTOUCHED;
  int rc = kv_form_value(body, n, name, dst, &len);
  REQUIRE(rc == 0 || rc == KV_EENCODING || rc == KV_EFORM);
  int rrc = ref_form(body, n, name, ref, &rlen);
  check(rc, dst, len, n, rrc, ref, rlen);
  int irc = kv_form_value(inpl, n, name, inpl, &ilen);
  REQUIRE(irc == rc && ilen == len);
  if (rc == 0) REQUIRE(memcmp(inpl, dst, len) == 0);
  free(dst);
  free(ref);
  free(inpl);
}

/* Maps body onto the RFC 3986 unreserved characters and checks that the
 * result decodes to itself, as a path and as a form value. */
static void fuzz_unreserved(const char *body, size_t n) {
  static const char unreserved[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
  char *form = malloc(n + 6), *dst = canary_buf(n + 6);
  REQUIRE(form);
  memcpy(form, "value=", 6);
  for (size_t i = 0; i < n; i++)
    form[6 + i] = unreserved[(uint8_t)body[i] % (sizeof unreserved - 1)];
  size_t len = UNTOUCHED;
  REQUIRE(kv_percent_decode(form + 6, n, dst, &len) == 0);
  REQUIRE(len == n && memcmp(dst, form + 6, n) == 0);
  len = UNTOUCHED;
  REQUIRE(kv_form_value(form, n + 6, "value", dst, &len) == 0);
  REQUIRE(len == n && memcmp(dst, form + 6, n) == 0);
  free(form);
  free(dst);
}

/* Encodes every byte of body as %XX (the case of each hex digit taken from
 * a bit of the byte) and checks both decoders give body back. */
static void fuzz_roundtrip(const char *body, size_t n) {
  static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
  size_t en = 6 + 3 * n;
  char *enc = malloc(en), *dst = canary_buf(en);
  REQUIRE(enc);
  memcpy(enc, "value=", 6);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)body[i];
    enc[6 + 3 * i] = '%';
    enc[7 + 3 * i] = (c & 1 ? upper : lower)[c >> 4];
    enc[8 + 3 * i] = (c & 2 ? upper : lower)[c & 15];
  }
  size_t len = UNTOUCHED;
  REQUIRE(kv_percent_decode(enc + 6, en - 6, dst, &len) == 0);
  REQUIRE(len == n && (n == 0 || memcmp(dst, body, n) == 0));
  len = UNTOUCHED;
  REQUIRE(kv_form_value(enc, en, "value", dst, &len) == 0);
  REQUIRE(len == n && (n == 0 || memcmp(dst, body, n) == 0));
  free(enc);
  free(dst);
}

/* Splits the input into NAME and BODY and runs every check on BODY, the
 * form lookup with NAME and, if NAME differs, with "value" too. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *in = (const char *)data;
  const char *nl = size ? memchr(in, '\n', size) : NULL;
  char *name;
  const char *body = in;
  size_t n = size;
  if (nl) {
    size_t nlen = (size_t)(nl - in);
    name = malloc(nlen + 1);
    REQUIRE(name);
    memcpy(name, in, nlen);
    name[nlen] = '\0';
    body = nl + 1;
    n = size - nlen - 1;
  } else {
    name = copy("value", 6);
  }
  fuzz_percent(body, n);
  fuzz_form(body, n, name);
  if (strcmp(name, "value") != 0) fuzz_form(body, n, "value");
  fuzz_unreserved(body, n);
  fuzz_roundtrip(body, n);
  free(name);
  return 0;
}
