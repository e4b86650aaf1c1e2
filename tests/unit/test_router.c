/* test_router.c - every route and status, through the router's output
 * interface, with no socket.
 *
 * Each test opens a real store in a temporary directory and plays the
 * connection's part: requests are parsed by kv_http_t with hooks that call
 * kv_router_head and kv_router_message; a waiting request's store callback
 * hands the outcome to kv_router_resume.  The loop runs until the answer
 * arrives; callbacks count their calls and the counts are asserted after
 * uv_run.  Each test ends by draining and closing the store and proving
 * that the loop closes with no handle left.  Answers are compared byte for
 * byte, with a fixed Date.
 */
#include <ftw.h>
#include <stdio.h>
#include <uv.h>

#include "kv/container.h"
#include "kv/error.h"
#include "kv/log.h"
#include "kv/router.h"
#include "test.h"

#define DATE "Sun, 06 Nov 1994 08:49:37 GMT"
#define HEAD_TEXT                                                             \
  "Date: " DATE "\r\nContent-Type: text/plain; charset=utf-8\r\n"

static char dir[64];
static uv_loop_t loop;
static kv_config_t cfg;
static kv_metrics_t metrics;
static kv_store_t *store;
static kv_http_settings_t settings;
static kv_router_t rt;
static size_t nconns = 1;
static int drained;

/* A connection without a socket. */
typedef struct {
  kv_http_t http;
  kv_out_t out;
  kv_router_wait_t wait;
  int close;     /* answers are the connection's last */
  int waiting;   /* a request waits for the store */
  int answers;   /* answers written, at once or after waiting */
  int resumed;   /* store callbacks */
  int fail_with; /* the outcome the store callback reports instead */
  kv_router_answer_t last;
  char text[8192]; /* the bytes of the last request's answers */
} tconn_t;

static tconn_t *conn_of(kv_http_t *h) {
  return KV_CONTAINER_OF(h, tconn_t, http);
}

static void answer_init(tconn_t *t, kv_router_answer_t *a) {
  *a = (kv_router_answer_t){.out = &t->out, .date = DATE, .close = t->close};
}

static int t_head(kv_http_t *h) { return kv_router_head(&rt, &h->req); }

static int t_message(kv_http_t *h) {
  tconn_t *t = conn_of(h);
  kv_router_answer_t a;
  int rc;

  answer_init(t, &a);
  rc = kv_router_message(&rt, &h->req, &a, &t->wait);
  CHECK(rc == KV_ROUTER_ANSWERED || rc == KV_ROUTER_WAITING);
  if (rc == KV_ROUTER_WAITING) {
    CHECK(!t->waiting);
    t->waiting = 1;
    return HPE_PAUSED;
  }
  t->answers++;
  t->last = a;
  return 0;
}

static void t_deferred(tconn_t *t) {
  kv_router_answer_t a;

  CHECK(t->waiting);
  answer_init(t, &a);
  if (t->fail_with != 0) t->wait.status = t->fail_with;
  CHECK_INT(kv_router_resume(&rt, &t->http.req, &a, &t->wait),
            KV_ROUTER_ANSWERED);
  t->waiting = 0;
  t->resumed++;
  t->answers++;
  t->last = a;
}

static void t_written(kv_write_t *w, int status, int existed) {
  tconn_t *t = KV_CONTAINER_OF(w, tconn_t, wait.write);

  t->wait.status = status;
  t->wait.existed = existed;
  t_deferred(t);
}

static void t_image(kv_image_wait_t *w, int status, kv_image_t *img) {
  tconn_t *t = KV_CONTAINER_OF(w, tconn_t, wait.image);

  t->wait.status = status;
  t->wait.img = img;
  t_deferred(t);
}

static void conn_init(tconn_t *t) {
  memset(t, 0, sizeof(*t));
  kv_http_init(&t->http, &settings);
  t->wait.write.done = t_written;
  t->wait.image.done = t_image;
}

static void conn_free(tconn_t *t) {
  CHECK(!t->waiting);
  kv_http_free(&t->http);
  kv_out_free(&t->out);
}

/* Sends req (one request), runs the loop until it is answered, and returns
 * the answer's bytes.  A request that breaks the parser is answered as the
 * connection does, closing: the tconn must then be opened again. */
