/* test_http.c - response framing (heads, errors), the output queue's
 * iovecs, and request assembly through llhttp: splits, pipelines, limits,
 * the request line and the reset between requests. */
#include <stdint.h>

#include "kv/error.h"
#include "kv/http.h"
#include "test.h"

#define DATE "Sun, 06 Nov 1994 08:49:37 GMT"
#define GIB ((size_t)1 << 30)

/* The arena of an output that holds only copied bytes. */
#define CHECK_ARENA(o, want)                                                  \
  do {                                                                        \
    CHECK_INT((o)->nref, 0);                                                  \
    CHECK_INT((o)->bytes, (o)->alen);                                         \
    CHECK_MEM((o)->arena, (o)->alen, (want), sizeof(want) - 1);               \
  } while (0)

KV_TEST(date_format, "kv_http_date formats an IMF-fixdate") {
  char buf[32];

  kv_http_date(buf, 784111777);
  CHECK_STR(buf, DATE);
}

KV_TEST(head_exact, "kv_http_head writes the status line, Date, Content-Type and Content-Length exactly") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_head(&o, DATE, 200, KV_CT_TEXT, 3, NULL, 0), 0);
  CHECK_ARENA(&o, "HTTP/1.1 200 OK\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 3\r\n"
                  "\r\n");
  kv_out_free(&o);
}

KV_TEST(head_close_extra, "kv_http_head puts extra header lines before Connection close") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_head(&o, DATE, 405, KV_CT_JSON, 0, "Allow: GET, HEAD\r\n",
                         1), 0);
  CHECK_ARENA(&o, "HTTP/1.1 405 Method Not Allowed\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 0\r\n"
                  "Allow: GET, HEAD\r\n"
                  "Connection: close\r\n"
                  "\r\n");
  kv_out_free(&o);
}

KV_TEST(head_no_length, "kv_http_head without a length or a type writes only the status line and Date") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_head(&o, DATE, 204, NULL, -1, NULL, 0), 0);
  CHECK_ARENA(&o, "HTTP/1.1 204 No Content\r\nDate: " DATE "\r\n\r\n");
  kv_out_free(&o);
}

KV_TEST(head_huge_length, "kv_http_head writes a Content-Length over 4 GiB in full") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_head(&o, DATE, 200, KV_CT_JSON, (int64_t)5 * GIB, NULL,
                         0), 0);
  CHECK_ARENA(&o, "HTTP/1.1 200 OK\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 5368709120\r\n"
                  "\r\n");
  kv_out_free(&o);
}

KV_TEST(error_exact, "kv_http_error writes the status, the message as a one-line body and Connection close") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_error(&o, DATE, KV_ENOTFOUND, NULL, 1, 0), 0);
  CHECK_ARENA(&o, "HTTP/1.1 404 Not Found\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 14\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "key not found\n");
  kv_out_free(&o);
}

KV_TEST(error_head_only, "kv_http_error for HEAD keeps the body's Content-Length and sends no body") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_error(&o, DATE, KV_EBADREQ, NULL, 0, 1), 0);
  CHECK_ARENA(&o, "HTTP/1.1 400 Bad Request\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 18\r\n"
                  "\r\n");
  kv_out_free(&o);
}

/* Queues a referenced segment without a reference: ptr is never read. */
static void append_fake(kv_out_t *o, const char *ptr, size_t len) {
  CHECK(o->nseg < o->segcap);
  o->segs[o->nseg++] = (kv_out_seg_t){ptr, 0, len};
  o->bytes += len;
}

