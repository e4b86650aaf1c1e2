/* router.c - routes and handlers, as functions of the request. */
#include "kv/router.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv/codec.h"
#include "kv/error.h"
#include "kv/query.h"
#include "kv/ttl.h"

#define ALLOW_READ "Allow: GET, HEAD\r\n"
#define ALLOW_KEY "Allow: GET, HEAD, PUT, POST, DELETE\r\n"
#define CHALLENGE "WWW-Authenticate: Bearer realm=\"kvd\"\r\n"
#define FORM_TYPE "application/x-www-form-urlencoded"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_BACKUP "application/octet-stream"

/* ---- the head ----------------------------------------------------------- */

/* The media type before any parameters, compared case-insensitively. */
static int is_form(const kv_http_req_t *r) {
  const char *p = r->ctype;
  size_t n;

  while (*p == ' ' || *p == '\t') p++;
  n = strcspn(p, "; \t");
  return n == sizeof(FORM_TYPE) - 1 && strncasecmp(p, FORM_TYPE, n) == 0;
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

    if (tmp == NULL) return KV_ENOMEM;
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
    else if (plen == 8 && memcmp(path, "_changes", 8) == 0)
      r->route = KV_ROUTE_CHANGES;
    else if (plen == 7 && memcmp(path, "_backup", 7) == 0)
      r->route = KV_ROUTE_BACKUP;
    else
      r->err = KV_ENOENDPOINT;
  } else {
    r->route = KV_ROUTE_KEY;
    r->err = route_key(r, path, plen);
  }
  if (r->err != 0) return;
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

/* Whether this request needs the token: writes and backups (a backup is
 * the whole store) always, everything with --auth all, except liveness
 * and readiness, which probes must reach. */
static int needs_token(const kv_config_t *cfg, const kv_http_req_t *r) {
  if (cfg->token_len == 0) return 0;
  if (r->method == HTTP_PUT || r->method == HTTP_POST ||
      r->method == HTTP_DELETE || r->route == KV_ROUTE_BACKUP)
    return 1;
  if (cfg->auth != KV_AUTH_ALL) return 0;
  return r->route != KV_ROUTE_HEALTH && r->route != KV_ROUTE_READY;
}

/* Fails the head with err, which closes the connection after its
 * answer. */
static int fatal(kv_http_req_t *r, int err) {
  r->fatal = err;
  return -1;
}

int kv_router_head(const kv_router_t *rt, kv_http_req_t *r) {
  size_t max = rt->limits->max_value;
  size_t limit = max;
  int rc;

  if (r->http_major != 1) return fatal(r, KV_EVERSION);
  if (r->expect_len != 0) {
    if (strcasecmp(r->expect, "100-continue") != 0)
      return fatal(r, KV_EEXPECT);
    r->expect_continue = (r->clen > 0 || r->chunked) && r->http_minor >= 1;
  }
  /* RFC 9112 6.1: llhttp frames by a final "chunked" and lets other
   * codings before it through; kvd decodes none of them.  Several
   * Transfer-Encoding fields are refused rather than combined. */
  if (r->nte > 1 || (r->nte == 1 && (r->te_len != 7 ||
                                     strncasecmp(r->te, "chunked", 7) != 0)))
    return fatal(r, KV_ECODING);
  /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in 1.0.  A
   * request without it may be a desynchronised stream: close. */
  if (r->nhost > 1 || (r->nhost == 0 && r->http_minor >= 1))
    return fatal(r, KV_EHOST);
  route_target(r);
  if (needs_token(rt->cfg, r) && !token_ok(rt->cfg, r)) {
    r->err = KV_EAUTH;
    r->extra = CHALLENGE;
  }
  r->body_mode = KV_BODY_DISCARD;
  if (r->err == 0 && (r->method == HTTP_PUT || r->method == HTTP_POST)) {
    r->is_form = r->method == HTTP_POST && is_form(r);
    /* A form encodes each byte in up to three. */
    if (r->is_form)
      limit = max > (SIZE_MAX - 64) / 3 ? SIZE_MAX : max * 3 + 64;
    r->body_mode = r->is_form ? KV_BODY_BUF : KV_BODY_REC;
  }
  if (r->clen > limit) return fatal(r, KV_ETOOBIG);
  r->body_limit = limit;
  if (r->body_mode == KV_BODY_REC) {
    r->rec_cap = r->has_clen ? (size_t)r->clen : 0;
    rc = kv_rec_new(r->key, r->klen, r->rec_cap, &r->rec);
    if (rc != 0) return fatal(r, rc);
  }
  return 0;
}

/* ---- answers ------------------------------------------------------------ */

/* Each answer returns 0 (KV_ROUTER_ANSWERED), or KV_ENOMEM when its
 * bytes could not all be queued. */

/* Section 1 of the contract: the revision an answer reflects, and the
 * entity tag of what it is about, when it is about a value or the image.
 * NO_ETAG leaves the tag out (a DELETE, a missing key). */
