/* conn.h - client connections.
 *
 * A connection reads into its environment's shared buffer and parses in
 * place; only the bytes left unparsed while a request waits (for its
 * commit, or for an image) are copied aside.  While a request waits,
 * parsing is paused and reading stops, so pipelined requests are answered
 * strictly in order and a read after a write sees that write.  Responses
 * accumulate and go out in one writev per batch.
 *
 * Each complete head and message goes to the router; a connection hears a
 * waiting request's outcome from the store itself and resumes itself.
 *
 * A connection is freed only in its close callback, closing is idempotent,
 * and a connection whose request is still in the store's hands is closed
 * only once the store has answered it.
 */
#ifndef KV_CONN_H
#define KV_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kv/http.h"
#include "kv/metrics.h"
#include "kv/router.h"

/* The size of the read buffer every connection shares. */
#define KV_CONN_READ_BUF (64 * 1024)

typedef struct kv_conn kv_conn_t;

/* What a connection needs from its owner besides the router. */
typedef struct {
  unsigned header_timeout_ms; /* a head, and a new connection's first */
  unsigned body_timeout_ms;   /* a stalled body */
  unsigned idle_timeout_ms;   /* keep-alive, and a client not reading */
  int access_log;             /* one line per answer */
} kv_conn_limits_t;

/* Everything connections share, owned by the server.  The owner sets the
 * fields marked "owner" after kv_conn_env_init and keeps date fresh. */
typedef struct kv_conn_env {
  uv_loop_t *loop;
  kv_conn_limits_t limits;  /* owner; may change between requests */
  kv_http_settings_t http;  /* conn's hooks; owner sets http.limits */
  const kv_router_t *router; /* owner */
  kv_metrics_t *metrics;    /* owner */
  char date[32];            /* owner: the Date cache, an IMF-fixdate */
  char *rbuf;               /* KV_CONN_READ_BUF bytes */
  int stopping;             /* owner: shutting down, every answer is last */
  /* Called after a connection is freed (owner; may be NULL). */
  void (*gone)(struct kv_conn_env *env);
  kv_conn_t *conns; /* every open connection */
  size_t nconns;
} kv_conn_env_t;

/* Prepares env for loop: the read buffer and the llhttp hooks.  Returns 0
 * or KV_ENOMEM. */
int kv_conn_env_init(kv_conn_env_t *env, uv_loop_t *loop);

/* Frees what kv_conn_env_init made, once every connection is gone. */
void kv_conn_env_free(kv_conn_env_t *env);

/* Accepts a connection from the listener's socket.  With refuse, it is
 * answered 503 with Retry-After and closed (--max-connections).  Returns
 * 0, KV_ENOMEM, or a libuv error of the accept through kv_err_uv. */
int kv_conn_accept(kv_conn_env_t *env, uv_stream_t *listener, int refuse);

/* Serves a connected stream socket that did not come from the listener
 * (the request-path fuzzer uses a socketpair).  Returns 0, KV_ENOMEM, or a
 * libuv error through kv_err_uv. */
int kv_conn_adopt(kv_conn_env_t *env, uv_os_sock_t fd);

/* Called once a second: times out connections past their deadline. */
void kv_conn_sweep(kv_conn_env_t *env, uint64_t now);

/* Shutdown: idle connections close now, busy ones after their answer.
 * Set env->stopping first. */
void kv_conn_drain(kv_conn_env_t *env);

#endif