KV_TEST(iov_huge_segment, "a 5 GiB body goes out as iovecs of at most KV_OUT_IOV_MAX that add up to exactly 5 GiB") {
  kv_out_t o = {0};
  const char *fake = (const char *)(uintptr_t)0x10000000; /* never read */
  const size_t big = 5 * GIB;
  uintptr_t next = (uintptr_t)fake;
  size_t n, sum = 0;

  if (SIZE_MAX <= UINT32_MAX) return; /* no such body on 32 bits */
  CHECK_INT(kv_out_append(&o, "head", 4), 0);
  append_fake(&o, fake, big);
  CHECK_INT(kv_out_append(&o, "tail", 4), 0);
  CHECK_INT(o.bytes, big + 8);
  n = kv_out_iov(&o);
  CHECK(n >= 2 + big / KV_OUT_IOV_MAX);
  CHECK(o.iov[0].base == o.arena);
  CHECK_MEM(o.iov[0].base, o.iov[0].len, "head", 4);
  for (size_t i = 1; i + 1 < n; i++) {
    CHECK((uintptr_t)o.iov[i].base == next);
    CHECK(o.iov[i].len > 0);
    CHECK(o.iov[i].len <= KV_OUT_IOV_MAX);
    next += o.iov[i].len;
    sum += o.iov[i].len;
  }
  CHECK_INT(sum, big);
  CHECK_INT(next - (uintptr_t)fake, big);
  CHECK_MEM(o.iov[n - 1].base, o.iov[n - 1].len, "tail", 4);
  sum += o.iov[0].len + o.iov[n - 1].len;
  CHECK_INT(sum, o.bytes);
  kv_out_free(&o);
}

KV_TEST(iov_exact_cap, "a body of exactly KV_OUT_IOV_MAX bytes takes one iovec and one byte more takes two") {
  kv_out_t o = {0};
  const char *fake = (const char *)(uintptr_t)0x10000000; /* never read */
  size_t n;

  CHECK_INT(kv_out_append(&o, "h", 1), 0);
  append_fake(&o, fake, KV_OUT_IOV_MAX);
  n = kv_out_iov(&o);
  CHECK_INT(n, 2);
  CHECK(o.iov[1].base == fake);
  CHECK_INT(o.iov[1].len, KV_OUT_IOV_MAX);
  o.segs[1].len++;
  o.bytes++;
  n = kv_out_iov(&o);
  CHECK_INT(n, 3);
  CHECK_INT(o.iov[1].len, KV_OUT_IOV_MAX);
  CHECK(o.iov[2].base == fake + KV_OUT_IOV_MAX);
  CHECK_INT(o.iov[2].len, 1);
  kv_out_free(&o);
}

KV_TEST(req_reset, "kv_http_reset clears a request, drops its record and keeps its small buffers") {
  kv_http_settings_t s;
  kv_http_t h;
  kv_http_req_t *r = &h.req;
  char *url, *form;

  kv_http_settings_init(&s, NULL, NULL, NULL);
  kv_http_init(&h, &s);
  url = h.url.ptr = malloc(64);
  form = h.form.ptr = malloc(64);
  CHECK(url && form);
  h.url.cap = h.form.cap = 64;
  memcpy(h.url.ptr, "/k", 3);
  h.url.len = 2;
  h.form.len = 5;
  r->url = h.url.ptr;
  r->url_len = 2;
  r->form = h.form.ptr;
  r->form_len = 5;
  r->method = HTTP_PUT;
  r->http_major = r->http_minor = 1;
  r->in_head = r->is_form = r->expect_continue = r->has_method = 1;
  r->fatal = KV_EBADREQ;
  r->err = KV_ENOTFOUND;
  r->extra = "Allow: GET\r\n";
  r->head_bytes = 100;
  r->nheaders = 3;
  r->ctype_len = r->expect_len = r->te_len = r->auth_len = 1;
  r->nhost = r->nte = 1;
  r->route = 1;
  memcpy(r->key, "k", 2);
  r->klen = 1;
  r->body_mode = KV_BODY_REC;
  r->body_limit = r->body_len = r->rec_cap = 9;
  CHECK_INT(kv_rec_new("k", 1, 16, &r->rec), 0); /* ASan: must be freed */

  kv_http_reset(&h);
  CHECK(h.url.ptr == url && h.url.cap == 64 && h.url.len == 0);
  CHECK(h.form.ptr == form && h.form.cap == 64 && h.form.len == 0);
  CHECK(r->url == NULL && r->url_len == 0);
  CHECK(r->form == NULL && r->form_len == 0);
  CHECK(r->rec == NULL && r->rec_cap == 0);
  CHECK_INT(r->method, 0);
  CHECK(!r->in_head && !r->is_form && !r->expect_continue && !r->has_method);
  CHECK_INT(r->fatal, 0);
  CHECK_INT(r->err, 0);
  CHECK(r->extra == NULL);
  CHECK_INT(r->head_bytes + r->nheaders + r->nhost + r->nte, 0);
  CHECK_INT(r->ctype_len + r->expect_len + r->te_len + r->auth_len, 0);
  CHECK_INT(r->route, 0);
  CHECK_INT(r->klen, 0);
  CHECK_INT(r->body_mode, KV_BODY_DISCARD);
  CHECK_INT(r->body_limit + r->body_len, 0);
  kv_http_free(&h);
}