#define NO_ETAG UINT64_MAX

typedef struct {
  char buf[112];
} revs_t;

static const char *revs(revs_t *h, uint64_t etag, uint64_t rev) {
  int n = 0;

  if (etag != NO_ETAG)
    n = snprintf(h->buf, sizeof(h->buf), "ETag: \"%llu\"\r\n",
                 (unsigned long long)etag);
  snprintf(h->buf + n, sizeof(h->buf) - (size_t)n, "Kvd-Revision: %llu\r\n",
           (unsigned long long)rev);
  return h->buf;
}

static int answer_head(kv_router_answer_t *a, int status, const char *ctype,
                       int64_t clen, const char *extra) {
  a->status = status;
  a->body = clen > 0 ? (size_t)clen : 0;
  return kv_http_head(a->out, a->date, status, ctype, clen, extra, a->close);
}

/* Section 4: a GET or HEAD of a key that expires says in how many whole
 * seconds, rounded up, so it is never 0 while the key can be read. */
static const char *with_ttl(revs_t *h, const kv_rec_t *rec) {
  size_t n = strlen(h->buf);
  uint64_t now = kv_ttl_now(), left;

  if (!rec->expires || rec->expires <= now) return h->buf;
  left = (rec->expires - now + 999) / 1000;
  snprintf(h->buf + n, sizeof(h->buf) - n, "Kvd-TTL: %llu\r\n",
           (unsigned long long)left);
  return h->buf;
}

static int answer_value(const kv_http_req_t *r, kv_router_answer_t *a,
                        int status, kv_rec_t *rec, uint64_t rev) {
  revs_t h;
  const char *extra = revs(&h, rec->rev, rev);
  int rc;

  if (r->method == HTTP_GET || r->method == HTTP_HEAD)
    extra = with_ttl(&h, rec);
  rc = answer_head(a, status, KV_CT_TEXT, rec->vlen, extra);

  if (rc == 0 && r->method != HTTP_HEAD)
    rc = kv_out_append_rec(a->out, rec, kv_rec_value(rec), rec->vlen);
  return rc;
}

int kv_router_error(const kv_router_t *rt, const kv_http_req_t *r,
                    kv_router_answer_t *a, int err, const char *extra) {
  /* Before the head is complete, method is not known. */
  int head_only = r->method == HTTP_HEAD && !r->in_head;

  kv_metrics_error(rt->metrics, err);
  a->status = kv_err_status(err);
  a->body = strlen(kv_strerror(err)) + 1;
  return kv_http_error(a->out, a->date, err, extra, a->close, head_only);
}

/* 404 for a key: the answer is about the data, so it names the revision
 * at which the key was missing. */
static int answer_missing(const kv_router_t *rt, const kv_http_req_t *r,
                          kv_router_answer_t *a, uint64_t rev) {
  revs_t h;

  return kv_router_error(rt, r, a, KV_ENOTFOUND, revs(&h, NO_ETAG, rev));
}

static int answer_text(const kv_http_req_t *r, kv_router_answer_t *a,
                       const char *ctype, const char *body, size_t len) {
  int rc = answer_head(a, 200, ctype, (int64_t)len, NULL);

  if (rc == 0 && r->method != HTTP_HEAD)
    rc = kv_out_append(a->out, body, len);
  return rc;
}

/* Parses If-Match and If-None-Match into c.  Returns 0 or KV_EBADCOND. */
static int parse_cond(const kv_http_req_t *r, kv_cond_t *c) {
  memset(c, 0, sizeof(*c));
  if (r->cond_long) return KV_EBADCOND;
  if (r->if_match_n > 0 &&
      kv_cond_parse(r->if_match, r->if_match_len, &c->match) != 0)
    return KV_EBADCOND;
  if (r->if_none_n > 0 &&
      kv_cond_parse(r->if_none, r->if_none_len, &c->none) != 0)
    return KV_EBADCOND;
  return 0;
}

/* A failed precondition (RFC 9110 13.2.2): 304 with the tag and no body
 * for a read's If-None-Match, else 412 with the current tag, if any. */
static int answer_cond(const kv_router_t *rt, const kv_http_req_t *r,
                       kv_router_answer_t *a, int verdict, int exists,
                       uint64_t etag, uint64_t rev) {
  revs_t h;

  if (verdict == 1)
    return answer_head(a, 304, NULL, -1, revs(&h, etag, rev));
  return kv_router_error(rt, r, a, KV_EPRECOND,
                         revs(&h, exists ? etag : NO_ETAG, rev));
}

/* Answers with img and drops the caller's reference on it, or with 304 or
 * 412 when the request's preconditions say so. */
