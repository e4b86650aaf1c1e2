/* query.c - looking up and decoding query parameters. */
#include "kv/query.h"

#include <string.h>

#include "kv/codec.h"
#include "kv/error.h"

kv_slice_t kv_query_of(const char *target, size_t len) {
  const char *q = memchr(target, '?', len);
  kv_slice_t s = {"", 0};
  const char *end;

  if (!q) return s;
  q++;
  end = memchr(q, '#', len - (size_t)(q - target));
  s.ptr = q;
  s.len = end ? (size_t)(end - q) : len - (size_t)(q - target);
  return s;
}

/* Whether the raw name at p (n bytes) decodes to want.  Known names are
 * short: a longer raw name, or one with a bad escape, is not one. */
static int name_is(const char *p, size_t n, const char *want) {
  char buf[64];
  size_t len;

  if (n > sizeof buf || kv_form_decode(p, n, buf, &len) != 0) return 0;
  return len == strlen(want) && memcmp(buf, want, len) == 0;
}

int kv_query_get(kv_slice_t q, const char *name, char *dst, size_t *len) {
  size_t i = 0;

  while (i < q.len) {
    const char *amp = memchr(q.ptr + i, '&', q.len - i);
    size_t end = amp ? (size_t)(amp - q.ptr) : q.len;
    const char *eq = memchr(q.ptr + i, '=', end - i);
    size_t name_end = eq ? (size_t)(eq - q.ptr) : end;

    if (end > i && name_is(q.ptr + i, name_end - i, name)) {
      *len = 0;
      if (eq && kv_form_decode(eq + 1, end - name_end - 1, dst, len) != 0)
        return KV_EENCODING;
      return kv_utf8_valid(dst, *len) ? 1 : KV_EPARAMUTF8;
    }
    i = end + 1;
  }
  return 0;
}

int kv_query_uint(const char *s, size_t len, uint64_t min, uint64_t max,
                  uint64_t *out) {
  uint64_t v = 0;

  if (len == 0 || len > 19) return -1; /* 19 digits cannot overflow */
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v < min || v > max) return -1;
  *out = v;
  return 0;
}

size_t kv_query_escape(const char *src, size_t len, char *dst) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;

  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)src[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
        (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      dst[o++] = (char)c;
    } else {
      dst[o++] = '%';
      dst[o++] = hex[c >> 4];
      dst[o++] = hex[c & 15];
    }
  }
  return o;
}
