/* router.c - routes and handlers. */
#include "kv/router.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "kv/codec.h"
#include "kv/error.h"
#include "kv/server.h"

#define ALLOW_READ "GET, HEAD"
#define ALLOW_KEY "GET, HEAD, PUT, POST, DELETE"
#define FORM_TYPE "application/x-www-form-urlencoded"

static kv_conn_t *conn_of_write(kv_write_t *w) {
  return (kv_conn_t *)(void *)((char *)w - offsetof(kv_conn_t, write));
}

static kv_conn_t *conn_of_wait(kv_image_wait_t *w) {
  return (kv_conn_t *)(void *)((char *)w - offsetof(kv_conn_t, iwait));
}

/* The media type before any parameters, compared case-insensitively. */
static int is_form(const kv_req_t *r) {
  const char *p = r->ctype;
  size_t n;

  while (*p == ' ' || *p == '\t') p++;
  n = strcspn(p, "; \t");
  return n == sizeof(FORM_TYPE) - 1 && !strncasecmp(p, FORM_TYPE, n);
}

/* Decodes the key from the target's path, in place in the URL buffer. */
static int route_key(kv_req_t *r, char *path, size_t plen) {
  size_t klen;
  int rc = kv_percent_decode(path, plen, path, &klen);

  if (rc != 0) return rc;
  if (klen > KV_KEY_MAX) return KV_EKEYLEN;
  if (klen == 0 || !kv_utf8_valid(path, klen)) return KV_EKEY;
  memcpy(r->key, path, klen);
  r->key[klen] = '\0';
  r->klen = klen;
  return 0;
}

static void route_target(kv_req_t *r) {
  char *path;
  size_t plen;

  if (r->url_len == 0 || r->url[0] != '/') {
    r->err = KV_EBADREQ; /* absolute-form or asterisk-form */
    return;
  }
  path = r->url + 1;
  plen = strcspn(path, "?#");
  if (plen == 0) {
    r->route = KV_ROUTE_ROOT;
  } else if (path[0] == '_') {
    if (plen == 7 && memcmp(path, "_health", 7) == 0)
      r->route = KV_ROUTE_HEALTH;
    else
      r->err = KV_ENOENDPOINT;
  } else {
    r->route = KV_ROUTE_KEY;
    r->err = route_key(r, path, plen);
  }
  if (r->err) return;
  switch (r->method) {
  case HTTP_GET:
  case HTTP_HEAD:
    return;
  case HTTP_PUT:
  case HTTP_POST:
  case HTTP_DELETE:
    if (r->route == KV_ROUTE_KEY) return;
    r->allow = ALLOW_READ;
    break;
  default:
    r->allow = r->route == KV_ROUTE_KEY ? ALLOW_KEY : ALLOW_READ;
  }
  r->err = KV_EMETHOD;
}

int kv_route_head(kv_conn_t *c) {
  kv_req_t *r = &c->http.req;
  const llhttp_t *p = &c->http.parser;
  size_t max = c->http.limits->max_value, limit = max;
  int has_len = (p->flags & F_CONTENT_LENGTH) != 0;
  int chunked = (p->flags & F_CHUNKED) != 0;
  uint64_t clen = has_len ? p->content_length : 0;
  int rc;

  if (r->http_major != 1) {
    r->fatal = KV_EVERSION;
    return -1;
  }
  if (r->expect_len) {
    if (strcasecmp(r->expect, "100-continue") != 0) {
      r->fatal = KV_EEXPECT;
      return -1;
    }
    r->expect_continue = (clen > 0 || chunked) && r->http_minor >= 1;
  }
  route_target(r);
  r->body_mode = KV_BODY_DISCARD;
  if (!r->err && (r->method == HTTP_PUT || r->method == HTTP_POST)) {
    r->is_form = r->method == HTTP_POST && is_form(r);
    /* A form encodes each byte in up to three. */
    if (r->is_form) limit = max > (SIZE_MAX - 64) / 3 ? SIZE_MAX : max * 3 + 64;
    r->body_mode = r->is_form ? KV_BODY_BUF : KV_BODY_REC;
  }
  if (clen > limit) {
    r->fatal = KV_ETOOBIG;
    return -1;
  }
  r->body_limit = limit;
  if (r->body_mode == KV_BODY_REC) {
    r->rec_cap = has_len ? (size_t)clen : 0;
    rc = kv_rec_new(r->key, r->klen, r->rec_cap, &r->rec);
    if (rc != 0) {
      r->fatal = rc;
      return -1;
    }
  }
  return 0;
}

/* ---- answers ------------------------------------------------------------ */

static void answer_value(kv_conn_t *c, int status, kv_rec_t *rec) {
  kv_out_t *o = kv_conn_out(c);
  int head_only = c->http.req.method == HTTP_HEAD;

  if (kv_http_head(o, kv_conn_date(c), status, KV_CT_TEXT, rec->vlen, NULL,
                   kv_conn_last_answer(c)) == 0 &&
      !head_only)
    kv_out_append_rec(o, rec, kv_rec_value(rec), rec->vlen);
}

