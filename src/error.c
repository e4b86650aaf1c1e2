/* error.c - the one table of error messages and HTTP statuses, libuv's
 * errors carried in kvd's codes, and the one-line error formatter. */
#include "kv/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

/* The span of codes kv_err_uv makes: libuv's own are above -65536. */
#define KV_EUV_MIN (KV_EUV_BASE - 65536)

static int is_uv(int err) { return err < KV_EUV_BASE && err > KV_EUV_MIN; }

int kv_err_uv(int uv_err) {
  if (uv_err == 0) return 0;
  if (uv_err <= KV_EUV_MIN - KV_EUV_BASE || uv_err > 0) return KV_EINVAL;
  return KV_EUV_BASE + uv_err;
}

const char *kv_strerror(int err) {
  if (is_uv(err)) return uv_strerror(err - KV_EUV_BASE);
  switch (err) {
  case 0: return "success";
#define KV__ERR_MSG(name, code, status, msg) case code: return msg;
    KV_ERRORS(KV__ERR_MSG)
#undef KV__ERR_MSG
  }
  return "unknown error";
}

int kv_err_status(int err) {
  switch (err) {
  case 0: return 200;
#define KV__ERR_STATUS(name, code, status, msg) case code: return status;
    KV_ERRORS(KV__ERR_STATUS)
#undef KV__ERR_STATUS
  }
  return 500;
}

const char *kv_status_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 417: return "Expectation Failed";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  case 507: return "Insufficient Storage";
  }
  return "Unknown";
}

void kv_errf(char *buf, size_t len, const char *fmt, ...) {
  va_list ap;
  size_t n;

  if (buf == NULL || len == 0) return;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
  for (char *p = buf; *p != '\0'; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  for (n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--) buf[n - 1] = '\0';
}