KV_TEST(req_reset_big_buf, "kv_http_reset frees a form buffer over 64 KiB") {
  kv_http_settings_t s;
  kv_http_t h;

  kv_http_settings_init(&s, NULL, NULL, NULL);
  kv_http_init(&h, &s);
  h.form.cap = 65537;
  h.form.ptr = malloc(h.form.cap);
  CHECK(h.form.ptr);
  h.form.len = 10;
  kv_http_reset(&h);
  CHECK(h.form.ptr == NULL && h.form.cap == 0 && h.form.len == 0);
  kv_http_free(&h);
}

/* ---- request assembly: llhttp with hooks that count --------------------- */

static struct {
  int begins, heads, messages;
  kv_http_req_t head; /* the request as its last head completed */
  char url[2048];
  char form[64]; /* the last message's body */
  size_t form_len;
  int body_mode;     /* where the head hook sends the body */
  size_t body_limit; /* and how much it takes */
} seen;

static int t_begin(kv_http_t *h) {
  (void)h;
  seen.begins++;
  return 0;
}

static int t_head(kv_http_t *h) {
  seen.heads++;
  seen.head = h->req;
  snprintf(seen.url, sizeof(seen.url), "%.*s", (int)h->req.url_len,
           h->req.url);
  h->req.body_mode = seen.body_mode;
  h->req.body_limit = seen.body_limit;
  return 0;
}

static int t_message(kv_http_t *h) {
  seen.messages++;
  seen.form_len = h->req.form_len < sizeof(seen.form) ? h->req.form_len : 0;
  if (seen.form_len > 0) memcpy(seen.form, h->req.form, seen.form_len);
  return 0;
}

/* A parser with small limits whose hooks record what they see; bodies go
 * to the form buffer. */
static void open_http(kv_http_settings_t *s, kv_http_t *h) {
  memset(&seen, 0, sizeof(seen));
  seen.body_mode = KV_BODY_BUF;
  seen.body_limit = 64;
  kv_http_settings_init(s, t_begin, t_head, t_message);
  s->limits = (kv_http_limits_t){
      .max_uri = 1024, .max_head = 4096, .max_value = 64, .max_headers = 8};
  kv_http_init(h, s);
}

static llhttp_errno_t feed(kv_http_t *h, const char *text) {
  return kv_http_execute(h, text, strlen(text));
}

/* What the parse of text fails with: 0 if it does not fail. */
static int parse_fails(const char *text) {
  kv_http_settings_t s;
  kv_http_t h;
  llhttp_errno_t e;
  int err = 0;

  open_http(&s, &h);
  e = feed(&h, text);
  if (e != HPE_OK) err = kv_http_parse_error(&h, e, text, strlen(text));
  kv_http_free(&h);
  return err;
}

#define PUT_REQ                                                               \
  "PUT /a%20b?x=1 HTTP/1.1\r\n"                                               \
  "Host: h\r\n"                                                               \
  "Content-Type: text/plain\r\n"                                              \
  "Expect: 100-continue\r\n"                                                  \
  "Authorization: Bearer tok\r\n"                                             \
  "X-Other: ignored\r\n"                                                      \
  "Content-Length: 5\r\n"                                                     \
  "\r\n"                                                                      \
  "hello"