static int answer_image(const kv_router_t *rt, const kv_http_req_t *r,
                        kv_router_answer_t *a, kv_image_t *img,
                        const kv_cond_t *c) {
  revs_t h;
  uint64_t rev = kv_image_rev(img);
  int v = kv_cond_eval(c, 1, rev, 1), rc;

  if (v != 0) {
    kv_image_unref(img);
    return answer_cond(rt, r, a, v, 1, rev, rev);
  }
  rc = answer_head(a, 200, KV_CT_JSON, (int64_t)kv_image_len(img),
                   revs(&h, rev, rev));

  if (rc == 0 && r->method != HTTP_HEAD)
    rc = kv_out_append_image(a->out, img);
  kv_image_unref(img);
  return rc;
}

static int answer_metrics(const kv_router_t *rt, const kv_http_req_t *r,
                          kv_router_answer_t *a) {
  const kv_store_t *s = rt->store;
  kv_metrics_gauges_t g = {
      .keys = kv_map_count(s->map),
      .bytes = kv_map_bytes(s->map),
      .conns = *rt->conns,
      .commits = s->commits,
      .rev = s->rev,
      .ckpt_rev = s->ckpt_rev,
      .log_pending = s->ckq_bytes + s->ck_fly_bytes,
      .ttl_keys = s->ttl.n + s->expiring,
      .expired = s->expired,
      .watches = kv_store_watches(s),
      .ready = rt->ready,
      .writes_failed = s->failed,
  };
  char *text;
  size_t len;
  int rc;

  if (kv_metrics_render(rt->metrics, &g, &text, &len) != 0)
    return kv_router_error(rt, r, a, KV_ENOMEM, NULL);
  rc = answer_text(r, a, CT_METRICS, text, len);
  free(text);
  return rc;
}

/* The answer to a write whose commit is over. */
static int answer_written(const kv_router_t *rt, const kv_http_req_t *r,
                          kv_router_answer_t *a, const kv_router_wait_t *w) {
  revs_t h;
  uint64_t rev = w->write.rev;

  if (w->status != 0) return kv_router_error(rt, r, a, w->status, NULL);
  if (w->write.cond_rc != 0) {
    /* Answered once its whole batch is applied: the tag and revision are
     * the store's now. */
    const kv_rec_t *now = kv_store_get(rt->store, r->key, r->klen);
    return answer_cond(rt, r, a, KV_EPRECOND, now != NULL,
                       now ? now->rev : 0, rt->store->rev);
  }
  if (r->method == HTTP_PUT)
    return answer_head(a, w->existed ? 204 : 201, NULL, w->existed ? -1 : 0,
                       revs(&h, rev, rev));
  if (r->method == HTTP_POST)
    return answer_value(r, a, w->existed ? 200 : 201, r->rec, rev);
  if (w->existed)
    return answer_head(a, 204, NULL, -1, revs(&h, NO_ETAG, rev));
  return answer_missing(rt, r, a, rt->store->rev);
}

/* Builds the record a form POST stores: the decoded "value" field. */
static int form_record(const kv_router_t *rt, kv_http_req_t *r) {
  size_t vlen;
  int rc = kv_rec_new(r->key, r->klen, r->form_len, &r->rec);

  if (rc != 0) return rc;
  rc = kv_form_value(r->form, r->form_len, "value", kv_rec_value_mut(r->rec),
                     &vlen);
  if (rc != 0) return rc;
  if (vlen > rt->limits->max_value) return KV_ETOOBIG;
  r->rec->vlen = (uint32_t)vlen;
  return 0;
}

/* Section 4: the ttl of a PUT or POST, from the query or else from a form
 * body's field, in whole seconds; 0 without one.  Returns 0 or an error. */
static int write_ttl(const kv_http_req_t *r, uint32_t *ttl) {
  kv_slice_t q = kv_query_of(r->url, r->url_len);
  size_t cap = q.len > r->form_len ? q.len : r->form_len, len;
  char *buf;
  uint64_t v;
  int rc;

  *ttl = 0;
  if (q.len == 0 && !r->is_form) return 0;
  if (!(buf = malloc(cap + 1))) return KV_ENOMEM;
  rc = kv_query_get(q, "ttl", buf, &len);
  if (rc == 0 && r->is_form) {
    rc = kv_form_value(r->form, r->form_len, "ttl", buf, &len);
    rc = rc == KV_EFORM ? 0 : rc == 0 ? 1 : rc;
  }
  if (rc == 1) {
    rc = kv_query_uint(buf, len, 1, KV_TTL_MAX, &v) == 0 ? 0 : KV_EBADTTL;
    if (rc == 0) *ttl = (uint32_t)v;
  }
  free(buf);
  return rc;
}

