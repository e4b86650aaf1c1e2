/* conn.c - one client connection: reading, pausing, writing, timeouts and
 * teardown. */
#include "kv/conn.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/container.h"
#include "kv/error.h"
#include "kv/log.h"

/* Pipelined answers queued beyond this while a write is in flight pause
 * parsing until the client reads them. */
#define KV_OUT_HIGH (256 * 1024)
/* What a change feed's client may send while its feed runs (the next
 * pipelined request, kept for after a long poll); past it reading stops. */
#define KV_STREAM_PENDING_MAX (64 * 1024)
/* How long a closing connection may keep sending before it is cut. */
#define KV_LINGER_MS 2000
/* The most one write may copy.  libuv issues one writev per writable
 * event with everything queued, and a loopback socket's buffer grows to
 * megabytes: sending a large image in one go would stall every other
 * client for milliseconds.  In slices, large bodies interleave. */
#define KV_WRITE_SLICE (1024 * 1024)
#define KV_SLICE_BUFS 32

/* IDLE -> HEAD -> BODY -> IDLE, or BODY -> WAIT -> IDLE.  The client's FIN
 * ends a partial request (HEAD or BODY -> IDLE), and anything but WAIT may
 * turn to LINGER, which only the close ends. */
enum {
  KV_CONN_IDLE = 0, /* between requests */
  KV_CONN_HEAD,     /* reading a request's head */
  KV_CONN_BODY,     /* reading a request's body */
  KV_CONN_WAIT,     /* a request waits for the store */
  KV_CONN_LINGER    /* answered and closing: draining what the client sends */
};

struct kv_conn {
  kv_http_t http;
  uv_tcp_t tcp;
  kv_conn_env_t *env;
  kv_conn_t *prev, *next;
  int state;
  uint64_t deadline; /* uv_now() ms when the current state times out */
  uint64_t t0;       /* uv_hrtime() when the current request began */
  char peer[48];     /* the client's address, for the access log */

  char *pending; /* unparsed bytes held while paused */
  size_t pending_len, pending_cap;

  kv_out_t out[2]; /* one being written, one filling */
  int cur;         /* index of the filling one */
  uv_write_t wreq;
  uv_buf_t slice[KV_SLICE_BUFS]; /* the slice being written */
  size_t slice_len;
  uv_shutdown_t sreq;
  uint64_t write_since; /* when the write in flight last made progress */
  size_t write_queued;  /* its unsent bytes at that time */

  kv_router_wait_t wait; /* what the waiting request waits on */

  unsigned writing : 1;
  unsigned paused : 1;       /* the parser is paused */
  unsigned reading : 1;
  unsigned eof : 1;          /* the client sent FIN */
  unsigned close_after : 1;  /* close once the queued output is written */
  unsigned close_wanted : 1; /* close as soon as the store lets go */
  unsigned closing : 1;      /* uv_close was called */
  unsigned keep : 1;         /* the request asked for keep-alive */
};

static void conn_flush(kv_conn_t *c);
static void conn_resume(kv_conn_t *c);
static void conn_deferred(kv_conn_t *c);
static void stream_end(kv_conn_t *c);
static void answer_init(kv_conn_t *c, kv_router_answer_t *a);
static void conn_feed(kv_conn_t *c, const char *data, size_t len,
                      int from_pending);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static uint64_t now_ms(const kv_conn_t *c) { return uv_now(c->env->loop); }

static kv_out_t *conn_out(kv_conn_t *c) { return &c->out[c->cur]; }

/* Whether the answer being queued is the connection's last: the client
 * asked to close, a fatal error occurred, or the server is shutting down. */
static int last_answer(const kv_conn_t *c) {
  return !c->keep || c->close_after || c->env->stopping;
}

/* ---- state -------------------------------------------------------------- */

/* The edges of the state machine drawn above the enum.  (Inline, so that
 * it costs nothing where assert is compiled out.) */
