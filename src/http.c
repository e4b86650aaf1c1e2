/* http.c - request assembly on llhttp, and response framing. */
#include "kv/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kv/container.h"
#include "kv/error.h"
#include "out_int.h"

/* ---- response framing ---------------------------------------------------- */

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
  char buf[512], *p = buf;

  p += snprintf(p, 64, "HTTP/1.1 %d %s\r\nDate: ", status,
                kv_status_reason(status));
  p = put(p, date);
  p = put(p, "\r\n");
  if (ctype) {
    p = put(p, "Content-Type: ");
    p = put(p, ctype);
    p = put(p, "\r\n");
  }
  if (clen >= 0) p += snprintf(p, 48, "Content-Length: %lld\r\n",
                               (long long)clen);
  if (extra) p = put(p, extra);
  if (close) p = put(p, "Connection: close\r\n");
  p = put(p, "\r\n");
  return kv_out_append(o, buf, (size_t)(p - buf));
}

int kv_http_error(kv_out_t *o, const char *date, int err, const char *allow,
                  int close, int head_only) {
  const char *msg = kv_strerror(err);
  size_t n = strlen(msg);
  int rc = kv_http_head(o, date, kv_err_status(err), KV_CT_TEXT,
                        (int64_t)n + 1, allow, close);
  if (rc == 0 && !head_only) rc = kv_out_append(o, msg, n);
  if (rc == 0 && !head_only) rc = kv_out_append(o, "\n", 1);
  return rc;
}

/* ---- request assembly --------------------------------------------------- */

void kv_req_reset(kv_req_t *r) {
  char *url = r->url, *buf = r->buf;
  size_t url_cap = r->url_cap, buf_cap = r->buf_cap;

  kv_rec_unref(r->rec);
  /* Keep small buffers for the next request; drop big ones. */
  if (buf_cap > 65536) {
    free(buf);
    buf = NULL;
    buf_cap = 0;
  }
  memset(r, 0, offsetof(kv_req_t, key));
  r->url = url;
  r->url_cap = url_cap;
  r->klen = 0;
  r->body_mode = KV_BODY_DISCARD;
  r->body_limit = 0;
  r->body_len = 0;
  r->rec = NULL;
  r->rec_cap = 0;
  r->buf = buf;
  r->buf_cap = buf_cap;
  r->buf_len = 0;
}

void kv_req_free(kv_req_t *r) {
  kv_rec_unref(r->rec);
  r->rec = NULL;
  free(r->url);
  free(r->buf);
  r->url = r->buf = NULL;
  r->url_cap = r->buf_cap = 0;
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
  if (h->req.head_bytes <= h->limits->max_head) return 0;
  h->req.fatal = KV_EHEADERS;
  return 1;
}

static int bad_line(kv_req_t *r) {
  r->fatal = KV_EBADREQ;
  return HPE_USER;
}

static int on_method(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = kv_http_of(p);
  h->req.method_end = offset_of(h, at) + len;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = kv_http_of(p);
  kv_req_t *r = &h->req;

  /* One space after the method: llhttp skips any number. */
  if (!r->has_url && offset_of(h, at) != r->method_end + 1)
    return bad_line(r);
  r->has_url = 1;
  r->url_end = offset_of(h, at) + len;
  if (r->url_len + len > h->limits->max_uri) {
    r->fatal = KV_EURI;
    return HPE_USER;
  }
  if (kv__out_grow((void **)&r->url, &r->url_cap, r->url_len + len + 1, 1,
                   256) != 0) {
    r->fatal = KV_ENOMEM;
    return HPE_USER;
  }
  memcpy(r->url + r->url_len, at, len);
  r->url_len += len;
  r->url[r->url_len] = '\0';
  r->head_bytes += len;
  return too_big_head(h) ? HPE_USER : 0;
}

/* llhttp reports the version from its first digit, after any number of
 * spaces and one of "HTTP/", "ICE/" or "RTSP/": exactly " HTTP/" must
 * separate it from the target. */
static int on_version(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = kv_http_of(p);
  kv_req_t *r = &h->req;
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
  kv_http_t *h = kv_http_of(p);
  kv_req_t *r = &h->req;

  if (r->hname_len + len < sizeof(r->hname)) {
    memcpy(r->hname + r->hname_len, at, len);
    r->hname_len += len;
  } else {
    r->hname_long = 1;
  }
  r->head_bytes += len;
  return too_big_head(h) ? HPE_USER : 0;
}

/* Only the headers kvd acts on are kept; llhttp itself tracks framing
 * (Content-Length, Transfer-Encoding, Connection). */
static int on_header_field_complete(llhttp_t *p) {
  kv_http_t *h = kv_http_of(p);
  kv_req_t *r = &h->req;

  if (++r->nheaders > h->limits->max_headers) {
    r->fatal = KV_EHEADERS;
    return HPE_USER;
  }
  r->cur_hdr = KV_HDR_OTHER;
  if (!r->hname_long) {
    if (r->hname_len == 12 && !strncasecmp(r->hname, "content-type", 12) &&
        r->ctype_len == 0)
      r->cur_hdr = KV_HDR_CTYPE;
    else if (r->hname_len == 6 && !strncasecmp(r->hname, "expect", 6))
      r->cur_hdr = KV_HDR_EXPECT;
    else if (r->hname_len == 4 && !strncasecmp(r->hname, "host", 4))
      r->nhost++;
    else if (r->hname_len == 17 &&
             !strncasecmp(r->hname, "transfer-encoding", 17) && !r->nte++)
      r->cur_hdr = KV_HDR_TE;
    else if (r->hname_len == 13 &&
             !strncasecmp(r->hname, "authorization", 13) && !r->auth_len)
      r->cur_hdr = KV_HDR_AUTH;
  }
  r->hname_len = 0;
  r->hname_long = 0;
  r->head_bytes += 4; /* ": " and CRLF */
  return too_big_head(h) ? HPE_USER : 0;
}