/* Submits a PUT, POST or DELETE, or answers why it cannot be. */
static int submit_write(const kv_router_t *rt, kv_http_req_t *r,
                        kv_router_answer_t *a, kv_router_wait_t *w) {
  kv_write_t *wr = &w->write;
  int rc = 0;

  assert(wr->done != NULL);
  wr->ttl = 0;
  if (r->method == HTTP_DELETE) {
    wr->op = KV_OP_DEL;
    wr->rec = NULL;
    wr->key.ptr = r->key;
    wr->key.len = r->klen;
  } else {
    if (r->is_form) rc = form_record(rt, r);
    if (rc == 0 && !kv_utf8_valid(kv_rec_value(r->rec), r->rec->vlen))
      rc = KV_EUTF8;
    if (rc == 0) rc = write_ttl(r, &wr->ttl);
    if (rc != 0) return kv_router_error(rt, r, a, rc, NULL);
    wr->op = KV_OP_PUT;
    wr->rec = kv_rec_ref(r->rec); /* the request keeps one for POST's echo */
  }
  wr->cond = w->cond.match.present || w->cond.none.present ? &w->cond : NULL;
  kv_store_submit(rt->store, wr);
  return KV_ROUTER_WAITING;
}

/* Section 3: GET / with prefix, keys, after or limit is a listing.
 * Decodes them into w->list.  Returns 1 for a listing, 0 for the image,
 * or an error. */
static int parse_list(const kv_http_req_t *r, kv_router_wait_t *w) {
  kv_slice_t q = kv_query_of(r->url, r->url_len);
  kv_list_t *l = &w->list;
  char *buf, *val;
  size_t len;
  uint64_t limit = 0;
  int found = 0, rc;

  if (q.len == 0) return 0;
  /* prefix, after and a scratch value each take at most q.len bytes;
   * the last key sent takes KV_KEY_MAX. */
  if (!(buf = malloc(3 * q.len + KV_KEY_MAX))) return KV_ENOMEM;
  l->prefix = buf;
  l->after = NULL;
  val = buf + 2 * q.len;
  l->last = val + q.len;
  l->keys = 0;
  rc = kv_query_get(q, "prefix", buf, &l->plen);
  if (rc == 0) l->plen = 0;
  found |= rc;
  if (rc >= 0 && (rc = kv_query_get(q, "after", buf + q.len, &l->alen)) == 1)
    l->after = buf + q.len;
  found |= rc;
  if (rc >= 0 && (rc = kv_query_get(q, "keys", val, &len)) == 1) {
    if (len == 0 || (len == 4 && memcmp(val, "true", 4) == 0))
      l->keys = 1;
    else if (!(len == 5 && memcmp(val, "false", 5) == 0))
      rc = KV_EBADKEYS;
  }
  found |= rc;
  if (rc >= 0 && (rc = kv_query_get(q, "limit", val, &len)) == 1 &&
      kv_query_uint(val, len, 1, 100000, &limit) != 0)
    rc = KV_EBADLIMIT;
  found |= rc;
  l->limit = (size_t)limit;
  if (rc < 0 || !found) {
    free(buf);
    return rc < 0 ? rc : 0;
  }
  w->list_buf = buf;
  return 1;
}

/* The Link to the next page (RFC 8288): the same prefix, keys and limit,
 * after the last key sent, percent-encoded.  Returns a malloc'd header
 * line, or NULL without memory. */
static char *next_link(const kv_list_t *l) {
  size_t cap = 3 * (l->plen + l->last_len) + 96, n;
  char *p = malloc(cap);

  if (!p) return NULL;
  n = (size_t)snprintf(p, cap, "Link: </?prefix=");
  n += kv_query_escape(l->prefix, l->plen, p + n);
  n += (size_t)snprintf(p + n, cap - n, "%s&limit=%zu&after=",
                        l->keys ? "&keys=true" : "", l->limit);
  n += kv_query_escape(l->last, l->last_len, p + n);
  snprintf(p + n, cap - n, ">; rel=\"next\"\r\n");
  return p;
}

/* The answer to a listing whose snapshot was read. */
static int answer_list(const kv_router_t *rt, const kv_http_req_t *r,
                       kv_router_answer_t *a, kv_router_wait_t *w) {
  kv_list_t *l = &w->list;
  revs_t h;
  char *extra = NULL;
  int rc;

  if (l->status != 0) {
    rc = kv_router_error(rt, r, a, l->status, NULL);
  } else {
    const char *lines = revs(&h, NO_ETAG, l->rev);
    if (l->more) {
      char *link = next_link(l);
      size_t n = strlen(lines);
      extra = link ? malloc(n + strlen(link) + 1) : NULL;
      if (extra) {
        memcpy(extra, lines, n);
        strcpy(extra + n, link);
      }
      free(link);
    }
    if (l->more && !extra)
      rc = kv_router_error(rt, r, a, KV_ENOMEM, NULL);
    else
      rc = answer_head(a, 200, KV_CT_JSON, (int64_t)kv_image_len(l->body),
                       extra ? extra : lines);
    if (rc == 0 && r->method != HTTP_HEAD && !(l->more && !extra))
      rc = kv_out_append_image(a->out, l->body);
  }
  free(extra);
  kv_image_unref(l->body);
  l->body = NULL;
  free(w->list_buf);
  w->list_buf = NULL;
  return rc;
}

