/* codec.h - percent decoding, form decoding and strict UTF-8 validation. */
#ifndef KV_CODEC_H
#define KV_CODEC_H

#include <stddef.h>

/* Percent-decodes a URL path segment.  '+' stays '+'.  dst needs room for
 * len bytes and may equal src.  Returns 0, or KV_EENCODING for '%' not
 * followed by two hex digits. */
int kv_percent_decode(const char *src, size_t len, char *dst, size_t *outlen);

/* Decodes a form-encoded name or value: '+' is a space, %XX a byte.  dst
 * needs room for len bytes and may equal src.  Returns 0 or KV_EENCODING. */
int kv_form_decode(const char *src, size_t len, char *dst, size_t *outlen);

/* Looks up the first field called name in an
 * application/x-www-form-urlencoded body and decodes its value into dst
 * ('+' is a space, %XX is decoded).  Field names are decoded before they
 * are compared.  dst needs room for len bytes.  Returns 0, KV_EFORM if no
 * such field exists, or KV_EENCODING for a malformed escape anywhere in the
 * name or value examined. */
int kv_form_value(const char *body, size_t len, const char *name, char *dst,
                  size_t *outlen);

/* Returns 1 if s is valid UTF-8 by RFC 3629 (no overlong forms, no
 * surrogates, nothing above U+10FFFF), else 0.  NUL is valid. */
int kv_utf8_valid(const char *s, size_t len);

#endif
