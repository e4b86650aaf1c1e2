/* test_query.c - query strings: finding, decoding, numbers, escaping. */
#include "kv/query.h"

#include "kv/error.h"
#include "test.h"

static kv_slice_t q(const char *target) {
  return kv_query_of(target, strlen(target));
}

/* Looks name up in target's query; returns the result, value in out. */
static int get(const char *target, const char *name, char *out) {
  kv_slice_t s = q(target);
  char *buf = malloc(s.len + 1);
  size_t len = 12345;
  int rc;
  if (!buf) KV__FAIL("out of memory");
  rc = kv_query_get(s, name, buf, &len);
  if (rc == 1) {
    memcpy(out, buf, len);
    out[len] = '\0';
  }
  free(buf);
  return rc;
}

KV_TEST(query_of, "the query is what follows the first ? up to any #") {
  kv_slice_t s = q("/?a=1?b#frag");
  CHECK_MEM(s.ptr, s.len, "a=1?b", 5);
  s = q("/key");
  CHECK_INT(s.len, 0);
  s = q("/?");
  CHECK_INT(s.len, 0);
}

KV_TEST(get_decodes, "values decode as forms do: %XX is a byte and + is a space") {
  char v[64];
  CHECK_INT(get("/?prefix=a+b%2Fc%20d", "prefix", v), 1);
  CHECK_STR(v, "a b/c d");
  CHECK_INT(get("/?x=1&%70refix=p", "prefix", v), 1); /* the name decodes too */
  CHECK_STR(v, "p");
}

KV_TEST(get_first, "the first of a repeated parameter wins, a bare name has an empty value, and a missing one is 0") {
  char v[64];
  CHECK_INT(get("/?limit=1&limit=2", "limit", v), 1);
  CHECK_STR(v, "1");
  CHECK_INT(get("/?keys&prefix=a", "keys", v), 1);
  CHECK_STR(v, "");
  CHECK_INT(get("/?keysx=1&xkeys=2", "keys", v), 0);
  CHECK_INT(get("/?prefix=a", "after", v), 0);
  CHECK_INT(get("/", "prefix", v), 0);
}

KV_TEST(get_errors, "a bad escape or non-UTF-8 in a known value is an error, in an unknown one is ignored") {
  char v[64];
  CHECK_INT(get("/?prefix=%zz", "prefix", v), KV_EENCODING);
  CHECK_INT(get("/?prefix=%4", "prefix", v), KV_EENCODING);
  CHECK_INT(get("/?prefix=%FF", "prefix", v), KV_EPARAMUTF8);
  CHECK_INT(get("/?prefix=%C3%A9", "prefix", v), 1);
  CHECK_STR(v, "\xC3\xA9");
  CHECK_INT(get("/?_=%zz&%zz=1&prefix=ok", "prefix", v), 1);
  CHECK_STR(v, "ok");
}

KV_TEST(uint_edges, "numbers are decimal digits only, within their bounds") {
  uint64_t v = 0;
  CHECK_INT(kv_query_uint("1", 1, 1, 100000, &v), 0);
  CHECK_INT(v, 1);
  CHECK_INT(kv_query_uint("100000", 6, 1, 100000, &v), 0);
  CHECK_INT(v, 100000);
  CHECK_INT(kv_query_uint("007", 3, 1, 100000, &v), 0);
  CHECK_INT(v, 7);
  CHECK_INT(kv_query_uint("0", 1, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint("100001", 6, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint("", 0, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint("+5", 2, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint("-1", 2, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint("1.5", 3, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint(" 5", 2, 1, 100000, &v), -1);
  CHECK_INT(kv_query_uint("99999999999999999999999", 23, 1, UINT64_MAX, &v),
            -1);
}

KV_TEST(escape, "escaping keeps the unreserved bytes and writes every other as upper-case %XX") {
  char out[64];
  size_t n = kv_query_escape("aZ09-._~ /%+\xC3\xA9", 14, out);
  CHECK_MEM(out, n, "aZ09-._~%20%2F%25%2B%C3%A9", 26);
}