/* ---- the change feed (contract section 5) ------------------------------- */

/* Output a stream holds back past: the rest waits in the store's queue,
 * which is bounded, or in the log. */
#define FEED_HIGH (256 * 1024)
/* A long poll answers once it holds this much, at the revision reached,
 * so one far behind takes several polls, never one huge answer. */
#define FEED_LP_MAX ((size_t)4 << 20)
#define FEED_TAKE 64

static const char *const op_names[] = {"", "put", "delete", "expire"};

static int has_token(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (strncasecmp(hay + i, needle, n) == 0) return 1;
  return 0;
}

/* Reads the feed's parameters.  Returns 0 or an error. */
static int feed_params(const kv_router_t *rt, const kv_http_req_t *r,
                       kv_router_wait_t *w, kv_watch_opts_t *o, char *buf) {
  kv_slice_t q = kv_query_of(r->url, r->url_len);
  char *val = buf + q.len;
  size_t len;
  uint64_t v;
  int rc, has_key;

  memset(o, 0, sizeof *o);
  o->since = rt->store->rev;
  w->feed = has_token(r->accept, r->accept_len, "text/event-stream")
                ? KV_FEED_SSE : KV_FEED_NDJSON;
  w->heartbeat_ms = 10000;
  w->deadline = 60000;
  if ((rc = kv_query_get(q, "feed", val, &len)) < 0) return rc;
  if (rc == 1) {
    if (len == 8 && memcmp(val, "longpoll", 8) == 0) w->feed = KV_FEED_LONGPOLL;
    else if (len == 11 && memcmp(val, "eventsource", 11) == 0)
      w->feed = KV_FEED_SSE;
    else if (!(len == 10 && memcmp(val, "continuous", 10) == 0))
      return KV_EBADFEED;
  }
  if ((rc = kv_query_get(q, "since", val, &len)) < 0) return rc;
  if (rc == 1) {
    if (kv_query_uint(val, len, 0, INT64_MAX, &v) != 0) return KV_EBADSINCE;
    o->since = v;
  }
  /* EventSource repeats the URL when it reconnects: the header wins. */
  if (r->has_last_id) {
    if (r->last_id_long ||
        kv_query_uint(r->last_id, r->last_id_len, 0, INT64_MAX, &v) != 0)
      return KV_EBADSINCE;
    o->since = v;
  }
  if ((rc = kv_query_get(q, "heartbeat", val, &len)) < 0) return rc;
  if (rc == 1) {
    if (kv_query_uint(val, len, 0, 3600, &v) != 0) return KV_EBADWAIT;
    w->heartbeat_ms = v * 1000;
  }
  if ((rc = kv_query_get(q, "timeout", val, &len)) < 0) return rc;
  if (rc == 1) {
    if (kv_query_uint(val, len, 1, 3600, &v) != 0) return KV_EBADWAIT;
    w->deadline = v * 1000;
  }
  if ((rc = kv_query_get(q, "key", buf, &o->klen)) < 0) return rc;
  has_key = rc == 1;
  if (has_key && (o->klen == 0 || o->klen > KV_KEY_MAX)) return KV_EKEY;
  o->exact = has_key;
  if ((rc = kv_query_get(q, "prefix", has_key ? val : buf,
                         has_key ? &len : &o->klen)) < 0)
    return rc;
  if (rc == 1 && has_key) return KV_EBADFILTER;
  o->key = buf;
  return 0;
}

/* Appends one change as the feed frames it. */
static int feed_put(kv_out_t *out, int feed, const kv_change_t *c) {
  char head[96];
  int n, rc;

  if (feed == KV_FEED_NDJSON) {
    rc = kv_out_append(out, c->json, c->len);
    return rc ? rc : kv_out_append(out, "\n", 1);
  }
  n = snprintf(head, sizeof head, "id: %llu\nevent: %s\ndata: ",
               (unsigned long long)c->rev, op_names[c->op]);
  rc = kv_out_append(out, head, (size_t)n);
  if (rc == 0) rc = kv_out_append(out, c->json, c->len);
  return rc ? rc : kv_out_append(out, "\n\n", 2);
}

static size_t feed_size(int feed, const kv_change_t *c) {
  if (feed == KV_FEED_NDJSON) return c->len + 1;
  /* "id: " N "\nevent: " name "\ndata: " json "\n\n" */
  return 4 + (size_t)snprintf(NULL, 0, "%llu", (unsigned long long)c->rev) +
         8 + strlen(op_names[c->op]) + 7 + c->len + 2;
}

/* Appends len bytes of a stream's body as one chunk: header, then the
 * caller's bytes, then feed_chunk_end. */
static int feed_chunk(kv_router_wait_t *w, kv_out_t *out, size_t len) {
  char head[24];
  int n;

  if (!w->chunked) return 0;
  n = snprintf(head, sizeof head, "%zx\r\n", len);
  return kv_out_append(out, head, (size_t)n);
}

