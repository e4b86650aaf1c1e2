/* conn.c - one client connection: reading, pausing, writing, timeouts and
 * teardown. */
#include "kv/conn.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/container.h"
#include "kv/error.h"
#include "kv/log.h"
#include "kv/router.h"
#include "kv/server.h"

/* Pipelined answers queued beyond this while a write is in flight pause
 * parsing until the client reads them. */
#define KV_OUT_HIGH (256 * 1024)
/* How long a closing connection may keep sending before it is cut. */
#define KV_LINGER_MS 2000

static void conn_flush(kv_conn_t *c);
static void finish_close(kv_conn_t *c);

static kv_conn_t *conn_of(kv_http_t *h) {
  return KV_CONTAINER_OF(h, kv_conn_t, http);
}

static uint64_t now_ms(const kv_conn_t *c) { return uv_now(c->srv->loop); }

kv_out_t *kv_conn_out(kv_conn_t *c) { return &c->out[c->cur]; }

const char *kv_conn_date(kv_conn_t *c) { return c->srv->date; }

int kv_conn_last_answer(const kv_conn_t *c) {
  return !c->keep || c->close_after || c->srv->shutting_down;
}

static void on_close(uv_handle_t *h) {
  kv_conn_t *c = h->data;
  kv_server_t *srv = c->srv;

  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  kv_out_free(&c->out[0]);
  kv_out_free(&c->out[1]);
  kv_http_free(&c->http);
  free(c->pending);
  free(c);
  kv_server_conn_gone(srv);
}

void kv_conn_close(kv_conn_t *c) {
  if (c->closing) return;
  if (c->state == KV_CONN_WAIT) {
    /* The store still holds c->write or c->iwait: wait for its answer. */
    c->close_wanted = 1;
    return;
  }
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  kv_conn_t *c = h->data;
  (void)hint;
  /* One buffer serves every connection: libuv calls on_read right after
   * each read, and everything is parsed (or copied aside) before then. */
  *buf = uv_buf_init(c->srv->rbuf, KV_READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

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

/* Queues a final error answer and closes after it.  The parser stays
 * paused for good, so nothing after the bad request is ever parsed. */
static void conn_fail(kv_conn_t *c, int err) {
  kv_http_req_t *r = &c->http.req;
  int head_only = r->method == HTTP_HEAD && !r->in_head;

  c->close_after = 1;
  c->paused = 1;
  c->pending_len = 0;
  read_stop(c);
  if (kv_http_error(kv_conn_out(c), c->srv->date, err, NULL, 1, head_only))
    kv_conn_close(c);
  kv_metrics_error(&c->srv->metrics, err);
  kv_conn_answered(c, kv_err_status(err), strlen(kv_strerror(err)) + 1);
}

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
    if (!pos || pos >= data + len) return;
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
  read_stop(c);
  pos = llhttp_get_error_pos(&c->http.parser);
  rest = pos ? (size_t)(data + len - pos) : 0;
  c->pending_len = 0;
  if (c->close_after || rest == 0) return;
  if (from_pending) {
    memmove(c->pending, pos, rest);
  } else {
    if (rest > c->pending_cap) {
      free(c->pending);
      c->pending_cap = 0;
      if (!(c->pending = malloc(rest))) {
        kv_conn_close(c);
        return;
      }
      c->pending_cap = rest;
    }
    memcpy(c->pending, pos, rest);
  }
  c->pending_len = rest;
}

/* After the client's FIN, with the parser not paused: a partial request
 * can never complete, so it is dropped, but the complete ones before it
 * are answered in full (a client may half-close after its last request
 * and only then read).  The caller flushes, which closes once the queued
 * output is written. */
static void client_done(kv_conn_t *c) {
  c->state = KV_CONN_IDLE;
  c->close_after = 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kv_conn_t *c = s->data;

  if (n == 0) return;
  if (n < 0) {
    c->eof = 1;
    if (n != UV_EOF || c->state == KV_CONN_LINGER) {
      kv_conn_close(c);
      return;
    }
    read_stop(c);
    if (c->state == KV_CONN_WAIT || c->paused) return; /* on resume */
    client_done(c);
    conn_flush(c);
    return;
  }
  if (c->close_after || c->state == KV_CONN_LINGER) return; /* discard */
  conn_feed(c, buf->base, (size_t)n, 0);
  /* The body timeout measures a stall: any bytes are progress. */
  if (c->state == KV_CONN_BODY)
    c->deadline = now_ms(c) + c->srv->cfg.body_timeout_ms;
  conn_flush(c);
}

/* The most one write may copy.  libuv issues one writev per writable
 * event with everything queued, and a loopback socket's buffer grows to
 * megabytes: sending a large image in one go would stall every other
 * client for milliseconds.  In slices, large bodies interleave. */
#define KV_WRITE_SLICE (1024 * 1024)

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
    kv_conn_close(c);
    return;
  }
  advance(o, c->slice_len);
  if (o->iov_i < o->niov) {
    write_slice(c); /* more of this buffer */
    return;
  }
  kv_out_reset(o);
  c->writing = 0;
  if (c->out[c->cur].bytes) {
    conn_flush(c);
    return;
  }
  if (c->close_after) {
    finish_close(c);
    return;
  }
  /* Parsing paused for the client to read its answers: go on. */
  if (c->paused && c->state != KV_CONN_WAIT) kv_conn_resume(c);
}

