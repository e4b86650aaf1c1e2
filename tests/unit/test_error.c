/* test_error.c - the error table, libuv errors in kvd's codes, and the
 * one-line error formatter. */
#include <uv.h>

#include "kv/error.h"
#include "test.h"

KV_TEST(errf_one_line, "kv_errf turns newlines into spaces and drops trailing spaces") {
  char buf[64];

  kv_errf(buf, sizeof(buf), "parse error: %s\n  at %d \n", "premature EOF", 7);
  CHECK_STR(buf, "parse error: premature EOF   at 7");
}

KV_TEST(errf_cut, "kv_errf cuts a long message to fit and ignores a NULL buffer") {
  char buf[8];

  kv_errf(buf, sizeof(buf), "%s", "0123456789");
  CHECK_STR(buf, "0123456");
  kv_errf(NULL, 0, "%s", "nothing happens");
  kv_errf(buf, 0, "%s", "nor here");
  CHECK_STR(buf, "0123456");
}

KV_TEST(uv_err_named, "a libuv error carried by kv_err_uv keeps libuv's message and is no kvd code") {
  int e = kv_err_uv(UV_EMFILE);

  CHECK_INT(kv_err_uv(0), 0);
  CHECK(e < KV_EUV_BASE);
  CHECK(e != KV_EVERSION); /* UV_EMFILE is -24 on Linux, as KV_EVERSION */
  CHECK_STR(kv_strerror(e), uv_strerror(UV_EMFILE));
  CHECK_INT(kv_err_status(e), 500);
  CHECK(kv_err_uv(UV_EAGAIN) != kv_err_uv(UV_EMFILE));
  CHECK_STR(kv_strerror(kv_err_uv(UV_EOF)), uv_strerror(UV_EOF));
}

KV_TEST(table_named, "every kvd code has its own message and an HTTP status") {
  CHECK_STR(kv_strerror(KV_ENOTFOUND), "key not found");
  CHECK_INT(kv_err_status(KV_ENOTFOUND), 404);
  CHECK_STR(kv_strerror(KV_EMETHOD), "method not allowed");
  CHECK_INT(kv_err_status(KV_EMETHOD), 405);
  CHECK_STR(kv_strerror(1), "unknown error");
}
