/* error.h - kvd's error codes.
 *
 * Functions return 0 on success and a negative KV_E* code on failure.  One
 * table maps each code to a message and to the HTTP status a client sees, so
 * every error reply goes through the same path.  LMDB and yajl codes are
 * translated only inside the modules that own those libraries.
 */
#ifndef KV_ERROR_H
#define KV_ERROR_H

#include <stddef.h>

/* X(name, code, http_status, message) */
#define KV_ERRORS(X)                                                          \
  X(ENOMEM,     -1,  503, "out of memory")                                    \
  X(EINVAL,     -2,  400, "invalid argument")                                 \
  X(ENOTFOUND,  -3,  404, "key not found")                                    \
  X(EKEY,       -4,  400, "invalid key: must be 1..511 bytes of UTF-8")       \
  X(EKEYLEN,    -5,  414, "key too long: at most 511 bytes after decoding")   \
  X(EENCODING,  -6,  400, "invalid percent-encoding")                         \
  X(EUTF8,      -7,  400, "value is not valid UTF-8")                         \
  X(ETOOBIG,    -8,  413, "value too large")                                  \
  X(EHEADERS,   -9,  431, "request header section too large")                 \
  X(EURI,       -10, 414, "request target too long")                          \
  X(EMETHOD,    -11, 405, "method not allowed")                               \
  X(EBADREQ,    -12, 400, "malformed request")                                \
  X(ETIMEOUT,   -13, 408, "request timed out")                                \
  X(ENOSPACE,   -14, 507, "insufficient storage")                             \
  X(EIO,        -15, 500, "storage I/O error")                                \
  X(EREADONLY,  -16, 503, "storage failed earlier: writes are disabled")      \
  X(ENOTKVD,    -17, 500, "not a kvd data directory")                         \
  X(ECORRUPT,   -18, 500, "data is corrupt")                                  \
  X(ESTORE,     -19, 500, "storage error")                                    \
  X(ENOTIMPL,   -20, 501, "method not implemented")                           \
  X(ESHUTDOWN,  -21, 503, "server is shutting down")                          \
  X(EFORM,      -22, 400, "form body has no 'value' field")                   \
  X(EEXPECT,    -23, 417, "unsupported Expect header")                        \
  X(EVERSION,   -24, 505, "HTTP version not supported")                      \
  X(ENOENDPOINT, -25, 404, "no such endpoint")                               \
  X(EBUSY,      -26, 503, "another kvd is using this data directory")      \
  X(EMAPFULL,   -27, 507, "the LMDB map is full")                          \
  X(EHOST,      -28, 400, "an HTTP/1.1 request needs exactly one Host header") \
  X(EFOLD,      -29, 400, "obsolete line folding is not allowed")           \
  X(EAUTH,      -30, 401, "missing or invalid bearer token")                \
  X(EBUSYCONN,  -31, 503, "too many connections")                           \
  X(ECODING,    -32, 501, "unsupported transfer coding: only chunked")  \
  X(EREADERS,   -33, 503, "the LMDB reader table is full")               \
  X(EPRECOND,   -34, 412, "precondition failed")                           \
  X(EBADCOND,   -35, 400, "malformed If-Match or If-None-Match")           \
  X(EBADTTL,    -36, 400, "ttl must be whole seconds from 1 to 315360000") \
  X(EBADLIMIT,  -37, 400, "limit must be a whole number from 1 to 100000") \
  X(EBADKEYS,   -38, 400, "keys must be true or false")                    \
  X(EPARAMUTF8, -39, 400, "a query parameter is not valid UTF-8")           \
  X(ESTOP,      -40, 500, "stopped")                                       \
  X(EGONE,      -41, 410, "history before that revision is forgotten: list "  \
                          "with GET /?prefix= and resume from its Kvd-Revision") \
  X(EBADSINCE,  -42, 400, "since and Last-Event-ID must be a whole number")  \
  X(EBADFEED,   -43, 400, "feed must be continuous, longpoll or eventsource") \
  X(EBADWAIT,   -44, 400, "heartbeat must be 0 to 3600 and timeout 1 to 3600 seconds") \
  X(EBADFILTER, -45, 400, "give prefix or key, not both") \
  X(ENOBACKUP,  -46, 503, "no backup: LMDB checkpoints failed; restart kvd")

enum {
#define KV__ERR_ENUM(name, code, status, msg) KV_##name = (code),
  KV_ERRORS(KV__ERR_ENUM)
#undef KV__ERR_ENUM
};

/* Returns the message for an error code; never NULL. */
const char *kv_strerror(int err);

/* Returns the HTTP status an error code maps to (500 for unknown codes). */
int kv_err_status(int err);

/* Returns the reason phrase for an HTTP status ("Not Found"). */
const char *kv_status_reason(int status);

/* libuv's errors enter kvd's codes here, and only here.  A libuv error is
 * carried as KV_EUV_BASE plus its value, below every KV_E* code, so that
 * one int says which of the two it is: kv_strerror names it with
 * uv_strerror, kv_err_status gives 500, and kv_err_uv(0) is 0. */
#define KV_EUV_BASE (-100000)
int kv_err_uv(int uv_err);

/* Writes a one-line message to buf, printf-style: newlines (yajl's and
 * LMDB's messages carry them) become spaces, and trailing spaces go.  Does
 * nothing when buf is NULL or len is 0; the message is cut to fit. */
void kv_errf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
