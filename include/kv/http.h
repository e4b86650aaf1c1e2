/* http.h - HTTP/1.1 request assembly and response framing.
 *
 * llhttp parses straight from the read buffer.  Its data callbacks may fire
 * several times per element, so the pieces are appended here and acted on
 * in the matching *_complete callback.  Limits are checked as bytes arrive,
 * before anything more is buffered.
 *
 * Responses are framed into a kv_out_t (out.h).
 */
#ifndef KV_HTTP_H
#define KV_HTTP_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kv/container.h"
#include "kv/map.h"
#include "kv/out.h"

/* ---- response framing --------------------------------------------------- */

/* Response heads.  clen < 0 means no Content-Length (204); ctype may be
 * NULL; extra is NULL or complete header lines ("Allow: GET\r\n"); close
 * adds "Connection: close".  date is the 29-byte IMF-fixdate. */
#define KV_CT_TEXT "text/plain; charset=utf-8"
#define KV_CT_JSON "application/json"
int kv_http_head(kv_out_t *o, const char *date, int status, const char *ctype,
                 int64_t clen, const char *extra, int close);

/* A complete error response: status and message from the error table. */
int kv_http_error(kv_out_t *o, const char *date, int err, const char *allow,
                  int close, int head_only);

/* Formats t as an IMF-fixdate into buf (at least 30 bytes). */
void kv_http_date(char *buf, time_t t);

/* ---- request assembly --------------------------------------------------- */

enum { KV_HDR_OTHER = 0, KV_HDR_CTYPE, KV_HDR_EXPECT, KV_HDR_AUTH, KV_HDR_TE };

#define KV_AUTH_HDR_MAX 1100 /* "Bearer " and the longest token */

enum {
  KV_BODY_DISCARD = 0, /* read and drop (no body expected, or rejected) */
  KV_BODY_REC,         /* straight into the new record's value */
  KV_BODY_BUF          /* into buf, decoded at the end (forms) */
};

typedef struct {
  size_t max_uri, max_head, max_value;
  unsigned max_headers;
} kv_http_limits_t;

typedef struct kv_req {
  uint8_t method; /* llhttp_method_t */
  uint8_t http_major, http_minor;
  uint8_t cur_hdr;
  unsigned in_head : 1;   /* message begun, head not complete */
  unsigned is_form : 1;
  unsigned expect_continue : 1;
  unsigned hname_long : 1;
  unsigned has_method : 1; /* the head was parsed: method is valid */
  unsigned has_url : 1;
  unsigned has_version : 1;
  int fatal; /* error that ends the connection after its response */
  int err;   /* error answered at message end; the connection stays */
  const char *extra; /* header lines for the error answer (Allow, ...) */

  /* The request line must be exactly METHOD SP target SP HTTP/x.y, but
   * llhttp accepts runs of spaces: stream offsets show them. */
  uint64_t method_end, url_end;
  char version[4]; /* what follows "HTTP/", to tell 400 from 505 */
  size_t version_len;

  char *url; /* the raw request target */
  size_t url_len, url_cap;
  size_t head_bytes;
  unsigned nheaders;
  char hname[24]; /* long enough for every header kvd acts on */
  size_t hname_len;
  char ctype[128];
  size_t ctype_len;
  char expect[32];
  size_t expect_len;
  unsigned nhost;
  unsigned nte;     /* Transfer-Encoding fields */
  char te[16];      /* the first one's value, enough to say "chunked" */
  size_t te_len;
  char auth[KV_AUTH_HDR_MAX];
  size_t auth_len;

  int route;
  char key[KV_KEY_MAX + 1];
  size_t klen;

  int body_mode;
  size_t body_limit;
  size_t body_len;
  kv_rec_t *rec; /* KV_BODY_REC target, or the record a write answers with */
  size_t rec_cap;
  char *buf;
  size_t buf_len, buf_cap;
} kv_req_t;

/* Clears a request for reuse, keeping its buffers. */
void kv_req_reset(kv_req_t *r);
void kv_req_free(kv_req_t *r);

/* One connection's parser and the request it is assembling. */
typedef struct kv_http {
  llhttp_t parser;
  kv_req_t req;
  const kv_http_limits_t *limits;
  const char *chunk;  /* the bytes being parsed now */
  uint64_t chunk_off; /* their offset in the stream */
  char tail[8];       /* the stream bytes just before them */
} kv_http_t;

/* Parses len bytes; see llhttp_execute. */
llhttp_errno_t kv_http_execute(kv_http_t *h, const char *data, size_t len);

static inline kv_http_t *kv_http_of(llhttp_t *p) {
  return KV_CONTAINER_OF(p, kv_http_t, parser);
}

/* Installs the request-assembly callbacks into s.  on_begin, on_head and
 * on_message are the connection's hooks for message begin, headers
 * complete and message complete; they receive the parser of a kv_http_t. */
void kv_http_settings(llhttp_settings_t *s, llhttp_cb on_begin,
                      llhttp_cb on_head, llhttp_cb on_message);

void kv_http_init(kv_http_t *h, const llhttp_settings_t *s,
                  const kv_http_limits_t *limits);

/* Appends body bytes to the request's target, enforcing its limit.
 * Returns 0 or KV_ETOOBIG / KV_ENOMEM. */
int kv_req_body(kv_req_t *r, const char *p, size_t len);

#endif