/* Queues the next slice of the buffer in flight: whole buffers up to
 * KV_WRITE_SLICE bytes, the last one cut short if need be. */
static void write_slice(kv_conn_t *c) {
  kv_out_t *o = &c->out[c->cur ^ 1];
  size_t k = 0, total = 0;

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
    kv_conn_close(c);
  }
}

/* Writes everything queued, with one writev for the common case.  Most
 * answers fit in the socket buffer at once, so uv_try_write goes first:
 * that needs no write request and no callback, and spares the epoll_ctl
 * libuv makes after every uv_write.  Whatever does not fit goes through
 * uv_write in slices, and meanwhile new answers queue in the other
 * buffer. */
static void conn_flush(kv_conn_t *c) {
  kv_out_t *o = &c->out[c->cur];
  size_t n;
  int r;

  if (c->writing || c->closing) return;
  if (o->bytes == 0) {
    if (c->close_after && c->state != KV_CONN_WAIT) finish_close(c);
    return;
  }
  n = kv_out_iov(o);
  if (n == 0) {
    kv_conn_close(c);
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
    kv_conn_close(c);
    return;
  }
  o->iov_i = 0;
  advance(o, r > 0 ? (size_t)r : 0);
  c->cur ^= 1;
  c->writing = 1;
  write_slice(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  kv_conn_t *c = req->data;
  if (status < 0 || c->eof) kv_conn_close(c);
}

/* Closes after the last answer is written.  The write side is shut down
 * first and what the client still sends is read and dropped for a moment:
 * closing with unread data would send a reset that can destroy the answer
 * before the client reads it. */
static void finish_close(kv_conn_t *c) {
  if (c->state == KV_CONN_LINGER || c->closing) return;
  if (c->close_wanted || c->eof) {
    kv_conn_close(c);
    return;
  }
  c->state = KV_CONN_LINGER;
  c->deadline = now_ms(c) + KV_LINGER_MS;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    kv_conn_close(c);
    return;
  }
  read_start(c);
}

