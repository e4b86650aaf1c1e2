/* router.c - routes and handlers. */
#include "kv/router.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv/codec.h"
#include "kv/error.h"
#include "kv/server.h"

#define ALLOW_READ "Allow: GET, HEAD\r\n"
#define ALLOW_KEY "Allow: GET, HEAD, PUT, POST, DELETE\r\n"
#define CHALLENGE "WWW-Authenticate: Bearer realm=\"kvd\"\r\n"
#define FORM_TYPE "application/x-www-form-urlencoded"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

static kv_conn_t *conn_of_write(kv_write_t *w) {
  return (kv_conn_t *)(void *)((char *)w - offsetof(kv_conn_t, write));
}

static kv_conn_t *conn_of_wait(kv_image_wait_t *w) {
  return (kv_conn_t *)(void *)((char *)w - offsetof(kv_conn_t, iwait));
}

/* The media type before any parameters, compared case-insensitively. */
static int is_form(const kv_http_req_t *r) {
  const char *p = r->ctype;
  size_t n;

  while (*p == ' ' || *p == '\t') p++;
  n = strcspn(p, "; \t");
  return n == sizeof(FORM_TYPE) - 1 && !strncasecmp(p, FORM_TYPE, n);
}

/* Decodes the key from the target's path.  The raw target is kept for the
 * access log, so decoding goes through a buffer big enough for any path
 * that can decode to a legal key: each decoded byte takes at most three. */
static int route_key(kv_http_req_t *r, const char *path, size_t plen) {
  char buf[3 * KV_KEY_MAX];
  size_t klen;
  int rc;

  if (plen > sizeof(buf)) {
    /* Too long either way; a bad escape still takes precedence. */
    char *tmp = malloc(plen);
    if (!tmp) return KV_ENOMEM;
    rc = kv_percent_decode(path, plen, tmp, &klen);
    free(tmp);
    return rc == KV_EENCODING ? rc : KV_EKEYLEN;
  }
  rc = kv_percent_decode(path, plen, buf, &klen);
  if (rc != 0) return rc;
  if (klen > KV_KEY_MAX) return KV_EKEYLEN;
  if (klen == 0 || !kv_utf8_valid(buf, klen)) return KV_EKEY;
  memcpy(r->key, buf, klen);
  r->key[klen] = '\0';
  r->klen = klen;
  return 0;
}

static void route_target(kv_http_req_t *r) {
  const char *path;
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
    else if (plen == 6 && memcmp(path, "_ready", 6) == 0)
      r->route = KV_ROUTE_READY;
    else if (plen == 8 && memcmp(path, "_metrics", 8) == 0)
      r->route = KV_ROUTE_METRICS;
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
    r->extra = ALLOW_READ;
    break;
  default:
    r->extra = r->route == KV_ROUTE_KEY ? ALLOW_KEY : ALLOW_READ;
  }
  r->err = KV_EMETHOD;
}

/* Compares the Authorization header with "Bearer <token>" in time that
 * depends only on the token's length. */
static int token_ok(const kv_config_t *cfg, const kv_http_req_t *r) {
  static const char scheme[] = "Bearer ";
  const size_t sl = sizeof(scheme) - 1;
  const char *given = r->auth + sl;
  size_t glen;
  unsigned char d = 0;

  if (r->auth_len < sl || r->auth_len >= sizeof(r->auth) ||
      strncasecmp(r->auth, scheme, sl) != 0)
    return 0;
  glen = r->auth_len - sl;
  for (size_t i = 0; i < cfg->token_len; i++)
    d |= (unsigned char)((i < glen ? given[i] : 0) ^ cfg->token[i]);
  return d == 0 && glen == cfg->token_len;
}

/* Whether this request needs the token: writes always, everything with
 * --auth all, except liveness and readiness, which probes must reach. */
static int needs_token(const kv_config_t *cfg, const kv_http_req_t *r) {
  if (!cfg->token_len) return 0;
  if (r->method == HTTP_PUT || r->method == HTTP_POST ||
      r->method == HTTP_DELETE)
    return 1;
  if (cfg->auth != KV_AUTH_ALL) return 0;
  return r->route != KV_ROUTE_HEALTH && r->route != KV_ROUTE_READY;
}

