/* server.h - the listener: one libuv loop that owns the map.
 *
 * Nothing but this loop touches the map, so it needs no locks.  The loop
 * accepts connections, drives them, runs the once-a-second sweep for
 * timeouts and the Date header, and on SIGTERM or SIGINT shuts down in
 * order: stop accepting, answer the writes in flight, write the final
 * image, close the connections, exit 0.
 */
#ifndef KV_SERVER_H
#define KV_SERVER_H

#include <uv.h>

#include "kv/config.h"
#include "kv/conn.h"
#include "kv/metrics.h"
#include "kv/router.h"
#include "kv/store.h"

typedef struct kv_server {
  uv_loop_t *loop;
  kv_config_t cfg;
  kv_store_t *store;
  kv_router_t router;
  kv_conn_env_t env; /* the connections and what they share */
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint, sighup;
  kv_metrics_t metrics;
  int argc;
  char **argv;
  uint64_t accept_warned; /* uv_now() of the last accept warning */
  uv_timer_t sweep;
  uv_timer_t deadline; /* bounds the shutdown */
  int shutting_down; /* 1 while draining, 2 once done */
  int store_drained;
} kv_server_t;

/* kvd's whole life: parse the command line, open the store, serve until a
 * signal, shut down.  Returns the process exit status. */
int kv_server_main(int argc, char **argv);

/* Opens the store and prepares everything a connection needs, with
 * srv->cfg already set; does not listen.  On failure err holds a one-line
 * reason.  Returns 0 or an error.  Tests and fuzzers use this directly. */
int kv_server_open(kv_server_t *srv, uv_loop_t *loop, char *err,
                   size_t errlen);

/* Frees what kv_server_open made, after the loop has run dry. */
void kv_server_free(kv_server_t *srv);

#endif