static inline int state_may_become(int from, int to) {
  switch (from) {
  case KV_CONN_IDLE:
    return to == KV_CONN_IDLE || to == KV_CONN_HEAD || to == KV_CONN_LINGER;
  case KV_CONN_HEAD:
    return to == KV_CONN_BODY || to == KV_CONN_IDLE || to == KV_CONN_LINGER;
  case KV_CONN_BODY:
    return to == KV_CONN_IDLE || to == KV_CONN_WAIT || to == KV_CONN_LINGER;
  case KV_CONN_WAIT:
    return to == KV_CONN_IDLE;
  default:
    return 0;
  }
}

static void set_state(kv_conn_t *c, int to) {
  assert(!c->closing);
  assert(state_may_become(c->state, to));
  c->state = to;
}

/* Stops the parser at the end of the message being parsed: a hook
 * returns this.  Every pause is paired with parser_resume, or with the
 * close. */
static int parser_pause(kv_conn_t *c) {
  assert(!c->paused);
  c->paused = 1;
  return HPE_PAUSED;
}

static void parser_resume(kv_conn_t *c) {
  llhttp_errno_t e = llhttp_get_errno(&c->http.parser);

  assert(c->paused && !c->close_after);
  assert(e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE);
  c->paused = 0;
  if (e == HPE_PAUSED_UPGRADE)
    llhttp_resume_after_upgrade(&c->http.parser);
  else
    llhttp_resume(&c->http.parser);
}

/* ---- teardown ----------------------------------------------------------- */

static void on_close(uv_handle_t *h) {
  kv_conn_t *c = h->data;
  kv_conn_env_t *env = c->env;

  assert(c->closing);
  if (c->prev != NULL) c->prev->next = c->next;
  else env->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  kv_out_free(&c->out[0]);
  kv_out_free(&c->out[1]);
  kv_http_free(&c->http);
  free(c->pending);
  free(c);
  env->nconns--;
  if (env->gone != NULL) env->gone(env);
}

/* Closes the connection now, or as soon as the store has answered it. */
static void conn_close(kv_conn_t *c) {
  if (c->closing) return;
  if (c->state == KV_CONN_WAIT && c->wait.streaming) {
    /* A change feed holds nothing the store must finish: end it now. */
    kv_router_answer_t a;
    answer_init(c, &a);
    kv_router_stop(c->env->router, &c->http.req, &a, &c->wait, 0);
    set_state(c, KV_CONN_IDLE);
  }
  if (c->state == KV_CONN_WAIT) {
    /* The store still holds c->wait: wait for its answer. */
    c->close_wanted = 1;
    return;
  }
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* ---- reading ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  kv_conn_t *c = h->data;

  (void)hint;
  /* One buffer serves every connection: libuv calls on_read right after
   * each read, and everything is parsed (or copied aside) before then. */
  *buf = uv_buf_init(c->env->rbuf, KV_CONN_READ_BUF);
}

static void read_start(kv_conn_t *c) {
  if (c->reading || c->closing) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = 1;
}