static const char *ask(tconn_t *t, const char *req) {
  llhttp_errno_t e = kv_http_execute(&t->http, req, strlen(req));
  size_t n, len = 0;

  if (e != HPE_OK && e != HPE_PAUSED) {
    kv_router_answer_t a;
    answer_init(t, &a);
    a.close = 1;
    CHECK_INT(kv_router_error(&rt, &t->http.req, &a,
                              kv_http_parse_error(&t->http, e, req,
                                                  strlen(req)),
                              NULL),
              0);
    t->answers++;
    t->last = a;
  }
  while (t->waiting) uv_run(&loop, UV_RUN_ONCE);
  if (e == HPE_PAUSED) llhttp_resume(&t->http.parser);
  n = kv_out_iov(&t->out);
  for (size_t i = 0; i < n; i++) {
    CHECK(len + t->out.iov[i].len < sizeof(t->text));
    memcpy(t->text + len, t->out.iov[i].base, t->out.iov[i].len);
    len += t->out.iov[i].len;
  }
  t->text[len] = '\0';
  kv_out_reset(&t->out);
  return t->text;
}

/* Like ask, on a fresh connection, for a request that ends it. */
static const char *ask_once(tconn_t *t, const char *req) {
  conn_free(t);
  conn_init(t);
  return ask(t, req);
}

/* CHECK_STR evaluates its arguments twice: ask once. */
#define ASK_IS(answer, want)                                                  \
  do {                                                                        \
    const char *got_ = (answer);                                              \
    CHECK_STR(got_, (want));                                                  \
  } while (0)

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void on_drained(kv_store_t *s) {
  (void)s;
  drained++;
}

/* A store of its own in a temporary directory, and a router over it. */
static void open_store(void) {
  char err[512];

  kv_log_set_level(KV_LOG_ERROR);
  snprintf(dir, sizeof(dir), "/tmp/kvd-router.XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  kv_config_defaults(&cfg);
  snprintf(cfg.data, sizeof(cfg.data), "%s/data", dir);
  cfg.sync = KV_SYNC_NONE;
  cfg.max_value = 64;
  kv_metrics_init(&metrics);
  CHECK_INT(uv_loop_init(&loop), 0);
  if (kv_store_open(&loop, &cfg, &metrics, &store, err, sizeof(err)) != 0)
    KV__FAIL("kv_store_open: %s", err);
  kv_http_settings_init(&settings, NULL, t_head, t_message);
  settings.limits = (kv_http_limits_t){.max_uri = 8192,
                                       .max_head = 16384,
                                       .max_value = cfg.max_value,
                                       .max_headers = 100};
  rt = (kv_router_t){.store = store,
                     .cfg = &cfg,
                     .limits = &settings.limits,
                     .metrics = &metrics,
                     .conns = &nconns,
                     .ready = 1};
  drained = 0;
}

/* Drains and closes the store; no handle may be left on the loop. */
static void close_store(void) {
  kv_store_drain(store, on_drained);
  while (drained == 0) uv_run(&loop, UV_RUN_ONCE);
  CHECK_INT(drained, 1);
  kv_store_close(store);
  uv_run(&loop, UV_RUN_DEFAULT);
  kv_store_free(store);
  CHECK_INT(uv_loop_close(&loop), 0);
  nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- keys --------------------------------------------------------------- */

KV_TEST(get_missing, "GET of a missing key answers 404 at once with the store's revision and no ETag") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 404 Not Found\r\n" HEAD_TEXT
            "Content-Length: 14\r\nKvd-Revision: 0\r\n\r\nkey not found\n");
  CHECK_INT(t.answers, 1);
  CHECK_INT(t.resumed, 0);
  CHECK_INT(t.last.status, 404);
  CHECK_INT(t.last.body, 14);
  CHECK_INT(metrics.errors[-KV_ENOTFOUND - 1], 1);
  conn_free(&t);
  close_store();
}

KV_TEST(put_waits, "PUT waits for its commit and answers 201 for a new key and 204 for an existing one, each with its revision") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nv1"),
            "HTTP/1.1 201 Created\r\nDate: " DATE "\r\nContent-Length: 0\r\n"
            "ETag: \"1\"\r\nKvd-Revision: 1\r\n\r\n");
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nv2"),
            "HTTP/1.1 204 No Content\r\nDate: " DATE "\r\n"
            "ETag: \"2\"\r\nKvd-Revision: 2\r\n\r\n");
  CHECK_INT(t.resumed, 2);
  CHECK_INT(t.answers, 2);
  CHECK_INT(t.last.status, 204);
  CHECK_INT(store->rev, 2);
  conn_free(&t);
  close_store();
}