KV_TEST(assemble_split, "a request split in two at every byte gives the same method, target, headers and body") {
  static const char req[] = PUT_REQ;
  const size_t len = sizeof(req) - 1;

  for (size_t cut = 0; cut <= len; cut++) {
    kv_http_settings_t s;
    kv_http_t h;
    const kv_http_req_t *r = &seen.head;

    open_http(&s, &h);
    CHECK_INT(kv_http_execute(&h, req, cut), HPE_OK);
    CHECK_INT(kv_http_execute(&h, req + cut, len - cut), HPE_OK);
    CHECK_INT(seen.begins, 1);
    CHECK_INT(seen.heads, 1);
    CHECK_INT(seen.messages, 1);
    CHECK_INT(r->method, HTTP_PUT);
    CHECK(r->has_method && !r->in_head);
    CHECK_INT(r->http_major, 1);
    CHECK_INT(r->http_minor, 1);
    CHECK_STR(seen.url, "/a%20b?x=1");
    CHECK_MEM(r->ctype, r->ctype_len, "text/plain", 10);
    CHECK_MEM(r->expect, r->expect_len, "100-continue", 12);
    CHECK_MEM(r->auth, r->auth_len, "Bearer tok", 10);
    CHECK_INT(r->nhost, 1);
    CHECK_INT(r->nheaders, 6);
    CHECK(r->has_clen && !r->chunked);
    CHECK_INT(r->clen, 5);
    CHECK_MEM(seen.form, seen.form_len, "hello", 5);
    kv_http_free(&h);
  }
}