static int feed_chunk_end(kv_router_wait_t *w, kv_out_t *out) {
  return w->chunked ? kv_out_append(out, "\r\n", 2) : 0;
}

static void feed_end(const kv_router_t *rt, kv_router_wait_t *w) {
  kv_store_unwatch(rt->store, w->watch);
  w->watch = NULL;
  w->streaming = 0;
  for (size_t i = 0; i < w->lp_n; i++) kv_change_unref(w->lp[i]);
  free(w->lp);
  w->lp = NULL;
  w->lp_n = w->lp_cap = w->lp_bytes = 0;
}

/* Ends a stream's body: the last chunk, or (HTTP/1.0) the close. */
static int feed_finish(const kv_router_t *rt, kv_router_answer_t *a,
                       kv_router_wait_t *w) {
  int rc = w->chunked ? kv_out_append(a->out, "0\r\n\r\n", 5) : 0;

  a->status = 200;
  feed_end(rt, w);
  if (!w->chunked) a->close = 1;
  return rc;
}

/* A long poll's answer: {"rev":N,"changes":[...]}, N the revision its
 * changes are complete up to. */
static int feed_lp_answer(const kv_router_t *rt, const kv_http_req_t *r,
                          kv_router_answer_t *a, kv_router_wait_t *w,
                          uint64_t n_rev, uint64_t since) {
  revs_t h;
  char head[48];
  size_t len;
  int n, rc;

  n = snprintf(head, sizeof head, "{\"rev\":%llu,\"changes\":[",
               (unsigned long long)n_rev);
  len = (size_t)n + 3 + w->lp_bytes + (w->lp_n ? w->lp_n - 1 : 0);
  rc = answer_head(a, 200, KV_CT_JSON, (int64_t)len,
                   revs(&h, NO_ETAG, since));
  if (rc == 0 && r->method != HTTP_HEAD) {
    rc = kv_out_append(a->out, head, (size_t)n);
    for (size_t i = 0; rc == 0 && i < w->lp_n; i++) {
      if (i) rc = kv_out_append(a->out, ",", 1);
      if (rc == 0) rc = kv_out_append(a->out, w->lp[i]->json, w->lp[i]->len);
    }
    if (rc == 0) rc = kv_out_append(a->out, "]}\n", 3);
  }
  feed_end(rt, w);
  return rc;
}

/* Moves what the watch has ready into the answer.  Returns
 * KV_ROUTER_WAITING while the feed goes on, else as an answer does. */
static int feed_pump(const kv_router_t *rt, const kv_http_req_t *r,
                     kv_router_answer_t *a, kv_router_wait_t *w,
                     uint64_t now, int timed_out) {
  kv_store_t *s = rt->store;
  kv_change_t *arr[FEED_TAKE];
  int n, rc = 0;

  if (w->feed == KV_FEED_LONGPOLL) {
    uint64_t pos;
    for (;;) {
      if (w->lp_bytes >= FEED_LP_MAX) break;
      n = kv_store_watch_take(s, w->watch, arr, FEED_TAKE, FEED_LP_MAX);
      if (n < 0) {
        revs_t h;
        feed_end(rt, w);
        return kv_router_error(rt, r, a, n,
                               n == KV_EGONE ? revs(&h, NO_ETAG, s->rev)
                                             : NULL);
      }
      if (n == 0) break;
      if (w->lp_n + (size_t)n > w->lp_cap) {
        size_t cap = w->lp_cap ? w->lp_cap * 2 : 64;
        kv_change_t **lp;
        while (cap < w->lp_n + (size_t)n) cap *= 2;
        if (!(lp = realloc(w->lp, cap * sizeof *lp))) {
          for (int i = 0; i < n; i++) kv_change_unref(arr[i]);
          feed_end(rt, w);
          return kv_router_error(rt, r, a, KV_ENOMEM, NULL) ? KV_ENOMEM : 0;
        }
        w->lp = lp;
        w->lp_cap = cap;
      }
      for (int i = 0; i < n; i++) {
        w->lp[w->lp_n++] = arr[i];
        w->lp_bytes += arr[i]->len;
      }
    }
    pos = kv_store_watch_position(s, w->watch);
    /* Every change up to the store's revision is in hand (or the answer
     * is full): answer if there is any, or the time is up. */
    if ((w->lp_n && (pos >= s->rev || w->lp_bytes >= FEED_LP_MAX)) ||
        timed_out)
      return feed_lp_answer(rt, r, a, w, pos, w->since);
    return KV_ROUTER_WAITING;
  }
  while (a->queued + a->out->bytes < FEED_HIGH) {
    size_t len = 0;
    n = kv_store_watch_take(s, w->watch, arr, FEED_TAKE, 64 * 1024);
    if (n < 0) {
      /* The history it needs is gone, or the log cannot be read: end the
       * stream; the client resumes from the last revision it saw. */
      rc = feed_finish(rt, a, w);
      return rc ? rc : KV_ROUTER_ANSWERED;
    }
    if (n == 0) break;
    for (int i = 0; i < n; i++) len += feed_size(w->feed, arr[i]);
    rc = feed_chunk(w, a->out, len);
    for (int i = 0; i < n; i++) {
      if (rc == 0) rc = feed_put(a->out, w->feed, arr[i]);
      kv_change_unref(arr[i]);
    }
    if (rc == 0) rc = feed_chunk_end(w, a->out);
    if (rc != 0) return rc;
    a->body += len;
    w->last_sent = now;
  }
  return KV_ROUTER_WAITING;
}

