/* test_http.c - response output (heads, errors, iovecs) and request
 * reuse. */
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

KV_TEST(req_reset, "kv_req_reset clears a request, drops its record and keeps its small buffers") {
  kv_req_t r;
  char *url, *buf;

  memset(&r, 0, sizeof(r));
  url = r.url = malloc(64);
  buf = r.buf = malloc(64);
  CHECK(url && buf);
  r.url_cap = r.buf_cap = 64;
  memcpy(r.url, "/k", 3);
  r.url_len = 2;
  r.buf_len = 5;
  r.method = HTTP_PUT;
  r.http_major = r.http_minor = 1;
  r.in_head = r.is_form = r.expect_continue = r.has_method = 1;
  r.fatal = KV_EBADREQ;
  r.err = KV_ENOTFOUND;
  r.extra = "Allow: GET\r\n";
  r.head_bytes = 100;
  r.nheaders = 3;
  r.ctype_len = r.expect_len = r.te_len = r.auth_len = 1;
  r.nhost = r.nte = 1;
  r.route = 1;
  memcpy(r.key, "k", 2);
  r.klen = 1;
  r.body_mode = KV_BODY_REC;
  r.body_limit = r.body_len = r.rec_cap = 9;
  CHECK_INT(kv_rec_new("k", 1, 16, &r.rec), 0); /* ASan: must be freed */

  kv_req_reset(&r);
  CHECK(r.url == url && r.url_cap == 64 && r.url_len == 0);
  CHECK(r.buf == buf && r.buf_cap == 64 && r.buf_len == 0);
  CHECK(r.rec == NULL && r.rec_cap == 0);
  CHECK_INT(r.method, 0);
  CHECK(!r.in_head && !r.is_form && !r.expect_continue && !r.has_method);
  CHECK_INT(r.fatal, 0);
  CHECK_INT(r.err, 0);
  CHECK(r.extra == NULL);
  CHECK_INT(r.head_bytes + r.nheaders + r.nhost + r.nte, 0);
  CHECK_INT(r.ctype_len + r.expect_len + r.te_len + r.auth_len, 0);
  CHECK_INT(r.route, 0);
  CHECK_INT(r.klen, 0);
  CHECK_INT(r.body_mode, KV_BODY_DISCARD);
  CHECK_INT(r.body_limit + r.body_len, 0);
  kv_req_free(&r);
}

KV_TEST(req_reset_big_buf, "kv_req_reset frees a body buffer over 64 KiB") {
  kv_req_t r;

  memset(&r, 0, sizeof(r));
  r.buf_cap = 65537;
  r.buf = malloc(r.buf_cap);
  CHECK(r.buf);
  r.buf_len = 10;
  kv_req_reset(&r);
  CHECK(r.buf == NULL && r.buf_cap == 0 && r.buf_len == 0);
  kv_req_free(&r);
}