static void read_stop(kv_conn_t *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

/* After the client's FIN, with the parser not paused: a partial request
 * can never complete, so it is dropped, but the complete ones before it
 * are answered in full (a client may half-close after its last request
 * and only then read).  The caller flushes, which closes once the queued
 * output is written. */
static void client_done(kv_conn_t *c) {
  set_state(c, KV_CONN_IDLE);
  c->close_after = 1;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  kv_conn_t *c = req->data;

  if (status < 0 || c->eof) conn_close(c);
}

/* Closes after the last answer is written.  The write side is shut down
 * first and what the client still sends is read and dropped for a moment:
 * closing with unread data would send a reset that can destroy the answer
 * before the client reads it. */
static void finish_close(kv_conn_t *c) {
  if (c->state == KV_CONN_LINGER || c->closing) return;
  if (c->close_wanted || c->eof) {
    conn_close(c);
    return;
  }
  set_state(c, KV_CONN_LINGER);
  c->deadline = now_ms(c) + KV_LINGER_MS;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  read_start(c);
}

/* ---- writing ------------------------------------------------------------ */

static void write_slice(kv_conn_t *c);

/* Advances the buffer being written past n bytes. */
static void advance(kv_out_t *o, size_t n) {
  while (n > 0 && o->iov_i < o->niov) {
    uv_buf_t *b = &o->iov[o->iov_i];
    if (n < b->len) {
      b->base += n;
      b->len -= n;
      return;
    }
    n -= b->len;
    o->iov_i++;
  }
}

static void on_write(uv_write_t *req, int status) {
  kv_conn_t *c = req->data;
  kv_out_t *o = &c->out[c->cur ^ 1];

  if (status < 0 || c->closing) {
    kv_out_reset(o);
    c->writing = 0;
    conn_close(c);
    return;
  }
  advance(o, c->slice_len);
  if (o->iov_i < o->niov) {
    write_slice(c); /* more of this buffer */
    return;
  }
  kv_out_reset(o);
  c->writing = 0;
  /* A change feed holds back while its output is being written: take
   * more now. */
  if (c->state == KV_CONN_WAIT && c->wait.streaming) {
    conn_deferred(c);
    return;
  }
  if (c->out[c->cur].bytes != 0) {
    conn_flush(c);
    return;
  }
  if (c->close_after) {
    /* A waiting request is answered first; its resume closes. */
    if (c->state != KV_CONN_WAIT) finish_close(c);
    return;
  }
  /* Parsing paused for the client to read its answers: go on. */
  if (c->paused && c->state != KV_CONN_WAIT) conn_resume(c);
}

/* Queues the next slice of the buffer in flight: whole buffers up to
 * KV_WRITE_SLICE bytes, the last one cut short if need be. */
static void write_slice(kv_conn_t *c) {
  kv_out_t *o = &c->out[c->cur ^ 1];
  size_t k = 0;
  size_t total = 0;

  while (o->iov_i + k < o->niov && k < KV_SLICE_BUFS &&
         total < KV_WRITE_SLICE) {
    uv_buf_t b = o->iov[o->iov_i + k];
    if (b.len > KV_WRITE_SLICE - total) b.len = KV_WRITE_SLICE - total;
    c->slice[k++] = b;
    total += b.len;
  }
  c->slice_len = total;
  c->write_since = now_ms(c);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, c->slice, (unsigned)k,
               on_write) != 0) {
    kv_out_reset(o);
    c->writing = 0;
    conn_close(c);
  }
}

/* Writes everything queued, with one writev for the common case.  Most
 * answers fit in the socket buffer at once, so uv_try_write goes first:
 * that needs no write request and no callback, and spares the epoll_ctl
 * libuv makes after every uv_write.  Whatever does not fit goes through
 * uv_write in slices, and meanwhile new answers queue in the other
 * buffer. */
static void conn_flush(kv_conn_t *c) {
  kv_out_t *o = conn_out(c);
  size_t n;
  int r;

  if (c->writing || c->closing) return;
  if (o->bytes == 0) {
    if (c->close_after && c->state != KV_CONN_WAIT) finish_close(c);
    return;
  }
  n = kv_out_iov(o);
  if (n == 0) {
    conn_close(c);
    return;
  }
  r = o->bytes <= KV_WRITE_SLICE
          ? uv_try_write((uv_stream_t *)&c->tcp, o->iov, (unsigned)n)
          : UV_EAGAIN;
  if (r >= 0 && (size_t)r == o->bytes) {
    kv_out_reset(o);
    if (c->close_after && c->state != KV_CONN_WAIT) finish_close(c);
    return;
  }
  if (r < 0 && r != UV_EAGAIN) {
    conn_close(c);
    return;
  }
  o->iov_i = 0;
  advance(o, r > 0 ? (size_t)r : 0);
  c->cur ^= 1;
  c->writing = 1;
  write_slice(c);
}

/* ---- answers ------------------------------------------------------------ */

/* Where the router writes the next answer. */
static void answer_init(kv_conn_t *c, kv_router_answer_t *a) {
  a->out = conn_out(c);
  a->date = c->env->date;
  a->close = last_answer(c);
  a->status = 0;
  a->body = 0;
  a->now = now_ms(c);
  a->queued = c->writing ? c->out[c->cur ^ 1].bytes : 0;
}

/* Counts an answer and writes its access-log line, in the Common Log
 * Format after the "kvd: " prefix, with the target escaped. */
