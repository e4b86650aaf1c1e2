/* http.c - request assembly on llhttp, and response framing. */
#include "kv/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv/container.h"
#include "kv/error.h"
#include "out_int.h"

/* ---- response framing --------------------------------------------------- */

void kv_http_date(char *buf, time_t t) {
  struct tm tm;

  gmtime_r(&t, &tm);
  strftime(buf, 30, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static char *put(char *p, const char *s) {
  size_t n = strlen(s);

  memcpy(p, s, n);
  return p + n;
}

int kv_http_head(kv_out_t *o, const char *date, int status, const char *ctype,
                 int64_t clen, const char *extra, int close) {
  char buf[512];
  char *p = buf;

  p += snprintf(p, 64, "HTTP/1.1 %d %s\r\nDate: ", status,
                kv_status_reason(status));
  p = put(p, date);
  p = put(p, "\r\n");
  if (ctype != NULL) {
    p = put(p, "Content-Type: ");
    p = put(p, ctype);
    p = put(p, "\r\n");
  }
  if (clen >= 0)
    p += snprintf(p, 48, "Content-Length: %lld\r\n", (long long)clen);
  if (extra != NULL && strlen(extra) > 256) {
    /* A long header (a Link with a long key) does not fit the buffer. */
    int rc = kv_out_append(o, buf, (size_t)(p - buf));
    if (rc == 0) rc = kv_out_append(o, extra, strlen(extra));
    if (rc != 0) return rc;
    p = buf;
  } else if (extra != NULL) {
    p = put(p, extra);
  }
  if (close) p = put(p, "Connection: close\r\n");
  p = put(p, "\r\n");
  return kv_out_append(o, buf, (size_t)(p - buf));
}

int kv_http_error(kv_out_t *o, const char *date, int err, const char *extra,
                  int close, int head_only) {
  const char *msg = kv_strerror(err);
  size_t n = strlen(msg);
  int rc = kv_http_head(o, date, kv_err_status(err), KV_CT_TEXT,
                        (int64_t)n + 1, extra, close);

  if (rc == 0 && !head_only) rc = kv_out_append(o, msg, n);
  if (rc == 0 && !head_only) rc = kv_out_append(o, "\n", 1);
  return rc;
}

/* ---- request assembly --------------------------------------------------- */

/* The headers kvd acts on (kv_http_req_t.cur_hdr). */
enum { HDR_OTHER = 0, HDR_CTYPE, HDR_EXPECT, HDR_AUTH, HDR_TE, HDR_IFMATCH,
       HDR_IFNONE, HDR_ACCEPT, HDR_LASTID };

/* A kept buffer over this is freed when the next message begins. */
#define KEEP_MAX 65536

static kv_http_t *http_of(llhttp_t *p) {
  return KV_CONTAINER_OF(p, kv_http_t, parser);
}

/* Appends len bytes, keeping the buffer NUL-terminated.  Returns 0 or
 * KV_ENOMEM. */
static int buf_append(kv_http_buf_t *b, const char *p, size_t len) {
  if (kv__out_grow((void **)&b->ptr, &b->cap, b->len + len + 1, 1, 256) != 0)
    return KV_ENOMEM;
  memcpy(b->ptr + b->len, p, len);
  b->len += len;
  b->ptr[b->len] = '\0';
  return 0;
}

static void buf_free(kv_http_buf_t *b) {
  free(b->ptr);
  b->ptr = NULL;
  b->len = b->cap = 0;
}

void kv_http_reset(kv_http_t *h) {
  kv_rec_unref(h->req.rec);
  memset(&h->req, 0, sizeof(h->req));
  h->url.len = 0;
  h->form.len = 0;
  if (h->form.cap > KEEP_MAX) buf_free(&h->form);
}

void kv_http_init(kv_http_t *h, const kv_http_settings_t *s) {
  memset(h, 0, sizeof(*h));
  llhttp_init(&h->parser, HTTP_REQUEST, &s->ll);
  h->settings = s;
}

void kv_http_free(kv_http_t *h) {
  kv_rec_unref(h->req.rec);
  h->req.rec = NULL;
  buf_free(&h->url);
  buf_free(&h->form);
}

/* The stream offset of a byte in the chunk being parsed. */
static uint64_t offset_of(const kv_http_t *h, const char *at) {
  return h->chunk_off + (uint64_t)(at - h->chunk);
}

/* The byte k places before at, which may be in an earlier chunk, or -1
 * if that is further back than the tail keeps. */
static int byte_before(const kv_http_t *h, const char *at, size_t k) {
  size_t in = (size_t)(at - h->chunk);

  if (k <= in) return (unsigned char)at[-(ptrdiff_t)k];
  k -= in;
  if (k > sizeof(h->tail)) return -1;
  return (unsigned char)h->tail[sizeof(h->tail) - k];
}

static int too_big_head(kv_http_t *h) {
  if (h->req.head_bytes <= h->settings->limits.max_head) return 0;
  h->req.fatal = KV_EHEADERS;
  return 1;
}

static int bad_line(kv_http_req_t *r) {
  r->fatal = KV_EBADREQ;
  return HPE_USER;
}

static int on_method(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = http_of(p);

  h->req.method_end = offset_of(h, at) + len;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = http_of(p);
  kv_http_req_t *r = &h->req;

  /* One space after the method: llhttp skips any number. */
  if (!r->has_url && offset_of(h, at) != r->method_end + 1)
    return bad_line(r);
  r->has_url = 1;
  r->url_end = offset_of(h, at) + len;
  if (r->url_len + len > h->settings->limits.max_uri) {
    r->fatal = KV_EURI;
    return HPE_USER;
  }
  if (buf_append(&h->url, at, len) != 0) {
    r->fatal = KV_ENOMEM;
    return HPE_USER;
  }
  r->url = h->url.ptr;
  r->url_len = h->url.len;
  r->head_bytes += len;
  return too_big_head(h) ? HPE_USER : 0;
}

/* llhttp reports the version from its first digit, after any number of
 * spaces and one of "HTTP/", "ICE/" or "RTSP/": exactly " HTTP/" must
 * separate it from the target. */
static int on_version(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = http_of(p);
  kv_http_req_t *r = &h->req;
  static const char sep[] = " HTTP/";
  const size_t n = sizeof(sep) - 1;

  if (!r->has_version) {
    if (offset_of(h, at) != r->url_end + n) return bad_line(r);
    for (size_t k = 0; k < n; k++)
      if (byte_before(h, at, n - k) != sep[k]) return bad_line(r);
    r->has_version = 1;
  }
  for (size_t i = 0; i < len && r->version_len < sizeof(r->version); i++)
    r->version[r->version_len++] = at[i];
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = http_of(p);
  kv_http_req_t *r = &h->req;

  if (r->hname_len + len < sizeof(r->hname)) {
    memcpy(r->hname + r->hname_len, at, len);
    r->hname_len += len;
  } else {
    r->hname_long = 1;
  }
  r->head_bytes += len;
  return too_big_head(h) ? HPE_USER : 0;
}

/* Whether the header name just read is name, which is in lower case. */
static int hname_is(const kv_http_req_t *r, const char *name) {
  size_t n = strlen(name);

  return r->hname_len == n && strncasecmp(r->hname, name, n) == 0;
}

static void append_bounded(char *dst, size_t *dlen, size_t cap,
                           const char *at, size_t len) {
  if (*dlen + len >= cap) len = cap - 1 - *dlen;
  memcpy(dst + *dlen, at, len);
  *dlen += len;
  dst[*dlen] = '\0';
}

/* Appends to a precondition header's value; one that does not fit is
 * remembered, never cut short into a different list. */
static void cond_append(kv_http_req_t *r, char *dst, size_t *dlen,
                        size_t cap, const char *at, size_t len) {
  if (*dlen + len >= cap) {
    r->cond_long = 1;
    return;
  }
  memcpy(dst + *dlen, at, len);
  *dlen += len;
  dst[*dlen] = '\0';
}

/* Only the headers kvd acts on are kept; llhttp itself tracks framing
 * (Content-Length, Transfer-Encoding, Connection). */
static int on_header_field_complete(llhttp_t *p) {
  kv_http_t *h = http_of(p);
  kv_http_req_t *r = &h->req;

  if (++r->nheaders > h->settings->limits.max_headers) {
    r->fatal = KV_EHEADERS;
    return HPE_USER;
  }
  r->cur_hdr = HDR_OTHER;
  if (!r->hname_long) {
    if (hname_is(r, "content-type") && r->ctype_len == 0)
      r->cur_hdr = HDR_CTYPE;
    else if (hname_is(r, "expect"))
      r->cur_hdr = HDR_EXPECT;
    else if (hname_is(r, "host"))
      r->nhost++;
    else if (hname_is(r, "transfer-encoding") && r->nte++ == 0)
      r->cur_hdr = HDR_TE;
    else if (hname_is(r, "authorization") && r->auth_len == 0)
      r->cur_hdr = HDR_AUTH;
    else if (hname_is(r, "if-match"))
      r->cur_hdr = HDR_IFMATCH;
    else if (hname_is(r, "if-none-match"))
      r->cur_hdr = HDR_IFNONE;
    else if (hname_is(r, "accept"))
      r->cur_hdr = HDR_ACCEPT;
    else if (hname_is(r, "last-event-id"))
      r->cur_hdr = HDR_LASTID;
  }
  if (r->cur_hdr == HDR_ACCEPT && r->accept_len > 0)
    append_bounded(r->accept, &r->accept_len, sizeof(r->accept), ",", 1);
  if (r->cur_hdr == HDR_LASTID && r->has_last_id) r->last_id_long = 1;
  if (r->cur_hdr == HDR_LASTID) r->has_last_id = 1;
  /* A list header given in several fields is one list (RFC 9110 5.3). */
  if (r->cur_hdr == HDR_IFMATCH && r->if_match_n++ > 0)
    cond_append(r, r->if_match, &r->if_match_len, sizeof(r->if_match), ",",
                1);
  if (r->cur_hdr == HDR_IFNONE && r->if_none_n++ > 0)
    cond_append(r, r->if_none, &r->if_none_len, sizeof(r->if_none), ",", 1);
  r->hname_len = 0;
  r->hname_long = 0;
  r->head_bytes += 4; /* ": " and CRLF */
  return too_big_head(h) ? HPE_USER : 0;
}


static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = http_of(p);
  kv_http_req_t *r = &h->req;

  /* llhttp passes an obsolete folded line (CRLF then SP or HT) on as more
   * value; RFC 9112 says to reject it.  A value piece that starts with
   * whitespace right after a line feed is exactly that. */
  if (len > 0 && (at[0] == ' ' || at[0] == '\t') &&
      byte_before(h, at, 1) == '\n') {
    r->fatal = KV_EFOLD;
    return HPE_USER;
  }
  if (r->cur_hdr == HDR_AUTH) {
    if (r->auth_len + len >= sizeof(r->auth)) {
      r->auth_len = sizeof(r->auth); /* too long: cannot match */
    } else {
      memcpy(r->auth + r->auth_len, at, len);
      r->auth_len += len;
    }
  } else if (r->cur_hdr == HDR_TE) {
    append_bounded(r->te, &r->te_len, sizeof(r->te), at, len);
  } else if (r->cur_hdr == HDR_CTYPE)
    append_bounded(r->ctype, &r->ctype_len, sizeof(r->ctype), at, len);
  else if (r->cur_hdr == HDR_EXPECT)
    append_bounded(r->expect, &r->expect_len, sizeof(r->expect), at, len);
  else if (r->cur_hdr == HDR_IFMATCH)
    cond_append(r, r->if_match, &r->if_match_len, sizeof(r->if_match), at,
                len);
  else if (r->cur_hdr == HDR_IFNONE)
    cond_append(r, r->if_none, &r->if_none_len, sizeof(r->if_none), at, len);
  else if (r->cur_hdr == HDR_ACCEPT)
    append_bounded(r->accept, &r->accept_len, sizeof(r->accept), at, len);
  else if (r->cur_hdr == HDR_LASTID) {
    if (r->last_id_len + len >= sizeof(r->last_id)) r->last_id_long = 1;
    else append_bounded(r->last_id, &r->last_id_len, sizeof(r->last_id), at,
                        len);
  }
  r->head_bytes += len;
  return too_big_head(h) ? HPE_USER : 0;
}

/* Appends body bytes to the request's target, enforcing its limit.
 * Returns 0 or KV_ETOOBIG / KV_ENOMEM. */
static int body_append(kv_http_t *h, const char *p, size_t len) {
  kv_http_req_t *r = &h->req;

  if (len > r->body_limit - r->body_len) return KV_ETOOBIG;
  r->body_len += len;
  switch (r->body_mode) {
  case KV_BODY_REC:
    if (r->rec->vlen + len > r->rec_cap) {
      size_t cap = r->rec_cap != 0 ? r->rec_cap : 256;
      while (cap < r->rec->vlen + len) cap *= 2;
      if (cap > r->body_limit) cap = r->body_limit;
      if (kv_rec_reserve(&r->rec, cap) != 0) return KV_ENOMEM;
      r->rec_cap = cap;
    }
    memcpy(kv_rec_value_mut(r->rec) + r->rec->vlen, p, len);
    r->rec->vlen += (uint32_t)len;
    break;
  case KV_BODY_BUF:
    if (buf_append(&h->form, p, len) != 0) return KV_ENOMEM;
    r->form = h->form.ptr;
    r->form_len = h->form.len;
    break;
  default:
    break;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = http_of(p);
  int rc = body_append(h, at, len);

  if (rc != 0) {
    h->req.fatal = rc;
    return HPE_USER;
  }
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  kv_http_t *h = http_of(p);

  kv_http_reset(h);
  h->req.in_head = 1;
  return h->settings->on_begin != NULL ? h->settings->on_begin(h) : 0;
}

static int on_headers_complete(llhttp_t *p) {
  kv_http_t *h = http_of(p);
  kv_http_req_t *r = &h->req;

  /* llhttp takes a line without a version for HTTP/0.9. */
  if (!r->has_version) {
    r->fatal = KV_EBADREQ;
    return -1;
  }
  r->in_head = 0;
  r->method = (uint8_t)p->method;
  r->has_method = 1;
  r->http_major = p->http_major;
  r->http_minor = p->http_minor;
  r->has_clen = (p->flags & F_CONTENT_LENGTH) != 0;
  r->chunked = (p->flags & F_CHUNKED) != 0;
  r->clen = r->has_clen ? p->content_length : 0;
  return h->settings->on_head != NULL ? h->settings->on_head(h) : 0;
}

static int on_message_complete(llhttp_t *p) {
  kv_http_t *h = http_of(p);

  return h->settings->on_message != NULL ? h->settings->on_message(h) : 0;
}

void kv_http_settings_init(kv_http_settings_t *s, kv_http_hook on_begin,
                           kv_http_hook on_head, kv_http_hook on_message) {
  memset(s, 0, sizeof(*s));
  llhttp_settings_init(&s->ll);
  s->ll.on_message_begin = on_message_begin;
  s->ll.on_method = on_method;
  s->ll.on_url = on_url;
  s->ll.on_version = on_version;
  s->ll.on_header_field = on_header_field;
  s->ll.on_header_field_complete = on_header_field_complete;
  s->ll.on_header_value = on_header_value;
  s->ll.on_headers_complete = on_headers_complete;
  s->ll.on_body = on_body;
  s->ll.on_message_complete = on_message_complete;
  s->on_begin = on_begin;
  s->on_head = on_head;
  s->on_message = on_message;
}

/* A method llhttp does not know is 501 only when it is a plausible method
 * token (capital letters, then " /"); anything else is garbage: 400. */
static int unknown_method_token(const char *data, size_t len,
                                const char *pos) {
  const char *e = data + len;
  const char *b = pos;
  const char *p;

  if (pos == NULL || pos < data || pos > e) return 0;
  while (b > data && b[-1] >= 'A' && b[-1] <= 'Z') b--;
  for (p = b; p < e && *p >= 'A' && *p <= 'Z'; p++) {
  }
  return p > b && p - b <= 32 && e - p >= 2 && p[0] == ' ' && p[1] == '/';
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* Whether the version is DIGIT "." DIGIT, and not 1.0 or 1.1. */
static int version_unsupported(const kv_http_req_t *r) {
  const char *v = r->version;

  return r->version_len == 3 && is_digit(v[0]) && v[1] == '.' &&
         is_digit(v[2]) && !(v[0] == '1' && v[2] <= '1');
}

int kv_http_parse_error(const kv_http_t *h, llhttp_errno_t e,
                        const char *data, size_t len) {
  if (h->req.fatal != 0) return h->req.fatal;
  switch (e) {
  case HPE_INVALID_METHOD:
    return unknown_method_token(data, len, llhttp_get_error_pos(&h->parser))
               ? KV_ENOTIMPL
               : KV_EBADREQ;
  case HPE_INVALID_VERSION:
    /* A well-formed version other than 1.0 or 1.1, versus a broken line
     * (which may be "HTTP/1.1 junk"). */
    return version_unsupported(&h->req) ? KV_EVERSION : KV_EBADREQ;
  default:
    return KV_EBADREQ;
  }
}

llhttp_errno_t kv_http_execute(kv_http_t *h, const char *data, size_t len) {
  const size_t keep = sizeof(h->tail);
  size_t used = len;
  llhttp_errno_t e;

  h->chunk = data;
  e = llhttp_execute(&h->parser, data, len);
  /* After a pause the rest is fed again: only the bytes parsed count. */
  if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
    const char *pos = llhttp_get_error_pos(&h->parser);
    if (pos != NULL && pos >= data && pos <= data + len)
      used = (size_t)(pos - data);
  }
  if (used >= keep) {
    memcpy(h->tail, data + used - keep, keep);
  } else {
    memmove(h->tail, h->tail + used, keep - used);
    memcpy(h->tail + keep - used, data, used);
  }
  h->chunk_off += used;
  return e;
}