static void answer_error(kv_conn_t *c, int err) {
  kv_req_t *r = &c->http.req;
  kv_http_error(kv_conn_out(c), kv_conn_date(c), err, r->allow,
                kv_conn_last_answer(c), r->method == HTTP_HEAD);
}

static void answer_image(kv_conn_t *c, kv_image_t *img) {
  kv_out_t *o = kv_conn_out(c);

  if (kv_http_head(o, kv_conn_date(c), 200, KV_CT_JSON,
                   (int64_t)kv_image_len(img), NULL,
                   kv_conn_last_answer(c)) == 0 &&
      c->http.req.method != HTTP_HEAD)
    kv_out_append_image(o, img);
}

static void on_written(kv_write_t *w, int status, int existed) {
  kv_conn_t *c = conn_of_write(w);
  kv_req_t *r = &c->http.req;
  kv_out_t *o = kv_conn_out(c);
  const char *date = kv_conn_date(c);
  int close = kv_conn_last_answer(c);

  if (status != 0) {
    answer_error(c, status);
  } else if (r->method == HTTP_PUT) {
    if (existed) kv_http_head(o, date, 204, NULL, -1, NULL, close);
    else kv_http_head(o, date, 201, NULL, 0, NULL, close);
  } else if (r->method == HTTP_POST) {
    answer_value(c, existed ? 200 : 201, r->rec);
  } else if (existed) {
    kv_http_head(o, date, 204, NULL, -1, NULL, close);
  } else {
    answer_error(c, KV_ENOTFOUND);
  }
  kv_conn_resume(c);
}

static void on_image(kv_image_wait_t *w, int status, kv_image_t *img) {
  kv_conn_t *c = conn_of_wait(w);

  if (status != 0) {
    answer_error(c, status);
  } else {
    answer_image(c, img);
    kv_image_unref(img);
  }
  kv_conn_resume(c);
}

/* Builds the record a form POST stores: the decoded "value" field. */
static int form_record(kv_conn_t *c, kv_req_t *r) {
  size_t vlen;
  int rc = kv_rec_new(r->key, r->klen, r->buf_len, &r->rec);

  if (rc != 0) return rc;
  rc = kv_form_value(r->buf, r->buf_len, "value", kv_rec_value_mut(r->rec),
                     &vlen);
  if (rc != 0) return rc;
  if (vlen > c->http.limits->max_value) return KV_ETOOBIG;
  r->rec->vlen = (uint32_t)vlen;
  return 0;
}

static int handle_write(kv_conn_t *c, kv_req_t *r) {
  kv_write_t *w = &c->write;
  int rc = 0;

  if (r->method == HTTP_DELETE) {
    w->op = KV_OP_DEL;
    w->rec = NULL;
    w->key.ptr = r->key;
    w->key.len = r->klen;
  } else {
    if (r->is_form) rc = form_record(c, r);
    if (rc == 0 && !kv_utf8_valid(kv_rec_value(r->rec), r->rec->vlen))
      rc = KV_EUTF8;
    if (rc != 0) {
      answer_error(c, rc);
      return 0;
    }
    w->op = KV_OP_PUT;
    w->rec = kv_rec_ref(r->rec); /* the request keeps one for POST's echo */
  }
  w->done = on_written;
  kv_store_submit(c->srv->store, w);
  return 1;
}

int kv_route_message(kv_conn_t *c) {
  kv_req_t *r = &c->http.req;
  kv_out_t *o = kv_conn_out(c);
  kv_rec_t *rec;
  kv_image_t *img;

  if (r->err) {
    answer_error(c, r->err);
    return 0;
  }
  switch (r->route) {
  case KV_ROUTE_HEALTH:
    if (kv_http_head(o, kv_conn_date(c), 200, KV_CT_TEXT, 3, NULL,
                     kv_conn_last_answer(c)) == 0 &&
        r->method != HTTP_HEAD)
      kv_out_append(o, "ok\n", 3);
    return 0;
  case KV_ROUTE_ROOT:
    c->iwait.done = on_image;
    if (kv_store_image(c->srv->store, &c->iwait, &img) == 1) return 1;
    answer_image(c, img);
    kv_image_unref(img);
    return 0;
  case KV_ROUTE_KEY:
    if (r->method == HTTP_GET || r->method == HTTP_HEAD) {
      rec = kv_store_get(c->srv->store, r->key, r->klen);
      if (rec) answer_value(c, 200, rec);
      else answer_error(c, KV_ENOTFOUND);
      return 0;
    }
    return handle_write(c, r);
  }
  answer_error(c, KV_EBADREQ);
  return 0;
}