static void answered(kv_conn_t *c, const kv_router_answer_t *a) {
  const kv_http_req_t *r = &c->http.req;
  double secs = c->t0 != 0 ? (double)(uv_hrtime() - c->t0) / 1e9 : 0;
  char target[1024], when[64];
  struct tm tm;
  time_t now;

  kv_metrics_request(c->env->metrics, r->has_method ? r->method : -1,
                     a->status, secs);
  if (!c->env->limits.access_log) return;
  now = time(NULL);
  gmtime_r(&now, &tm);
  strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S +0000", &tm);
  kv_log_escape(target, sizeof(target), r->url != NULL ? r->url : "",
                r->url_len);
  kv_log_info("%s - - [%s] \"%s %s HTTP/%d.%d\" %d %zu", c->peer, when,
              r->has_method ? llhttp_method_name(r->method) : "-", target,
              r->http_major, r->http_minor, a->status, a->body);
}

/* An answer could not be queued whole, so nothing queued may go out: the
 * client would read a head without its body. */
static void conn_abort(kv_conn_t *c) {
  c->close_after = 1;
  c->pending_len = 0;
  conn_close(c);
}

/* Answers err and closes after it: a malformed request, a timeout.  The
 * parser stays paused for good, so nothing after the bad request is ever
 * parsed. */
static void conn_fail(kv_conn_t *c, int err) {
  kv_router_answer_t a;

  if (c->closing) return;
  c->close_after = 1;
  assert(!c->paused);
  c->paused = 1;
  c->pending_len = 0;
  read_stop(c);
  answer_init(c, &a);
  a.close = 1;
  if (kv_router_error(c->env->router, &c->http.req, &a, err, NULL) != 0) {
    conn_abort(c);
    return;
  }
  answered(c, &a);
}

/* Goes on after an answer, with the parser paused: closes if that was the
 * last answer, or parses what was kept and reads on. */
static void conn_resume(kv_conn_t *c) {
  assert(c->state == KV_CONN_IDLE);
  c->deadline = now_ms(c) + c->env->limits.idle_timeout_ms;
  if (c->close_wanted) {
    conn_close(c);
    return;
  }
  if (last_answer(c)) {
    c->close_after = 1;
    conn_flush(c);
    return;
  }
  parser_resume(c);
  if (c->pending_len != 0) {
    size_t len = c->pending_len;
    c->pending_len = 0;
    conn_feed(c, c->pending, len, 1);
  }
  if (!c->paused && !c->close_after) {
    if (c->eof) client_done(c);
    else read_start(c);
  }
  conn_flush(c);
}

/* The store is done with a waiting request: the router writes its answer
 * from the outcome in c->wait, and the connection goes on. */
/* Goes on after the router resumed a waiting request (or ticked a
 * stream) with outcome rc. */
static void conn_after(kv_conn_t *c, kv_router_answer_t *a, int rc) {
  if (rc == KV_ROUTER_WAITING) { /* a stream: more to come */
    conn_flush(c);
    return;
  }
  if (rc < 0 && c->wait.streaming) {
    kv_router_stop(c->env->router, &c->http.req, a, &c->wait, 0);
  }
  set_state(c, KV_CONN_IDLE);
  if (rc < 0) {
    conn_abort(c);
    return;
  }
  answered(c, a);
  if (a->close) c->close_after = 1;
  conn_resume(c);
}

/* Ends a change feed properly (the last chunk, or a long poll's answer)
 * and closes once everything queued is written. */
static void stream_end(kv_conn_t *c) {
  kv_router_answer_t a;
  int rc;

  answer_init(c, &a);
  a.close = 1;
  rc = kv_router_stop(c->env->router, &c->http.req, &a, &c->wait, 1);
  c->close_after = 1;
  conn_after(c, &a, rc);
}

static void conn_deferred(kv_conn_t *c) {
  kv_router_answer_t a;
  int rc;

  assert(c->state == KV_CONN_WAIT && c->paused);
  answer_init(c, &a);
  rc = kv_router_resume(c->env->router, &c->http.req, &a, &c->wait);
  conn_after(c, &a, rc);
}

