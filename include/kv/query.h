/* query.h - the request target's query string.
 *
 * Parameters are split on '&', each at its first '='; names and values
 * are decoded as HTML forms encode them ('+' is a space, %XX a byte).  A
 * parameter without '=' has an empty value.  Unknown parameters are never
 * examined, so a cache-buster with a bad escape does no harm.
 */
#ifndef KV_QUERY_H
#define KV_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "kv/slice.h"

/* The query of a request target: after the first '?', up to any '#';
 * empty without one. */
kv_slice_t kv_query_of(const char *target, size_t len);

/* Decodes the value of the first parameter called name into dst, which
 * needs room for q.len bytes.  Returns 1 with *len set when it is there,
 * 0 when it is not, KV_EENCODING for a malformed escape in its value, or
 * KV_EPARAMUTF8 when the decoded value is not UTF-8. */
int kv_query_get(kv_slice_t q, const char *name, char *dst, size_t *len);

/* Parses a whole number of decimal digits only (no sign, no spaces) in
 * [min, max].  Returns 0, or -1 for anything else. */
int kv_query_uint(const char *s, size_t len, uint64_t min, uint64_t max,
                  uint64_t *out);

/* Percent-encodes len bytes for a query value: the unreserved bytes of
 * RFC 3986 (A-Z a-z 0-9 - . _ ~) as they are, every other as %XX in upper
 * case.  dst needs room for 3 * len bytes.  Returns the length written. */
size_t kv_query_escape(const char *src, size_t len, char *dst);

#endif