KV_TEST(get_head_value, "GET answers 200 with the value, its ETag and the store's revision, and HEAD the same head without the body") {
#define VALUE_HEAD                                                            \
  "HTTP/1.1 200 OK\r\n" HEAD_TEXT "Content-Length: 5\r\nETag: \"1\"\r\n"      \
  "Kvd-Revision: 2\r\n\r\n"
  tconn_t t;

  open_store();
  conn_init(&t);
  ask(&t, "PUT /a%2Fb HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
  ask(&t, "PUT /other HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
  ASK_IS(ask(&t, "GET /a/b HTTP/1.1\r\nHost: h\r\n\r\n"),
            VALUE_HEAD "hello");
  CHECK_INT(t.last.body, 5);
  ASK_IS(ask(&t, "HEAD /a%2fb HTTP/1.1\r\nHost: h\r\n\r\n"), VALUE_HEAD);
  CHECK_INT(t.last.body, 5);
  CHECK_INT(t.resumed, 2);
  CHECK_INT(t.answers, 4);
  conn_free(&t);
  close_store();
}

KV_TEST(post_echo, "POST answers 201 then 200 with the stored value as the body") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "POST /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                    "\r\nabc"),
            "HTTP/1.1 201 Created\r\n" HEAD_TEXT "Content-Length: 3\r\n"
            "ETag: \"1\"\r\nKvd-Revision: 1\r\n\r\nabc");
  ASK_IS(ask(&t, "POST /k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                    "\r\nde"),
            "HTTP/1.1 200 OK\r\n" HEAD_TEXT "Content-Length: 2\r\n"
            "ETag: \"2\"\r\nKvd-Revision: 2\r\n\r\nde");
  CHECK_INT(t.resumed, 2);
  conn_free(&t);
  close_store();
}

KV_TEST(post_form, "a form POST stores its decoded value field, and one without it is 400 and stores nothing") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "POST /f HTTP/1.1\r\nHost: h\r\n"
                    "Content-Type: Application/X-WWW-Form-Urlencoded; "
                    "charset=utf-8\r\nContent-Length: 18\r\n\r\n"
                    "x=1&value=a+b%21&v"),
            "HTTP/1.1 201 Created\r\n" HEAD_TEXT "Content-Length: 4\r\n"
            "ETag: \"1\"\r\nKvd-Revision: 1\r\n\r\na b!");
  ASK_IS(ask(&t, "POST /g HTTP/1.1\r\nHost: h\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    "Content-Length: 3\r\n\r\nx=1"),
            "HTTP/1.1 400 Bad Request\r\n" HEAD_TEXT "Content-Length: 31\r\n"
            "\r\nform body has no 'value' field\n");
  CHECK_INT(t.resumed, 1);
  CHECK(kv_store_get(store, "g", 1) == NULL);
  conn_free(&t);
  close_store();
}

KV_TEST(delete_both, "DELETE answers 204 with its revision when the key existed and 404 at the store's revision when not") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nv");
  ASK_IS(ask(&t, "DELETE /k HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 204 No Content\r\nDate: " DATE "\r\n"
            "Kvd-Revision: 2\r\n\r\n");
  ASK_IS(ask(&t, "DELETE /k HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 404 Not Found\r\n" HEAD_TEXT
            "Content-Length: 14\r\nKvd-Revision: 2\r\n\r\nkey not found\n");
  CHECK_INT(t.resumed, 3); /* a DELETE of a missing key waits too */
  CHECK(kv_store_get(store, "k", 1) == NULL);
  conn_free(&t);
  close_store();
}

KV_TEST(bad_values, "a value that is not UTF-8 is 400 at once and stores nothing, and a HEAD of a missing key has no body") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                    "\r\n\xc3\x28"),
            "HTTP/1.1 400 Bad Request\r\n" HEAD_TEXT "Content-Length: 25\r\n"
            "\r\nvalue is not valid UTF-8\n");
  CHECK_INT(t.resumed, 0);
  ASK_IS(ask(&t, "HEAD /k HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 404 Not Found\r\n" HEAD_TEXT
            "Content-Length: 14\r\nKvd-Revision: 0\r\n\r\n");
  CHECK_INT(store->rev, 0);
  conn_free(&t);
  close_store();
}