static void on_written(kv_write_t *w, int status, int existed) {
  kv_conn_t *c = KV_CONTAINER_OF(w, kv_conn_t, wait.write);

  c->wait.status = status;
  c->wait.existed = existed;
  conn_deferred(c);
}

static void on_image(kv_image_wait_t *w, int status, kv_image_t *img) {
  kv_conn_t *c = KV_CONTAINER_OF(w, kv_conn_t, wait.image);

  c->wait.status = status;
  c->wait.img = img;
  conn_deferred(c);
}

static void on_watch(void *data) {
  kv_conn_t *c = data;

  if (c->state == KV_CONN_WAIT && !c->closing) conn_deferred(c);
}

static void on_list(kv_list_t *l) {
  kv_conn_t *c = KV_CONTAINER_OF(l, kv_conn_t, wait.list);

  c->wait.status = l->status;
  conn_deferred(c);
}

/* ---- parsing ------------------------------------------------------------ */

/* Parses len bytes at data.  When a request pauses the parser, the bytes
 * after it are kept in c->pending; from_pending says data already points
 * there (a resumed connection parsing what it had kept). */
static void conn_feed(kv_conn_t *c, const char *data, size_t len,
                      int from_pending) {
  llhttp_errno_t e = kv_http_execute(&c->http, data, len);
  const char *pos;
  size_t rest;

  /* kvd never switches protocols: after a request with Upgrade it goes on
   * with HTTP/1.1, as RFC 9110 allows.  CONNECT closes (hook_message). */
  while (e == HPE_PAUSED_UPGRADE && !c->close_after && !c->paused) {
    pos = llhttp_get_error_pos(&c->http.parser);
    llhttp_resume_after_upgrade(&c->http.parser);
    if (pos == NULL || pos >= data + len) return;
    len -= (size_t)(pos - data);
    data = pos;
    e = kv_http_execute(&c->http, data, len);
  }
  if (e == HPE_PAUSED_UPGRADE) e = HPE_PAUSED;
  if (e == HPE_OK) return;
  if (e != HPE_PAUSED) {
    if (!c->close_after)
      conn_fail(c, kv_http_parse_error(&c->http, e, data, len));
    return;
  }
  /* A change feed reads on, to notice its client leave (stream_read). */
  if (c->state == KV_CONN_WAIT && c->wait.streaming && !c->eof)
    read_start(c);
  else
    read_stop(c);
  pos = llhttp_get_error_pos(&c->http.parser);
  rest = pos != NULL ? (size_t)(data + len - pos) : 0;
  c->pending_len = 0;
  if (c->close_after || rest == 0) return;
  if (from_pending) {
    memmove(c->pending, pos, rest);
  } else {
    if (rest > c->pending_cap) {
      free(c->pending);
      c->pending_cap = 0;
      c->pending = malloc(rest);
      if (c->pending == NULL) {
        conn_close(c);
        return;
      }
      c->pending_cap = rest;
    }
    memcpy(c->pending, pos, rest);
  }
  c->pending_len = rest;
}

/* A change feed reads on while it streams, or a client that went away
 * would hold its watch until the next change or heartbeat: what arrives
 * is kept for after the feed, up to a bound. */
static void stream_read(kv_conn_t *c, const char *data, size_t len) {
  if (c->pending_len + len > KV_STREAM_PENDING_MAX) {
    read_stop(c);
    return;
  }
  if (c->pending_len + len > c->pending_cap) {
    size_t cap = c->pending_len + len;
    char *p = realloc(c->pending, cap);
    if (p == NULL) {
      read_stop(c);
      return;
    }
    c->pending = p;
    c->pending_cap = cap;
  }
  memcpy(c->pending + c->pending_len, data, len);
  c->pending_len += len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kv_conn_t *c = s->data;

  if (n == 0) return;
  if (n < 0) {
    c->eof = 1;
    if (n != UV_EOF || c->state == KV_CONN_LINGER) {
      conn_close(c);
      return;
    }
    read_stop(c);
    /* A change feed's client is done sending: the feed ends properly,
     * after the answers queued before it. */
    if (c->state == KV_CONN_WAIT && c->wait.streaming) {
      stream_end(c);
      return;
    }
    if (c->state == KV_CONN_WAIT || c->paused) return; /* on resume */
    client_done(c);
    conn_flush(c);
    return;
  }
  if (c->close_after || c->state == KV_CONN_LINGER) return; /* discard */
  if (c->state == KV_CONN_WAIT && c->wait.streaming) {
    stream_read(c, buf->base, (size_t)n);
    return;
  }
  conn_feed(c, buf->base, (size_t)n, 0);
  /* The body timeout measures a stall: any bytes are progress. */
  if (c->state == KV_CONN_BODY)
    c->deadline = now_ms(c) + c->env->limits.body_timeout_ms;
  conn_flush(c);
}