void kv_conn_resume(kv_conn_t *c) {
  c->state = KV_CONN_IDLE;
  c->deadline = now_ms(c) + c->srv->cfg.idle_timeout_ms;
  if (c->close_wanted) {
    kv_conn_close(c);
    return;
  }
  if (kv_conn_last_answer(c) || c->close_after) {
    c->close_after = 1;
    conn_flush(c);
    return;
  }
  c->paused = 0;
  if (llhttp_get_errno(&c->http.parser) == HPE_PAUSED_UPGRADE)
    llhttp_resume_after_upgrade(&c->http.parser);
  else
    llhttp_resume(&c->http.parser);
  if (c->pending_len) {
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

/* ---- llhttp hooks ------------------------------------------------------- */

static int hook_begin(kv_http_t *h) {
  kv_conn_t *c = conn_of(h);
  c->t0 = uv_hrtime();
  c->state = KV_CONN_HEAD;
  c->deadline = now_ms(c) + c->srv->cfg.header_timeout_ms;
  return 0;
}

static int hook_head(kv_http_t *h) {
  kv_conn_t *c = conn_of(h);
  kv_http_req_t *r = &c->http.req;

  c->state = KV_CONN_BODY;
  c->deadline = now_ms(c) + c->srv->cfg.body_timeout_ms;
  if (kv_route_head(c) != 0) return -1;
  if (r->expect_continue) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (kv_out_append(kv_conn_out(c), cont, sizeof(cont) - 1) != 0) {
      r->fatal = KV_ENOMEM;
      return -1;
    }
    conn_flush(c);
  }
  return 0;
}

static int hook_message(kv_http_t *h) {
  kv_conn_t *c = conn_of(h);

  /* After CONNECT the client would send tunnel bytes, not requests. */
  c->keep = llhttp_should_keep_alive(&h->parser) != 0 &&
            h->parser.method != HTTP_CONNECT;
  if (kv_route_message(c) == 1) {
    c->state = KV_CONN_WAIT;
    c->paused = 1;
    return HPE_PAUSED;
  }
  c->state = KV_CONN_IDLE;
  c->deadline = now_ms(c) + c->srv->cfg.idle_timeout_ms;
  if (kv_conn_last_answer(c)) {
    c->close_after = 1;
    c->paused = 1;
    return HPE_PAUSED;
  }
  if (c->writing && c->out[c->cur].bytes > KV_OUT_HIGH) {
    c->paused = 1;
    return HPE_PAUSED;
  }
  return 0;
}

void kv_conn_settings(kv_http_settings_t *s) {
  kv_http_settings_init(s, hook_begin, hook_head, hook_message);
}

/* ---- lifecycle ---------------------------------------------------------- */

/* Counts an answer and writes its access-log line, in the Common Log
 * Format after the "kvd: " prefix, with the target escaped. */
void kv_conn_answered(kv_conn_t *c, int status, size_t body) {
  kv_http_req_t *r = &c->http.req;
  double secs = c->t0 ? (double)(uv_hrtime() - c->t0) / 1e9 : 0;
  char target[1024], when[64];
  struct tm tm;
  time_t now;

  kv_metrics_request(&c->srv->metrics, r->has_method ? r->method : -1,
                     status, secs);
  if (!c->srv->cfg.access_log) return;
  now = time(NULL);
  gmtime_r(&now, &tm);
  strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S +0000", &tm);
  kv_log_escape(target, sizeof(target), r->url != NULL ? r->url : "",
                r->url_len);
  kv_log_info("%s - - [%s] \"%s %s HTTP/%d.%d\" %d %zu", c->peer, when,
              r->has_method ? llhttp_method_name(r->method) : "-",
              target, r->http_major, r->http_minor, status, body);
}

static kv_conn_t *conn_new(kv_server_t *srv) {
  kv_conn_t *c = calloc(1, sizeof(*c));

  if (!c) return NULL;
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  kv_http_init(&c->http, &srv->settings);
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  snprintf(c->peer, sizeof(c->peer), "-");
  return c;
}

static int conn_start(kv_conn_t *c, int refuse) {
  kv_server_t *srv = c->srv;
  struct sockaddr_storage ss;
  int namelen = sizeof(ss);

  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &namelen) == 0)
    uv_ip_name((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
  c->state = KV_CONN_IDLE;
  /* A new connection gets the head timeout: a client that connects and
   * says nothing is holding a slot, not idling between requests. */
  c->deadline = now_ms(c) + srv->cfg.header_timeout_ms;
  if (refuse) {
    /* Over --max-connections: say so and close, rather than leave the
     * client hanging in the backlog. */
    srv->metrics.conns_refused++;
    c->close_after = 1;
    c->paused = 1;
    if (kv_http_error(kv_conn_out(c), srv->date, KV_EBUSYCONN,
                      "Retry-After: 1\r\n", 1, 0) != 0) {
      kv_conn_close(c);
      return KV_ENOMEM;
    }
    conn_flush(c);
    return 0;
  }
  srv->metrics.conns_accepted++;
  read_start(c);
  return 0;
}

int kv_conn_accept(kv_server_t *srv, uv_stream_t *listener, int refuse) {
  kv_conn_t *c = conn_new(srv);
  int rc;

  if (!c) return KV_ENOMEM;
  rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
  if (rc != 0) {
    kv_conn_close(c);
    return rc;
  }
  return conn_start(c, refuse);
}

int kv_conn_adopt(kv_server_t *srv, uv_os_sock_t fd) {
  kv_conn_t *c = conn_new(srv);
  int rc;

  if (!c) return KV_ENOMEM;
  rc = uv_tcp_open(&c->tcp, fd);
  if (rc != 0) {
    kv_conn_close(c);
    return rc;
  }
  return conn_start(c, 0);
}

void kv_conn_sweep(kv_conn_t *c, uint64_t now) {
  if (c->closing) return;
  if (c->writing) {
    /* A slow reader that keeps reading is fine; one that stopped for the
     * idle timeout is closed.  Progress shows as a shrinking queue. */
    size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (q != c->write_queued) {
      c->write_queued = q;
      c->write_since = now;
    } else if (now - c->write_since > c->srv->cfg.idle_timeout_ms) {
      kv_conn_close(c);
      return;
    }
  }
  if (now < c->deadline) return;
  switch (c->state) {
  case KV_CONN_IDLE:
    if (!c->writing && !c->paused) kv_conn_close(c);
    break;
  case KV_CONN_HEAD:
  case KV_CONN_BODY:
    if (!c->close_after) {
      conn_fail(c, KV_ETIMEOUT);
      conn_flush(c);
    }
    break;
  case KV_CONN_LINGER:
    kv_conn_close(c);
    break;
  default:
    break;
  }
}

void kv_conn_drain(kv_conn_t *c) {
  if (c->closing) return;
  switch (c->state) {
  case KV_CONN_WAIT:
    c->close_after = 1; /* answered by the store, then closed */
    break;
  case KV_CONN_IDLE:
    if (c->writing || c->out[c->cur].bytes) {
      c->close_after = 1;
      read_stop(c);
    } else {
      kv_conn_close(c);
    }
    break;
  case KV_CONN_LINGER:
    break;
  default:
    kv_conn_close(c);
  }
}
