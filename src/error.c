/* error.c - the one table of error messages and HTTP statuses. */
#include "kv/error.h"

#include <stddef.h>

const char *kv_strerror(int err) {
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
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 411: return "Length Required";
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