/* ---- llhttp hooks ------------------------------------------------------- */

static kv_conn_t *conn_of(kv_http_t *h) {
  return KV_CONTAINER_OF(h, kv_conn_t, http);
}

static int hook_begin(kv_http_t *h) {
  kv_conn_t *c = conn_of(h);

  c->t0 = uv_hrtime();
  set_state(c, KV_CONN_HEAD);
  c->deadline = now_ms(c) + c->env->limits.header_timeout_ms;
  return 0;
}

static int hook_head(kv_http_t *h) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  kv_conn_t *c = conn_of(h);

  set_state(c, KV_CONN_BODY);
  c->deadline = now_ms(c) + c->env->limits.body_timeout_ms;
  if (kv_router_head(c->env->router, &h->req) != 0) return -1;
  if (h->req.expect_continue) {
    if (kv_out_append(conn_out(c), cont, sizeof(cont) - 1) != 0) {
      h->req.fatal = KV_ENOMEM;
      return -1;
    }
    conn_flush(c);
    /* The client is gone: parse no further, or the body's message would
     * reach the store on a connection being freed. */
    if (c->closing) return -1;
  }
  return 0;
}

static int hook_message(kv_http_t *h) {
  kv_conn_t *c = conn_of(h);
  kv_router_answer_t a;
  int rc;

  /* After CONNECT the client would send tunnel bytes, not requests. */
  c->keep = llhttp_should_keep_alive(&h->parser) != 0 &&
            h->parser.method != HTTP_CONNECT;
  answer_init(c, &a);
  rc = kv_router_message(c->env->router, &h->req, &a, &c->wait);
  if (rc == KV_ROUTER_WAITING) {
    set_state(c, KV_CONN_WAIT);
    return parser_pause(c);
  }
  set_state(c, KV_CONN_IDLE);
  if (rc < 0) {
    conn_abort(c);
    return parser_pause(c);
  }
  answered(c, &a);
  c->deadline = now_ms(c) + c->env->limits.idle_timeout_ms;
  if (last_answer(c)) {
    c->close_after = 1;
    return parser_pause(c);
  }
  if (c->writing && conn_out(c)->bytes > KV_OUT_HIGH) return parser_pause(c);
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

static kv_conn_t *conn_new(kv_conn_env_t *env) {
  kv_conn_t *c = calloc(1, sizeof(*c));

  if (c == NULL) return NULL;
  c->env = env;
  uv_tcp_init(env->loop, &c->tcp);
  c->tcp.data = c;
  kv_http_init(&c->http, &env->http);
  c->wait.write.done = on_written;
  c->wait.image.done = on_image;
  c->wait.list.done = on_list;
  c->wait.watch_ready = on_watch;
  c->wait.watch_data = c;
  c->next = env->conns;
  if (env->conns != NULL) env->conns->prev = c;
  env->conns = c;
  env->nconns++;
  snprintf(c->peer, sizeof(c->peer), "-");
  return c;
}

static int conn_start(kv_conn_t *c, int refuse) {
  kv_conn_env_t *env = c->env;
  struct sockaddr_storage ss;
  int namelen = sizeof(ss);

  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &namelen) == 0)
    uv_ip_name((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
  /* A new connection gets the head timeout: a client that connects and
   * says nothing is holding a slot, not idling between requests. */
  c->deadline = now_ms(c) + env->limits.header_timeout_ms;
  if (refuse) {
    /* Over --max-connections: say so and close, rather than leave the
     * client hanging in the backlog. */
    env->metrics->conns_refused++;
    c->close_after = 1;
    c->paused = 1;
    if (kv_http_error(conn_out(c), env->date, KV_EBUSYCONN,
                      "Retry-After: 1\r\n", 1, 0) != 0) {
      conn_close(c);
      return KV_ENOMEM;
    }
    conn_flush(c);
    return 0;
  }
  env->metrics->conns_accepted++;
  read_start(c);
  return 0;
}

int kv_conn_accept(kv_conn_env_t *env, uv_stream_t *listener, int refuse) {
  kv_conn_t *c = conn_new(env);
  int rc;

  if (c == NULL) return KV_ENOMEM;
  rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
  if (rc != 0) {
    conn_close(c);
    return kv_err_uv(rc);
  }
  return conn_start(c, refuse);
}

int kv_conn_adopt(kv_conn_env_t *env, uv_os_sock_t fd) {
  kv_conn_t *c = conn_new(env);
  int rc;

  if (c == NULL) return KV_ENOMEM;
  rc = uv_tcp_open(&c->tcp, fd);
  if (rc != 0) {
    conn_close(c);
    return kv_err_uv(rc);
  }
  return conn_start(c, 0);
}

static void conn_sweep(kv_conn_t *c, uint64_t now) {
  if (c->closing) return;
  if (c->writing) {
    /* A slow reader that keeps reading is fine; one that stopped for the
     * idle timeout is closed.  Progress shows as a shrinking queue. */
    size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (q != c->write_queued) {
      c->write_queued = q;
      c->write_since = now;
    } else if (now - c->write_since > c->env->limits.idle_timeout_ms) {
      conn_close(c);
      return;
    }
  }
  if (c->state == KV_CONN_WAIT && c->wait.streaming) {
    /* A change feed's heartbeat, or a long poll's end. */
    kv_router_answer_t a;
    int rc;
    answer_init(c, &a);
    rc = kv_router_tick(c->env->router, &c->http.req, &a, &c->wait, now);
    conn_after(c, &a, rc);
    return;
  }
  if (now < c->deadline) return;
  switch (c->state) {
  case KV_CONN_IDLE:
    if (!c->writing && !c->paused) conn_close(c);
    break;
  case KV_CONN_HEAD:
  case KV_CONN_BODY:
    if (!c->close_after) {
      conn_fail(c, KV_ETIMEOUT);
      conn_flush(c);
    }
    break;
  case KV_CONN_LINGER:
    conn_close(c);
    break;
  default:
    break;
  }
}

void kv_conn_sweep(kv_conn_env_t *env, uint64_t now) {
  kv_conn_t *c, *next;

  for (c = env->conns; c != NULL; c = next) {
    next = c->next; /* closing only schedules the free */
    conn_sweep(c, now);
  }
}

static void conn_drain(kv_conn_t *c) {
  if (c->closing) return;
  /* A change feed never ends by itself: end it properly now. */
  if (c->state == KV_CONN_WAIT && c->wait.streaming) {
    stream_end(c);
    return;
  }
  switch (c->state) {
  case KV_CONN_WAIT:
    c->close_after = 1; /* answered by the store, then closed */
    break;
  case KV_CONN_IDLE:
    if (c->writing || conn_out(c)->bytes != 0) {
      c->close_after = 1;
      read_stop(c);
    } else {
      conn_close(c);
    }
    break;
  case KV_CONN_LINGER:
    break;
  default:
    conn_close(c);
  }
}

void kv_conn_drain(kv_conn_env_t *env) {
  kv_conn_t *c, *next;

  for (c = env->conns; c != NULL; c = next) {
    next = c->next;
    conn_drain(c);
  }
}

int kv_conn_env_init(kv_conn_env_t *env, uv_loop_t *loop) {
  memset(env, 0, sizeof(*env));
  env->loop = loop;
  env->rbuf = malloc(KV_CONN_READ_BUF);
  if (env->rbuf == NULL) return KV_ENOMEM;
  kv_http_settings_init(&env->http, hook_begin, hook_head, hook_message);
  return 0;
}

void kv_conn_env_free(kv_conn_env_t *env) {
  assert(env->nconns == 0);
  free(env->rbuf);
  env->rbuf = NULL;
}