/* GET /_changes: starts a watch, and a stream's head. */
static int changes(const kv_router_t *rt, kv_http_req_t *r,
                   kv_router_answer_t *a, kv_router_wait_t *w) {
  kv_slice_t q = kv_query_of(r->url, r->url_len);
  kv_watch_opts_t o;
  revs_t h;
  char *buf = malloc(2 * q.len + 1), extra[256];
  int rc;

  if (!buf) return kv_router_error(rt, r, a, KV_ENOMEM, NULL);
  rc = feed_params(rt, r, w, &o, buf);
  /* HTTP/1.0 has no chunks: the body ends at the close. */
  w->chunked = r->http_minor >= 1;
  snprintf(extra, sizeof extra, "%s%s%s", revs(&h, NO_ETAG, o.since),
           w->chunked ? "Transfer-Encoding: chunked\r\n" : "",
           w->feed == KV_FEED_SSE ? "Cache-Control: no-cache\r\n" : "");
  if (rc == 0 && r->method == HTTP_HEAD) {
    /* The head a stream would have, and no stream. */
    free(buf);
    if (!w->chunked) a->close = 1;
    return answer_head(a, 200,
                       w->feed == KV_FEED_SSE ? "text/event-stream"
                                              : "application/x-ndjson",
                       -1, extra);
  }
  if (rc == 0) {
    o.ready = w->watch_ready;
    o.data = w->watch_data;
    rc = kv_store_watch(rt->store, &o, &w->watch);
  }
  free(buf);
  if (rc != 0)
    return kv_router_error(rt, r, a, rc,
                           rc == KV_EGONE
                               ? revs(&h, NO_ETAG, rt->store->rev) : NULL);
  w->streaming = 1;
  w->lp_n = w->lp_bytes = 0;
  w->last_sent = a->now;
  w->since = o.since;
  if (w->feed == KV_FEED_LONGPOLL) {
    w->deadline += a->now;
    return feed_pump(rt, r, a, w, a->now, 0);
  }
  if (!w->chunked) a->close = 1;
  rc = answer_head(a, 200,
                   w->feed == KV_FEED_SSE ? "text/event-stream"
                                          : "application/x-ndjson",
                   -1, extra);
  if (rc != 0) {
    feed_end(rt, w);
    return rc;
  }
  return feed_pump(rt, r, a, w, a->now, 0);
}

int kv_router_tick(const kv_router_t *rt, kv_http_req_t *r,
                   kv_router_answer_t *a, kv_router_wait_t *w,
                   uint64_t now) {
  char line[80];
  size_t len;
  uint64_t pos;
  int rc;

  if (!w->streaming) return KV_ROUTER_WAITING;
  if (w->feed == KV_FEED_LONGPOLL)
    return now >= w->deadline ? feed_pump(rt, r, a, w, now, 1)
                              : KV_ROUTER_WAITING;
  if (!w->heartbeat_ms || now - w->last_sent < w->heartbeat_ms ||
      a->queued + a->out->bytes >= FEED_HIGH)
    return KV_ROUTER_WAITING;
  /* Everything matching up to pos has been sent. */
  pos = kv_store_watch_position(rt->store, w->watch);
  len = (size_t)snprintf(line, sizeof line,
                         w->feed == KV_FEED_SSE
                             ? ": {\"op\":\"progress\",\"rev\":%llu}\n\n"
                             : "{\"op\":\"progress\",\"rev\":%llu}\n",
                         (unsigned long long)pos);
  rc = feed_chunk(w, a->out, len);
  if (rc == 0) rc = kv_out_append(a->out, line, len);
  if (rc == 0) rc = feed_chunk_end(w, a->out);
  if (rc != 0) return rc;
  a->body += len;
  w->last_sent = now;
  return KV_ROUTER_WAITING;
}

int kv_router_stop(const kv_router_t *rt, kv_http_req_t *r,
                   kv_router_answer_t *a, kv_router_wait_t *w,
                   int graceful) {
  if (!w->streaming) return 0;
  if (!graceful) {
    feed_end(rt, w);
    return 0;
  }
  /* A long poll answers with what it holds, complete up to where it got. */
  if (w->feed == KV_FEED_LONGPOLL)
    return feed_lp_answer(rt, r, a, w,
                          kv_store_watch_position(rt->store, w->watch),
                          w->since);
  return feed_finish(rt, a, w);
}

