/* http.h - HTTP/1.1 request assembly and response framing.
 *
 * llhttp parses straight from the read buffer.  Its data callbacks may fire
 * several times per element, so the pieces are appended here and acted on
 * in the matching *_complete callback.  Limits are checked as bytes arrive,
 * before anything more is buffered.  The connection that owns a kv_http_t
 * hears of a message's begin, its complete head and its end through the
 * hooks in the server's kv_http_settings_t.
 *
 * Responses are framed into a kv_out_t (out.h).
 */
#ifndef KV_HTTP_H
#define KV_HTTP_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kv/map.h"
#include "kv/out.h"

/* ---- response framing --------------------------------------------------- */

/* Response heads.  clen < 0 means no Content-Length (204); ctype may be
 * NULL; extra is NULL or complete header lines ("Allow: GET\r\n"); close
 * adds "Connection: close".  date is the 29-byte IMF-fixdate.  Returns 0
 * or KV_ENOMEM. */
#define KV_CT_TEXT "text/plain; charset=utf-8"
#define KV_CT_JSON "application/json"
int kv_http_head(kv_out_t *o, const char *date, int status, const char *ctype,
                 int64_t clen, const char *extra, int close);

/* A complete error response: status and message from the error table, the
 * message as a one-line body unless head_only.  Returns 0 or KV_ENOMEM. */
int kv_http_error(kv_out_t *o, const char *date, int err, const char *extra,
                  int close, int head_only);

/* Formats t as an IMF-fixdate into buf (at least 30 bytes). */
void kv_http_date(char *buf, time_t t);

/* ---- request assembly --------------------------------------------------- */

#define KV_AUTH_HDR_MAX 1100 /* "Bearer " and the longest token */

/* Where a body goes; a cleared request discards. */
enum {
  KV_BODY_DISCARD = 0, /* read and drop (no body expected, or rejected) */
  KV_BODY_REC,         /* straight into the new record's value */
  KV_BODY_BUF          /* into the form buffer, decoded at the end */
};

typedef struct {
  size_t max_uri, max_head, max_value;
  unsigned max_headers;
} kv_http_limits_t;

/* One request, as far as it is parsed.  All of it is cleared when the next
 * message begins; what outlives a request is in kv_http_t.  The router
 * fills in the second part once the head is complete. */
typedef struct kv_http_req {
  uint8_t method; /* llhttp_method_t, once has_method */
  uint8_t http_major, http_minor;
  uint8_t cur_hdr;        /* the header whose value is arriving */
  unsigned in_head : 1;   /* message begun, head not complete */
  unsigned has_method : 1; /* the head was parsed: method is valid */
  unsigned has_url : 1;
  unsigned has_version : 1;
  unsigned hname_long : 1;
  unsigned has_clen : 1;  /* a Content-Length, of clen */
  unsigned chunked : 1;   /* a chunked body */
  unsigned expect_continue : 1;
  unsigned is_form : 1;
  uint64_t clen;
  int fatal; /* error that ends the connection after its response */
  int err;   /* error answered at message end; the connection stays */
  const char *extra; /* header lines for err's answer (Allow, ...) */

  /* The request line must be exactly METHOD SP target SP HTTP/x.y, but
   * llhttp accepts runs of spaces: stream offsets show them. */
  uint64_t method_end, url_end;
  char version[4]; /* what follows "HTTP/", to tell 400 from 505 */
  size_t version_len;

  const char *url; /* the raw target, NUL-terminated, or NULL; in h->url */
  size_t url_len;
  size_t head_bytes;
  unsigned nheaders;
  char hname[24]; /* long enough for every header kvd acts on */
  size_t hname_len;
  char ctype[128];
  size_t ctype_len;
  char expect[32];
  size_t expect_len;
  unsigned nhost;
  unsigned nte; /* Transfer-Encoding fields */
  char te[16];  /* the first one's value, enough to say "chunked" */
  size_t te_len;
  char auth[KV_AUTH_HDR_MAX];
  size_t auth_len;
  /* If-Match and If-None-Match, every field of each joined by commas;
   * cond_long says one did not fit (a 400, as a malformed one). */
  char if_match[512];
  size_t if_match_len;
  char if_none[512];
  size_t if_none_len;
  unsigned if_match_n, if_none_n, cond_long;
  /* For the change feed: Accept (enough to find text/event-stream) and
   * Last-Event-ID (a revision; a longer one is malformed). */
  char accept[256];
  size_t accept_len;
  char last_id[24];
  size_t last_id_len;
  unsigned has_last_id : 1, last_id_long : 1;

  /* Set by the router (router.h) when the head is complete: */
  int route;
  char key[KV_KEY_MAX + 1];
  size_t klen;
  int body_mode;
  size_t body_limit;
  size_t body_len;
  kv_rec_t *rec; /* KV_BODY_REC target, or the record a write answers with */
  size_t rec_cap;
  const char *form; /* a form body (KV_BODY_BUF), in h->form */
  size_t form_len;
} kv_http_req_t;

typedef struct kv_http kv_http_t;

/* A connection's hook: 0 goes on; -1 fails the message (with req.fatal
 * set); the message hook may also return HPE_PAUSED to pause the parser. */
typedef int (*kv_http_hook)(kv_http_t *h);

/* The per-server HTTP state every parser points to: it must outlive them
 * all.  The limits may change between messages (SIGHUP). */
typedef struct {
  llhttp_settings_t ll;
  kv_http_limits_t limits;
  kv_http_hook on_begin;   /* a message begins */
  kv_http_hook on_head;    /* its head is complete */
  kv_http_hook on_message; /* it is complete */
} kv_http_settings_t;

/* A bounded byte buffer that outlives the requests that fill it. */
typedef struct {
  char *ptr;
  size_t len, cap;
} kv_http_buf_t;

/* One connection's parser, the request it is assembling, and what is kept
 * from one request to the next. */
struct kv_http {
  llhttp_t parser;
  const kv_http_settings_t *settings;
  kv_http_req_t req;
  kv_http_buf_t url;  /* the target's bytes; small, so always kept */
  kv_http_buf_t form; /* a form body's bytes; kept up to 64 KiB */
  const char *chunk;  /* the bytes being parsed now */
  uint64_t chunk_off; /* their offset in the stream */
  char tail[8];       /* the stream bytes just before them */
};

/* Installs the request-assembly callbacks into s and the hooks, any of
 * which may be NULL.  Set s->limits before parsing. */
void kv_http_settings_init(kv_http_settings_t *s, kv_http_hook on_begin,
                           kv_http_hook on_head, kv_http_hook on_message);

void kv_http_init(kv_http_t *h, const kv_http_settings_t *s);
void kv_http_free(kv_http_t *h);

/* Parses len bytes; see llhttp_execute. */
llhttp_errno_t kv_http_execute(kv_http_t *h, const char *data, size_t len);

/* The error to answer when kv_http_execute returned e (not HPE_OK nor a
 * pause) on those len bytes: the request's own fatal error if a callback
 * set one, 501 for an unknown method token, 505 for a well-formed
 * version other than 1.x, else 400. */
int kv_http_parse_error(const kv_http_t *h, llhttp_errno_t e,
                        const char *data, size_t len);

/* Clears the request for the next message: drops its record, empties the
 * kept buffers and frees a form buffer over 64 KiB.  Runs when a message
 * begins. */
void kv_http_reset(kv_http_t *h);

#endif