KV_TEST(bad_keys, "a key over 511 bytes is 414, a bad escape 400 and a key that is not UTF-8 400, all keeping the connection") {
  tconn_t t;
  char req[2048];

  open_store();
  conn_init(&t);
  snprintf(req, sizeof(req), "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 512, 0);
  ASK_IS(ask(&t, req),
            "HTTP/1.1 414 URI Too Long\r\n" HEAD_TEXT "Content-Length: 47\r\n"
            "\r\nkey too long: at most 511 bytes after decoding\n");
  CHECK_INT(t.last.status, 414);
  ASK_IS(ask(&t, "GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 400 Bad Request\r\n" HEAD_TEXT "Content-Length: 25\r\n"
            "\r\ninvalid percent-encoding\n");
  ask(&t, "GET /%ff HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 400);
  ask(&t, "GET /?q HTTP/1.1\r\nHost: h\r\n\r\n"); /* that is GET / */
  CHECK_INT(t.last.status, 200);
  CHECK_INT(t.answers, 4);
  conn_free(&t);
  close_store();
}

KV_TEST(write_failed, "a write whose commit failed is answered with the store's error: 507 for no room, 500 for an I/O error") {
  tconn_t t;

  open_store();
  conn_init(&t);
  t.fail_with = KV_ENOSPACE;
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nv"),
            "HTTP/1.1 507 Insufficient Storage\r\n" HEAD_TEXT
            "Content-Length: 21\r\n\r\ninsufficient storage\n");
  t.fail_with = KV_EIO;
  ask(&t, "DELETE /k HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 500);
  CHECK_INT(t.resumed, 2);
  CHECK_INT(metrics.errors[-KV_EIO - 1], 1);
  conn_free(&t);
  close_store();
}

/* ---- the whole map ------------------------------------------------------ */

KV_TEST(root_image, "GET / answers the image of every key sorted by key with its revision as ETag, and HEAD / its head") {
#define IMAGE_HEAD                                                            \
  "HTTP/1.1 200 OK\r\nDate: " DATE "\r\nContent-Type: application/json\r\n"  \
  "Content-Length: 18\r\nETag: \"2\"\r\nKvd-Revision: 2\r\n\r\n"
  tconn_t t;

  open_store();
  conn_init(&t);
  ask(&t, "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n2");
  ask(&t, "PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n1");
  ASK_IS(ask(&t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            IMAGE_HEAD "{\"a\":\"1\",\"b\":\"2\"}\n");
  CHECK_INT(t.last.body, 18);
  ASK_IS(ask(&t, "HEAD /?x HTTP/1.1\r\nHost: h\r\n\r\n"), IMAGE_HEAD);
  CHECK_INT(t.answers, 4);
  CHECK(t.resumed >= 2 && t.resumed <= 4); /* the image may be fresh */
  conn_free(&t);
  close_store();
}

/* ---- kvd's own endpoints ------------------------------------------------ */

KV_TEST(endpoints, "/_health is ok, /_ready is ready and 503 once stopping, /_metrics is Prometheus text, others 404") {
  tconn_t t;
  const char *m;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "GET /_health HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 200 OK\r\n" HEAD_TEXT "Content-Length: 3\r\n\r\nok\n");
  ASK_IS(ask(&t, "GET /_ready HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 200 OK\r\n" HEAD_TEXT "Content-Length: 6\r\n\r\nready\n");
  m = ask(&t, "GET /_metrics HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(strncmp(m, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(strstr(m, "Content-Type: text/plain; version=0.0.4; "
                  "charset=utf-8\r\n") != NULL);
  CHECK(strstr(m, "\nkvd_open_connections 1\n") != NULL);
  CHECK(strstr(m, "\nkvd_ready 1\n") != NULL);
  ASK_IS(ask(&t, "GET /_nope HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 404 Not Found\r\n" HEAD_TEXT "Content-Length: 17\r\n"
            "\r\nno such endpoint\n");
  rt.stopping = 1;
  ASK_IS(ask(&t, "GET /_ready HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 503 Service Unavailable\r\n" HEAD_TEXT
            "Content-Length: 24\r\n\r\nserver is shutting down\n");
  CHECK_INT(t.answers, 5);
  CHECK_INT(t.resumed, 0);
  conn_free(&t);
  close_store();
}

KV_TEST(methods, "a write to / or /_health is 405 with Allow GET, HEAD, and PATCH on a key 405 with every method") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"),
            "HTTP/1.1 405 Method Not Allowed\r\n" HEAD_TEXT
            "Content-Length: 19\r\nAllow: GET, HEAD\r\n\r\n"
            "method not allowed\n");
  ask(&t, "DELETE /_health HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 405);
  ASK_IS(ask(&t, "PATCH /k HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed\r\n" HEAD_TEXT
            "Content-Length: 19\r\n"
            "Allow: GET, HEAD, PUT, POST, DELETE\r\n\r\n"
            "method not allowed\n");
  CHECK_INT(store->rev, 0);
  conn_free(&t);
  close_store();
}

KV_TEST(token, "with a token a write without it is 401 with a challenge, with it is stored, and --auth all spares /_health") {
  tconn_t t;
  static const char challenge[] =
      "HTTP/1.1 401 Unauthorized\r\n" HEAD_TEXT "Content-Length: 32\r\n"
      "WWW-Authenticate: Bearer realm=\"kvd\"\r\n\r\n"
      "missing or invalid bearer token\n";

  open_store();
  conn_init(&t);
  snprintf(cfg.token, sizeof(cfg.token), "s3cret");
  cfg.token_len = 6;
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                    "\r\nv"),
            challenge);
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                    "Authorization: Bearer s3creT\r\n\r\nv"),
            challenge);
  ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
          "Authorization: bearer s3cret\r\n\r\nv");
  CHECK_INT(t.last.status, 201);
  ask(&t, "GET /k HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 200);
  cfg.auth = KV_AUTH_ALL;
  ASK_IS(ask(&t, "GET /k HTTP/1.1\r\nHost: h\r\n\r\n"), challenge);
  ask(&t, "GET /_health HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 200);
  CHECK_INT(t.resumed, 1);
  CHECK_INT(metrics.errors[-KV_EAUTH - 1], 3);
  conn_free(&t);
  close_store();
}

KV_TEST(backup, "HEAD /_backup waits for its copy and answers its type, length and revision, a write to it is 405, and a token always guards it") {
  tconn_t t;
  char want[512];
#define CHALLENGE_HEAD                                                        \
  "HTTP/1.1 401 Unauthorized\r\n" HEAD_TEXT "Content-Length: 32\r\n"       \
  "WWW-Authenticate: Bearer realm=\"kvd\"\r\n\r\n"

  open_store();
  conn_init(&t);
  ask(&t, "PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n1");
  ask(&t, "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n2");
  ask(&t, "HEAD /_backup HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 200);
  /* LMDB pages: two meta pages, and the main, meta and data trees. */
  CHECK(t.last.body >= 5 * 4096 && t.last.body % 4096 == 0);
  snprintf(want, sizeof want,
           "HTTP/1.1 200 OK\r\nDate: " DATE "\r\n"
           "Content-Type: application/octet-stream\r\n"
           "Content-Length: %zu\r\nKvd-Revision: 2\r\n\r\n",
           t.last.body);
  CHECK_STR(t.text, want);
  CHECK_INT(metrics.backups, 1);
  CHECK_INT(metrics.backup.count, 1);
  ASK_IS(ask(&t, "PUT /_backup HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                    "\r\nx"),
            "HTTP/1.1 405 Method Not Allowed\r\n" HEAD_TEXT
            "Content-Length: 19\r\nAllow: GET, HEAD\r\n\r\n"
            "method not allowed\n");
  snprintf(cfg.token, sizeof(cfg.token), "s3cret");
  cfg.token_len = 6;
  cfg.auth = KV_AUTH_WRITES;
  ASK_IS(ask(&t, "GET /_backup HTTP/1.1\r\nHost: h\r\n\r\n"),
         CHALLENGE_HEAD "missing or invalid bearer token\n");
  ASK_IS(ask(&t, "HEAD /_backup HTTP/1.1\r\nHost: h\r\n\r\n"),
         CHALLENGE_HEAD);
  ask(&t, "HEAD /_backup HTTP/1.1\r\nHost: h\r\n"
          "Authorization: Bearer s3cret\r\n\r\n");
  CHECK_INT(t.last.status, 200);
  CHECK_INT(t.resumed, 4);
  CHECK_INT(store->rev, 2);
  cfg.token_len = 0;
  conn_free(&t);
  close_store();
}

/* ---- heads that end the connection -------------------------------------- */

KV_TEST(fatal_heads, "a head the router refuses ends the connection: 413 by Content-Length, 400 without Host, 417, 501, 505") {
  tconn_t t;

  open_store();
  conn_init(&t);
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n"),
            "HTTP/1.1 413 Content Too Large\r\n" HEAD_TEXT
            "Content-Length: 16\r\nConnection: close\r\n\r\n"
            "value too large\n");
  CHECK_INT(t.last.status, 413);
  ask_once(&t, "GET /k HTTP/1.1\r\n\r\n");
  CHECK_INT(t.last.status, 400);
  ask_once(&t, "GET /k HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 400);
  ask_once(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n"
               "Content-Length: 1\r\n\r\nv");
  CHECK_INT(t.last.status, 417);
  ask_once(&t, "PUT /k HTTP/1.1\r\nHost: h\r\n"
               "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  CHECK_INT(t.last.status, 501);
  ask_once(&t, "GET /k HTTP/2.0\r\nHost: h\r\n\r\n");
  CHECK_INT(t.last.status, 505);
  ask_once(&t, "GET /k HTTP/1.0\r\n\r\n"); /* 1.0 needs no Host */
  CHECK_INT(t.last.status, 404);
  ASK_IS(ask_once(&t, "HEAD /k HTTP/1.1\r\nHost: h\r\n"
                         "Transfer-Encoding: x\r\n\r\n"),
            "HTTP/1.1 501 Not Implemented\r\n" HEAD_TEXT
            "Content-Length: 42\r\nConnection: close\r\n\r\n");
  CHECK_INT(store->rev, 0);
  conn_free(&t);
  close_store();
}

KV_TEST(expect_continue, "Expect 100-continue is asked for only when an HTTP/1.1 request has a body") {
  static const char head[] = "PUT /k HTTP/1.1\r\nHost: h\r\n"
                             "Expect: 100-Continue\r\n"
                             "Content-Length: 1\r\n\r\n";
  tconn_t t;

  open_store();
  conn_init(&t);
  CHECK_INT(kv_http_execute(&t.http, head, sizeof(head) - 1), HPE_OK);
  CHECK(t.http.req.expect_continue);
  ask(&t, "v");
  CHECK_INT(t.last.status, 201);
  ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
          "Content-Length: 0\r\n\r\n");
  CHECK(!t.http.req.expect_continue);
  CHECK_INT(t.last.status, 204);
  conn_free(&t);
  close_store();
}

KV_TEST(close_flag, "an answer that is the connection's last says Connection: close, as do error answers") {
  tconn_t t;

  open_store();
  conn_init(&t);
  t.close = 1;
  ASK_IS(ask(&t, "GET /_health HTTP/1.1\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 200 OK\r\n" HEAD_TEXT "Content-Length: 3\r\n"
            "Connection: close\r\n\r\nok\n");
  ASK_IS(ask(&t, "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nv"),
            "HTTP/1.1 201 Created\r\nDate: " DATE "\r\nContent-Length: 0\r\n"
            "ETag: \"1\"\r\nKvd-Revision: 1\r\nConnection: close\r\n\r\n");
  conn_free(&t);
  close_store();
}

KV_TEST(error_path, "kv_router_error counts the error, reports status and body length, and sends no body for HEAD") {
  tconn_t t;
  kv_router_answer_t a;

  open_store();
  conn_init(&t);
  t.http.req.method = HTTP_HEAD;
  answer_init(&t, &a);
  CHECK_INT(kv_router_error(&rt, &t.http.req, &a, KV_ETIMEOUT, NULL), 0);
  CHECK_INT(a.status, 408);
  CHECK_INT(a.body, 18);
  CHECK_INT(metrics.errors[-KV_ETIMEOUT - 1], 1);
  CHECK_INT(t.out.bytes, sizeof("HTTP/1.1 408 Request Timeout\r\n" HEAD_TEXT
                                "Content-Length: 18\r\n\r\n") - 1);
  /* Before its head is complete a request's method is not known: the
   * answer has its body. */
  kv_out_reset(&t.out);
  t.http.req.in_head = 1;
  CHECK_INT(kv_router_error(&rt, &t.http.req, &a, KV_ETIMEOUT, NULL), 0);
  CHECK_INT(t.out.bytes, sizeof("HTTP/1.1 408 Request Timeout\r\n" HEAD_TEXT
                                "Content-Length: 18\r\n\r\n"
                                "request timed out\n") - 1);
  kv_out_reset(&t.out);
  conn_free(&t);
  close_store();
}