int kv_route_head(kv_conn_t *c) {
  kv_http_req_t *r = &c->http.req;
  size_t max = c->http.settings->limits.max_value, limit = max;
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
    r->expect_continue = (r->clen > 0 || r->chunked) && r->http_minor >= 1;
  }
  /* RFC 9112 6.1: llhttp frames by a final "chunked" and lets other
   * codings before it through; kvd decodes none of them.  Several
   * Transfer-Encoding fields are refused rather than combined. */
  if (r->nte > 1 || (r->nte == 1 && (r->te_len != 7 ||
                                     strncasecmp(r->te, "chunked", 7)))) {
    r->fatal = KV_ECODING;
    return -1;
  }
  /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in 1.0.  A
   * request without it may be a desynchronised stream: close. */
  if (r->nhost > 1 || (r->nhost == 0 && r->http_minor >= 1)) {
    r->fatal = KV_EHOST;
    return -1;
  }
  route_target(r);
  if (needs_token(&c->srv->cfg, r) && !token_ok(&c->srv->cfg, r)) {
    r->err = KV_EAUTH;
    r->extra = CHALLENGE;
  }
  r->body_mode = KV_BODY_DISCARD;
  if (!r->err && (r->method == HTTP_PUT || r->method == HTTP_POST)) {
    r->is_form = r->method == HTTP_POST && is_form(r);
    /* A form encodes each byte in up to three. */
    if (r->is_form) limit = max > (SIZE_MAX - 64) / 3 ? SIZE_MAX : max * 3 + 64;
    r->body_mode = r->is_form ? KV_BODY_BUF : KV_BODY_REC;
  }
  if (r->clen > limit) {
    r->fatal = KV_ETOOBIG;
    return -1;
  }
  r->body_limit = limit;
  if (r->body_mode == KV_BODY_REC) {
    r->rec_cap = r->has_clen ? (size_t)r->clen : 0;
    rc = kv_rec_new(r->key, r->klen, r->rec_cap, &r->rec);
    if (rc != 0) {
      r->fatal = rc;
      return -1;
    }
  }
  return 0;
}

/* ---- answers ------------------------------------------------------------ */

/* Section 1 of the contract: the revision an answer reflects, and the
 * entity tag of what it is about, when it is about a value or the image.
 * KV_NO_ETAG leaves the tag out (a DELETE, a missing key). */
#define KV_NO_ETAG UINT64_MAX

typedef struct {
  char buf[80];
} kv_revs_t;

static const char *revs(kv_revs_t *h, uint64_t etag, uint64_t rev) {
  int n = 0;

  if (etag != KV_NO_ETAG)
    n = snprintf(h->buf, sizeof h->buf, "ETag: \"%llu\"\r\n",
                 (unsigned long long)etag);
  snprintf(h->buf + n, sizeof h->buf - (size_t)n, "Kvd-Revision: %llu\r\n",
           (unsigned long long)rev);
  return h->buf;
}

static void answer_head(kv_conn_t *c, int status, const char *ctype,
                        int64_t clen, const char *extra) {
  kv_http_head(kv_conn_out(c), kv_conn_date(c), status, ctype, clen, extra,
               kv_conn_last_answer(c));
  kv_conn_answered(c, status, clen > 0 ? (size_t)clen : 0);
}

static void answer_value(kv_conn_t *c, int status, kv_rec_t *rec,
                         uint64_t rev) {
  kv_revs_t h;

  answer_head(c, status, KV_CT_TEXT, rec->vlen, revs(&h, rec->rev, rev));
  if (c->http.req.method != HTTP_HEAD)
    kv_out_append_rec(kv_conn_out(c), rec, kv_rec_value(rec), rec->vlen);
}

static void answer_error_with(kv_conn_t *c, int err, const char *extra) {
  kv_http_req_t *r = &c->http.req;

  kv_http_error(kv_conn_out(c), kv_conn_date(c), err, extra,
                kv_conn_last_answer(c), r->method == HTTP_HEAD);
  kv_metrics_error(&c->srv->metrics, err);
  kv_conn_answered(c, kv_err_status(err), strlen(kv_strerror(err)) + 1);
}

static void answer_error(kv_conn_t *c, int err) {
  answer_error_with(c, err, c->http.req.extra);
}

/* 404 for a key: the answer is about the data, so it names the revision
 * at which the key was missing. */
static void answer_missing(kv_conn_t *c, uint64_t rev) {
  kv_revs_t h;
  answer_error_with(c, KV_ENOTFOUND, revs(&h, KV_NO_ETAG, rev));
}

