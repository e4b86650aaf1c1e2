/* conn.h - one client connection.
 *
 * A connection reads into the listener's shared buffer and parses in place;
 * only the bytes left unparsed while a request waits (for its commit, or
 * for an image) are copied aside.  While a request waits, parsing is paused
 * and reading stops, so pipelined requests are answered strictly in order
 * and a read after a write sees that write.  Responses accumulate and go
 * out in one writev per batch.
 *
 * A connection is freed only in its close callback, closing is idempotent,
 * and a connection whose request is still in the store's hands is closed
 * only once the store has answered it.
 */
#ifndef KV_CONN_H
#define KV_CONN_H

#include <uv.h>

#include "kv/http.h"
#include "kv/store.h"

struct kv_server;

enum {
  KV_CONN_IDLE = 0, /* between requests */
  KV_CONN_HEAD,     /* reading a request's head */
  KV_CONN_BODY,     /* reading a request's body */
  KV_CONN_WAIT,     /* a request waits for the store */
  KV_CONN_LINGER    /* answered and closing: draining what the client sends */
};

typedef struct kv_conn {
  kv_http_t http;
  uv_tcp_t tcp;
  struct kv_server *srv;
  struct kv_conn *prev, *next;
  int state;
  uint64_t deadline; /* uv_now() ms when the current state times out */
  uint64_t t0;       /* uv_hrtime() when the current request began */
  char peer[48];     /* the client's address, for the access log */

  char *pending; /* unparsed bytes held while paused */
  size_t pending_len, pending_cap;

  kv_out_t out[2]; /* one being written, one filling */
  int cur;         /* index of the filling one */
  uv_write_t wreq;
#define KV_SLICE_BUFS 64
  uv_buf_t slice[KV_SLICE_BUFS]; /* the slice being written */
  size_t slice_len;
  uv_shutdown_t sreq;
  uint64_t write_since; /* when the write in flight last made progress */
  size_t write_queued;  /* its unsent bytes at that time */

  kv_write_t write;     /* the store write of the waiting request */
  kv_image_wait_t iwait;

  unsigned writing : 1;
  unsigned paused : 1;      /* the parser is paused */
  unsigned reading : 1;
  unsigned eof : 1;         /* the client sent FIN */
  unsigned close_after : 1; /* close once the queued output is written */
  unsigned close_wanted : 1;/* close as soon as the store lets go */
  unsigned closing : 1;     /* uv_close was called */
  unsigned keep : 1;        /* the request asked for keep-alive */
} kv_conn_t;

/* Accepts a connection from the listener's socket.  With refuse, it is
 * answered 503 with Retry-After and closed (--max-connections). */
int kv_conn_accept(struct kv_server *srv, uv_stream_t *listener, int refuse);

/* Serves a connected stream socket that did not come from the listener
 * (the request-path fuzzer uses a socketpair).  Returns 0 or an error. */
int kv_conn_adopt(struct kv_server *srv, uv_os_sock_t fd);

/* Counts one answer in the metrics and the access log. */
void kv_conn_answered(kv_conn_t *c, int status, size_t body);

/* Closes the connection now, or as soon as the store has answered it. */
void kv_conn_close(kv_conn_t *c);

/* Called once a second: times out connections past their deadline. */
void kv_conn_sweep(kv_conn_t *c, uint64_t now);

/* Shutdown: idle connections close now, busy ones after their answer. */
void kv_conn_drain(kv_conn_t *c);

/* Queueing helpers for the router. */
kv_out_t *kv_conn_out(kv_conn_t *c);
const char *kv_conn_date(kv_conn_t *c);

/* True if the answer being queued is the connection's last: the client
 * asked to close, a fatal error occurred, or the server is shutting down. */
int kv_conn_last_answer(const kv_conn_t *c);

/* Called by the router when a waiting request has its answer queued. */
void kv_conn_resume(kv_conn_t *c);

/* Installs the connection's hooks into the server's HTTP state. */
void kv_conn_settings(kv_http_settings_t *s);

#endif