/* Section 6: the copy a GET or HEAD of /_backup waited for, as it is.
 * Drops the caller's reference on img. */
static int answer_backup(const kv_router_t *rt, const kv_http_req_t *r,
                         kv_router_answer_t *a, int status, kv_image_t *img) {
  revs_t h;
  int rc;

  if (status != 0) return kv_router_error(rt, r, a, status, NULL);
  rc = answer_head(a, 200, CT_BACKUP, (int64_t)kv_image_len(img),
                   revs(&h, NO_ETAG, kv_image_rev(img)));
  if (rc == 0 && r->method != HTTP_HEAD)
    rc = kv_out_append_image(a->out, img);
  kv_image_unref(img);
  return rc;
}

/* GET / and HEAD /: at once from a fresh image, or once one is built. */
static int get_image(const kv_router_t *rt, kv_http_req_t *r,
                     kv_router_answer_t *a, kv_router_wait_t *w) {
  kv_image_t *img;
  int rc;

  assert(w->image.done != NULL);
  rc = kv_store_image(rt->store, &w->image, &img);
  if (rc == 1) return KV_ROUTER_WAITING;
  if (rc < 0) return kv_router_error(rt, r, a, rc, NULL);
  return answer_image(rt, r, a, img, &w->cond);
}

int kv_router_message(const kv_router_t *rt, kv_http_req_t *r,
                      kv_router_answer_t *a, kv_router_wait_t *w) {
  kv_rec_t *rec;
  int v;

  if (r->err != 0) return kv_router_error(rt, r, a, r->err, r->extra);
  switch (r->route) {
  case KV_ROUTE_HEALTH:
    return answer_text(r, a, KV_CT_TEXT, "ok\n", 3);
  case KV_ROUTE_READY:
    /* kvd listens only once the map is loaded, so this is 200 whenever
     * it can be asked; it stops being ready while shutting down. */
    if (rt->ready && !rt->stopping)
      return answer_text(r, a, KV_CT_TEXT, "ready\n", 6);
    return kv_router_error(rt, r, a, KV_ESHUTDOWN, NULL);
  case KV_ROUTE_METRICS:
    return answer_metrics(rt, r, a);
  case KV_ROUTE_CHANGES:
    return changes(rt, r, a, w);
  case KV_ROUTE_BACKUP:
    assert(w->image.done != NULL);
    kv_store_backup(rt->store, &w->image);
    return KV_ROUTER_WAITING;
  case KV_ROUTE_ROOT:
    if (parse_cond(r, &w->cond) != 0)
      return kv_router_error(rt, r, a, KV_EBADCOND, NULL);
    v = parse_list(r, w);
    if (v < 0) return kv_router_error(rt, r, a, v, NULL);
    if (v == 0) return get_image(rt, r, a, w);
    r->route = KV_ROUTE_LIST;
    assert(w->list.done != NULL);
    kv_store_list(rt->store, &w->list);
    return KV_ROUTER_WAITING;
  case KV_ROUTE_KEY:
    if (parse_cond(r, &w->cond) != 0)
      return kv_router_error(rt, r, a, KV_EBADCOND, NULL);
    if (r->method != HTTP_GET && r->method != HTTP_HEAD)
      return submit_write(rt, r, a, w);
    rec = kv_store_get(rt->store, r->key, r->klen);
    v = kv_cond_eval(&w->cond, rec != NULL, rec ? rec->rev : 0, 1);
    if (v != 0)
      return answer_cond(rt, r, a, v, rec != NULL, rec ? rec->rev : 0,
                         rt->store->rev);
    if (rec != NULL)
      return answer_value(r, a, 200, rec, rt->store->rev);
    return answer_missing(rt, r, a, rt->store->rev);
  }
  return kv_router_error(rt, r, a, KV_EBADREQ, NULL);
}

int kv_router_resume(const kv_router_t *rt, kv_http_req_t *r,
                     kv_router_answer_t *a, kv_router_wait_t *w) {
  kv_image_t *img = w->img;

  w->img = NULL;
  if (r->route == KV_ROUTE_LIST) return answer_list(rt, r, a, w);
  if (r->route == KV_ROUTE_CHANGES)
    return w->streaming ? feed_pump(rt, r, a, w, a->now, 0)
                        : KV_ROUTER_ANSWERED;
  if (r->route == KV_ROUTE_BACKUP)
    return answer_backup(rt, r, a, w->status, img);
  if (r->route == KV_ROUTE_ROOT) {
    if (w->status != 0) return kv_router_error(rt, r, a, w->status, NULL);
    assert(img != NULL);
    return answer_image(rt, r, a, img, &w->cond);
  }
  assert(r->route == KV_ROUTE_KEY && img == NULL);
  return answer_written(rt, r, a, w);
}