KV_TEST(assemble_chunked, "a chunked body is assembled whole and the request says chunked without a Content-Length") {
  kv_http_settings_t s;
  kv_http_t h;

  open_http(&s, &h);
  CHECK_INT(feed(&h, "POST /k HTTP/1.1\r\nHost: h\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            HPE_OK);
  CHECK_INT(seen.messages, 1);
  CHECK(seen.head.chunked && !seen.head.has_clen);
  CHECK_INT(seen.head.nte, 1);
  CHECK_MEM(seen.head.te, seen.head.te_len, "chunked", 7);
  CHECK_MEM(seen.form, seen.form_len, "abcde", 5);
  kv_http_free(&h);
}

KV_TEST(assemble_pipeline, "each pipelined request begins cleared: nothing of the first shows in the second") {
  kv_http_settings_t s;
  kv_http_t h;

  open_http(&s, &h);
  CHECK_INT(feed(&h, "PUT /first HTTP/1.1\r\nHost: h\r\nContent-Type: x\r\n"
                     "Authorization: Bearer t\r\nContent-Length: 2\r\n\r\nhi"
                     "GET /b HTTP/1.0\r\n\r\n"),
            HPE_OK);
  CHECK_INT(seen.begins, 2);
  CHECK_INT(seen.heads, 2);
  CHECK_INT(seen.messages, 2);
  CHECK_STR(seen.url, "/b");
  CHECK_INT(seen.head.method, HTTP_GET);
  CHECK_INT(seen.head.http_minor, 0);
  CHECK_INT(seen.head.ctype_len + seen.head.auth_len + seen.head.nhost, 0);
  CHECK_INT(seen.head.nheaders, 0);
  CHECK(!seen.head.has_clen);
  CHECK_INT(seen.form_len, 0);
  kv_http_free(&h);
}

KV_TEST(reset_whole, "a message that begins clears every byte of the request left by the one before") {
  kv_http_settings_t s;
  kv_http_t h;
  const unsigned char *p = (const unsigned char *)&h.req;

  open_http(&s, &h);
  memset(&h.req, 0xa5, sizeof(h.req));
  h.req.rec = NULL;
  kv_http_reset(&h);
  for (size_t i = 0; i < sizeof(h.req); i++)
    if (p[i] != 0) KV__FAIL("byte %zu of kv_http_req_t survived", i);
  kv_http_free(&h);
}

KV_TEST(limit_uri, "a target over max_uri fails with KV_EURI and one of exactly max_uri passes") {
  char req[1200];

  snprintf(req, sizeof(req), "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 1023, 0);
  CHECK_INT(parse_fails(req), 0);
  snprintf(req, sizeof(req), "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 1024, 0);
  CHECK_INT(parse_fails(req), KV_EURI);
}

KV_TEST(limit_head, "a header section over max_head fails with KV_EHEADERS") {
  char req[6000];

  snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX: %0*d\r\n\r\n",
           4000, 0);
  CHECK_INT(parse_fails(req), 0);
  snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX: %0*d\r\n\r\n",
           4100, 0);
  CHECK_INT(parse_fails(req), KV_EHEADERS);
}

KV_TEST(limit_headers, "more than max_headers fields fail with KV_EHEADERS and max_headers pass") {
  char req[512];
  size_t n = 0;

  n += (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n");
  for (int i = 1; i < 8; i++)
    n += (size_t)snprintf(req + n, sizeof(req) - n, "X%d: v\r\n", i);
  snprintf(req + n, sizeof(req) - n, "\r\n");
  CHECK_INT(parse_fails(req), 0);
  snprintf(req + n, sizeof(req) - n, "X8: v\r\n\r\n");
  CHECK_INT(parse_fails(req), KV_EHEADERS);
}

KV_TEST(limit_body, "a body over the limit the head set fails with KV_ETOOBIG, chunked or not") {
  CHECK_INT(parse_fails("PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 64\r\n"
                        "\r\n"
                        "0123456789012345678901234567890123456789"
                        "012345678901234567890123"),
            0);
  CHECK_INT(parse_fails("PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n"
                        "\r\n"
                        "0123456789012345678901234567890123456789"
                        "0123456789012345678901234"),
            KV_ETOOBIG);
  CHECK_INT(parse_fails("PUT /k HTTP/1.1\r\nHost: h\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"
                        "41\r\n"
                        "0123456789012345678901234567890123456789"
                        "0123456789012345678901234\r\n0\r\n\r\n"),
            KV_ETOOBIG);
}

KV_TEST(request_line, "the request line needs one space around the target and HTTP/x.y: else 400, 501 or 505") {
  CHECK_INT(parse_fails("GET /k HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_INT(parse_fails("GET  /k HTTP/1.1\r\nHost: h\r\n\r\n"), KV_EBADREQ);
  CHECK_INT(parse_fails("GET /k  HTTP/1.1\r\nHost: h\r\n\r\n"), KV_EBADREQ);
  CHECK_INT(parse_fails("GET /k\r\nHost: h\r\n\r\n"), KV_EBADREQ);
  CHECK_INT(parse_fails("GET /k ICE/1.1\r\nHost: h\r\n\r\n"), KV_EBADREQ);
  CHECK_INT(parse_fails("GET /k HTTP/1.1 junk\r\nHost: h\r\n\r\n"),
            KV_EBADREQ);
  CHECK_INT(parse_fails("GET /k HTTP/1.2\r\nHost: h\r\n\r\n"), KV_EVERSION);
  CHECK_INT(parse_fails("BREW /k HTTP/1.1\r\nHost: h\r\n\r\n"), KV_ENOTIMPL);
  CHECK_INT(parse_fails("brew /k HTTP/1.1\r\nHost: h\r\n\r\n"), KV_EBADREQ);
}

KV_TEST(folding, "an obsolete folded header line fails with KV_EFOLD") {
  CHECK_INT(parse_fails("GET /k HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"),
            KV_EFOLD);
}

KV_TEST(head_revision, "kv_http_head of a 201 carries Content-Length 0 and the extra ETag and Kvd-Revision lines") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_head(&o, DATE, 201, NULL, 0,
                         "ETag: \"7\"\r\nKvd-Revision: 7\r\n", 0), 0);
  CHECK_ARENA(&o, "HTTP/1.1 201 Created\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Length: 0\r\n"
                  "ETag: \"7\"\r\n"
                  "Kvd-Revision: 7\r\n"
                  "\r\n");
  kv_out_free(&o);
}

KV_TEST(error_extra, "kv_http_error puts extra lines such as Allow after Content-Length and before the body") {
  kv_out_t o = {0};

  CHECK_INT(kv_http_error(&o, DATE, KV_EMETHOD, "Allow: GET, HEAD\r\n", 0, 0),
            0);
  CHECK_ARENA(&o, "HTTP/1.1 405 Method Not Allowed\r\n"
                  "Date: " DATE "\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 19\r\n"
                  "Allow: GET, HEAD\r\n"
                  "\r\n"
                  "method not allowed\n");
  kv_out_free(&o);
}