static void answer_text(kv_conn_t *c, const char *ctype, const char *body,
                        size_t len) {
  answer_head(c, 200, ctype, (int64_t)len, NULL);
  if (c->http.req.method != HTTP_HEAD)
    kv_out_append(kv_conn_out(c), body, len);
}

static void answer_image(kv_conn_t *c, kv_image_t *img) {
  kv_revs_t h;
  uint64_t rev = kv_image_rev(img);

  answer_head(c, 200, KV_CT_JSON, (int64_t)kv_image_len(img),
              revs(&h, rev, rev));
  if (c->http.req.method != HTTP_HEAD)
    kv_out_append_image(kv_conn_out(c), img);
}

static void answer_metrics(kv_conn_t *c) {
  kv_server_t *srv = c->srv;
  kv_store_t *s = srv->store;
  kv_metrics_gauges_t g = {
      .keys = kv_map_count(s->map),
      .bytes = kv_map_bytes(s->map),
      .conns = srv->nconns,
      .commits = s->commits,
      .rev = s->rev,
      .ready = srv->ready,
      .writes_failed = s->failed,
  };
  char *text;
  size_t len;

  if (kv_metrics_render(&srv->metrics, &g, &text, &len) != 0) {
    answer_error(c, KV_ENOMEM);
    return;
  }
  answer_text(c, CT_METRICS, text, len);
  free(text);
}

static void on_written(kv_write_t *w, int status, int existed) {
  kv_conn_t *c = conn_of_write(w);
  kv_http_req_t *r = &c->http.req;
  kv_revs_t h;

  if (status != 0)
    answer_error(c, status);
  else if (r->method == HTTP_PUT)
    answer_head(c, existed ? 204 : 201, NULL, existed ? -1 : 0,
                revs(&h, w->rev, w->rev));
  else if (r->method == HTTP_POST)
    answer_value(c, existed ? 200 : 201, r->rec, w->rev);
  else if (existed)
    answer_head(c, 204, NULL, -1, revs(&h, KV_NO_ETAG, w->rev));
  else
    answer_missing(c, c->srv->store->rev);
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
static int form_record(kv_conn_t *c, kv_http_req_t *r) {
  size_t vlen;
  int rc = kv_rec_new(r->key, r->klen, r->form_len, &r->rec);

  if (rc != 0) return rc;
  rc = kv_form_value(r->form, r->form_len, "value", kv_rec_value_mut(r->rec),
                     &vlen);
  if (rc != 0) return rc;
  if (vlen > c->http.settings->limits.max_value) return KV_ETOOBIG;
  r->rec->vlen = (uint32_t)vlen;
  return 0;
}

static int handle_write(kv_conn_t *c, kv_http_req_t *r) {
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
  kv_http_req_t *r = &c->http.req;
  kv_rec_t *rec;
  kv_image_t *img;
  int rc;

  if (r->err) {
    answer_error(c, r->err);
    return 0;
  }
  switch (r->route) {
  case KV_ROUTE_HEALTH:
    answer_text(c, KV_CT_TEXT, "ok\n", 3);
    return 0;
  case KV_ROUTE_READY:
    /* kvd listens only once the map is loaded, so this is 200 whenever
     * it can be asked; it stops being ready while shutting down. */
    if (c->srv->ready && !c->srv->shutting_down)
      answer_text(c, KV_CT_TEXT, "ready\n", 6);
    else
      answer_error(c, KV_ESHUTDOWN);
    return 0;
  case KV_ROUTE_METRICS:
    answer_metrics(c);
    return 0;
  case KV_ROUTE_ROOT:
    c->iwait.done = on_image;
    rc = kv_store_image(c->srv->store, &c->iwait, &img);
    if (rc == 1) return 1;
    if (rc < 0) {
      answer_error(c, rc);
      return 0;
    }
    answer_image(c, img);
    kv_image_unref(img);
    return 0;
  case KV_ROUTE_KEY:
    if (r->method == HTTP_GET || r->method == HTTP_HEAD) {
      rec = kv_store_get(c->srv->store, r->key, r->klen);
      if (rec) answer_value(c, 200, rec, c->srv->store->rev);
      else answer_missing(c, c->srv->store->rev);
      return 0;
    }
    return handle_write(c, r);
  }
  answer_error(c, KV_EBADREQ);
  return 0;
}