static void append_bounded(char *dst, size_t *dlen, size_t cap,
                           const char *at, size_t len) {
  if (*dlen + len >= cap) len = cap - 1 - *dlen;
  memcpy(dst + *dlen, at, len);
  *dlen += len;
  dst[*dlen] = '\0';
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = kv_http_of(p);
  kv_req_t *r = &h->req;

  /* llhttp passes an obsolete folded line (CRLF then SP or HT) on as more
   * value; RFC 9112 says to reject it.  A value piece that starts with
   * whitespace right after a line feed is exactly that. */
  if (len && (at[0] == ' ' || at[0] == '\t') &&
      byte_before(h, at, 1) == '\n') {
    r->fatal = KV_EFOLD;
    return HPE_USER;
  }
  if (r->cur_hdr == KV_HDR_AUTH) {
    if (r->auth_len + len >= sizeof(r->auth)) {
      r->auth_len = sizeof(r->auth); /* too long: cannot match */
    } else {
      memcpy(r->auth + r->auth_len, at, len);
      r->auth_len += len;
    }
  } else if (r->cur_hdr == KV_HDR_TE) {
    append_bounded(r->te, &r->te_len, sizeof(r->te), at, len);
  } else if (r->cur_hdr == KV_HDR_CTYPE)
    append_bounded(r->ctype, &r->ctype_len, sizeof(r->ctype), at, len);
  else if (r->cur_hdr == KV_HDR_EXPECT)
    append_bounded(r->expect, &r->expect_len, sizeof(r->expect), at, len);
  r->head_bytes += len;
  return too_big_head(h) ? HPE_USER : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  kv_http_t *h = kv_http_of(p);
  int rc = kv_req_body(&h->req, at, len);

  if (rc != 0) {
    h->req.fatal = rc;
    return HPE_USER;
  }
  return 0;
}

int kv_req_body(kv_req_t *r, const char *p, size_t len) {
  if (len > r->body_limit - r->body_len) return KV_ETOOBIG;
  r->body_len += len;
  switch (r->body_mode) {
  case KV_BODY_REC:
    if (r->rec->vlen + len > r->rec_cap) {
      size_t cap = r->rec_cap ? r->rec_cap : 256;
      while (cap < r->rec->vlen + len) cap *= 2;
      if (cap > r->body_limit) cap = r->body_limit;
      if (kv_rec_reserve(&r->rec, cap) != 0) return KV_ENOMEM;
      r->rec_cap = cap;
    }
    memcpy(kv_rec_value_mut(r->rec) + r->rec->vlen, p, len);
    r->rec->vlen += (uint32_t)len;
    break;
  case KV_BODY_BUF:
    if (kv__out_grow((void **)&r->buf, &r->buf_cap, r->buf_len + len, 1,
                     256) != 0)
      return KV_ENOMEM;
    memcpy(r->buf + r->buf_len, p, len);
    r->buf_len += len;
    break;
  default:
    break;
  }
  return 0;
}

static llhttp_cb hook_begin, hook_head;

static int on_message_begin(llhttp_t *p) {
  kv_http_t *h = kv_http_of(p);
  kv_req_reset(&h->req);
  h->req.in_head = 1;
  return hook_begin(p);
}

static int on_headers_complete(llhttp_t *p) {
  kv_http_t *h = kv_http_of(p);

  /* llhttp takes a line without a version for HTTP/0.9. */
  if (!h->req.has_version) {
    h->req.fatal = KV_EBADREQ;
    return -1;
  }
  h->req.in_head = 0;
  h->req.method = (uint8_t)p->method;
  h->req.has_method = 1;
  h->req.http_major = p->http_major;
  h->req.http_minor = p->http_minor;
  return hook_head(p);
}

void kv_http_settings(llhttp_settings_t *s, llhttp_cb on_begin,
                      llhttp_cb on_head, llhttp_cb on_message) {
  llhttp_settings_init(s);
  hook_begin = on_begin;
  hook_head = on_head;
  s->on_message_begin = on_message_begin;
  s->on_method = on_method;
  s->on_url = on_url;
  s->on_version = on_version;
  s->on_header_field = on_header_field;
  s->on_header_field_complete = on_header_field_complete;
  s->on_header_value = on_header_value;
  s->on_headers_complete = on_headers_complete;
  s->on_body = on_body;
  s->on_message_complete = on_message;
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
    if (pos && pos >= data && pos <= data + len) used = (size_t)(pos - data);
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

void kv_http_init(kv_http_t *h, const llhttp_settings_t *s,
                  const kv_http_limits_t *limits) {
  memset(h, 0, sizeof(*h));
  llhttp_init(&h->parser, HTTP_REQUEST, s);
  h->limits = limits;
}
