/* server.c - the listener: the loop, the listening socket, signals, the
 * once-a-second sweep, and an orderly shutdown. */
#include "kv/server.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/container.h"
#include "kv/error.h"
#include "kv/log.h"

#define KV_BACKLOG 1024
#define KV_SHUTDOWN_MS 10000

/* systemd's readiness protocol, without libsystemd: one datagram to
 * $NOTIFY_SOCKET ("@" starts an abstract socket name). */
static void notify(const char *msg) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un sa;
  size_t n;
  int fd;

  if (path == NULL || (path[0] != '/' && path[0] != '@')) return;
  n = strlen(path);
  if (n >= sizeof(sa.sun_path)) return;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, n);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';
  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
    kv_log_warn("NOTIFY_SOCKET: %s", strerror(errno));
  close(fd);
}

static void update_date(kv_server_t *srv) {
  kv_http_date(srv->env.date, time(NULL));
}

static void on_sweep(uv_timer_t *t) {
  kv_server_t *srv = t->data;

  update_date(srv);
  kv_conn_sweep(&srv->env, uv_now(srv->loop));
  kv_store_sweep(srv->store);
}

static void on_connection(uv_stream_t *listener, int status) {
  kv_server_t *srv = listener->data;
  int rc;

  if (status < 0) {
    /* On EMFILE libuv sheds the connection with its spare descriptor and
     * reports it here, once per connection: one line a second is enough. */
    uint64_t now = uv_now(srv->loop);
    if (now - srv->accept_warned >= 1000 || srv->accept_warned == 0) {
      srv->accept_warned = now != 0 ? now : 1;
      kv_log_warn("accept: %s (shedding connections)", uv_strerror(status));
    }
    return;
  }
  rc = kv_conn_accept(&srv->env, listener,
                      srv->env.nconns >= srv->cfg.max_conns);
  /* The accept's own libuv errors come back through kv_err_uv; EAGAIN says
   * the client left before its connection was taken. */
  if (rc != 0 && rc != kv_err_uv(UV_EAGAIN))
    kv_log_warn("accept: %s", kv_strerror(rc));
}

static void finish(kv_server_t *srv) {
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sighup, NULL);
  uv_close((uv_handle_t *)&srv->sweep, NULL);
  uv_close((uv_handle_t *)&srv->deadline, NULL);
  kv_store_close(srv->store);
  kv_log_info("stopped");
}

static void maybe_finish(kv_server_t *srv) {
  if (srv->shutting_down == 1 && srv->store_drained &&
      srv->env.nconns == 0) {
    srv->shutting_down = 2;
    finish(srv);
  }
}

static void on_conn_gone(kv_conn_env_t *env) {
  maybe_finish(KV_CONTAINER_OF(env, kv_server_t, env));
}

static void on_drained(kv_store_t *s) {
  kv_server_t *srv = s->loop->data;
  srv->store_drained = 1;
  maybe_finish(srv);
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  kv_log_error("shutdown took over %d s; exiting with writes in flight "
               "unanswered (none of them was acknowledged)",
               KV_SHUTDOWN_MS / 1000);
  exit(1);
}

/* Stop accepting, let waiting requests get their answers, commit what is
 * pending, write the final image, close every connection, then let the
 * loop run dry. */
static void on_signal(uv_signal_t *h, int signum) {
  kv_server_t *srv = h->data;

  if (srv->shutting_down) return;
  srv->shutting_down = 1;
  srv->router.stopping = 1;
  srv->env.stopping = 1;
  notify("STOPPING=1");
  kv_log_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
  uv_close((uv_handle_t *)&srv->listener, NULL);
  uv_timer_start(&srv->deadline, on_deadline, KV_SHUTDOWN_MS, 0);
  uv_unref((uv_handle_t *)&srv->deadline);
  kv_conn_drain(&srv->env);
  kv_store_drain(srv->store, on_drained);
}

/* Hands the settings that apply at once to the connections. */
static void apply_limits(kv_server_t *srv) {
  const kv_config_t *cfg = &srv->cfg;
  kv_http_limits_t *hl = &srv->env.http.limits;
  kv_conn_limits_t *cl = &srv->env.limits;

  hl->max_uri = cfg->max_uri;
  hl->max_head = cfg->max_head;
  hl->max_value = cfg->max_value;
  hl->max_headers = cfg->max_headers;
  cl->header_timeout_ms = cfg->header_timeout_ms;
  cl->body_timeout_ms = cfg->body_timeout_ms;
  cl->idle_timeout_ms = cfg->idle_timeout_ms;
  cl->access_log = cfg->access_log;
  kv_log_set_level(cfg->log_level);
}

/* SIGHUP: reopen the log and re-read the config file.  Limits, timeouts,
 * logging and the token apply at once; where to listen, the data
 * directory, the sync mode and the map size need a restart. */
static void on_hup(uv_signal_t *h, int signum) {
  kv_server_t *srv = h->data;
  kv_config_t *cur = &srv->cfg;
  kv_config_t next;
  int rc;
  (void)signum;

  if ((rc = kv_log_open(cur->log_file)) != 0)
    kv_log_error("%s: cannot reopen the log: %s", cur->log_file,
                 strerror(-rc));
  if (kv_config_reload(srv->argc, srv->argv, &next) != 0) {
    kv_log_error("SIGHUP: configuration not reloaded; keeping the old one");
    return;
  }
  if (strcmp(next.host, cur->host) || next.port != cur->port)
    kv_log_warn("SIGHUP: listen changed: needs a restart");
  if (strcmp(next.data, cur->data))
    kv_log_warn("SIGHUP: data changed: needs a restart");
  if (next.sync != cur->sync)
    kv_log_warn("SIGHUP: sync changed: needs a restart");
  if (next.map_size != cur->map_size)
    kv_log_warn("SIGHUP: map-size changed: needs a restart");
  if (next.max_readers != cur->max_readers)
    kv_log_warn("SIGHUP: max-readers changed: needs a restart");
  if (next.log_segment != cur->log_segment)
    kv_log_warn("SIGHUP: log-segment changed: needs a restart");
  if (next.history != cur->history)
    kv_log_warn("SIGHUP: history changed: needs a restart");
  if (next.tomb_secs != cur->tomb_secs)
    kv_log_warn("SIGHUP: tombstone-retention changed: needs a restart");
  if (strcmp(next.log_file, cur->log_file) &&
      (rc = kv_log_open(next.log_file)) != 0)
    kv_log_error("%s: cannot open the log: %s", next.log_file,
                 strerror(-rc));
  memcpy(next.host, cur->host, sizeof(next.host));
  next.port = cur->port;
  memcpy(next.data, cur->data, sizeof(next.data));
  next.sync = cur->sync;
  next.map_size = cur->map_size;
  next.max_readers = cur->max_readers;
  next.log_segment = cur->log_segment;
  *cur = next;
  apply_limits(srv);
  kv_log_info("SIGHUP: configuration reloaded");
}

static int listen_on(kv_server_t *srv) {
  const kv_config_t *cfg = &srv->cfg;
  struct sockaddr_storage ss;
  int namelen = sizeof(ss);
  int rc;
  int port;

  if (uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&ss) != 0)
    return UV_EINVAL;
  uv_tcp_init(srv->loop, &srv->listener);
  srv->listener.data = srv;
  rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->listener, KV_BACKLOG, on_connection);
  if (rc != 0) return rc;
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &namelen);
  port = ntohs(ss.ss_family == AF_INET6
                   ? ((struct sockaddr_in6 *)&ss)->sin6_port
                   : ((struct sockaddr_in *)&ss)->sin_port);
  kv_log_info("listening on http://%s%s%s:%d",
              ss.ss_family == AF_INET6 ? "[" : "", cfg->host,
              ss.ss_family == AF_INET6 ? "]" : "", port);
  /* Whoever started kvd learns the address even when the log goes to a
   * file or is quieter than info. */
  if (cfg->log_file[0] != '\0' || kv_log_level() < KV_LOG_INFO)
    fprintf(stderr, "kvd: listening on http://%s%s%s:%d\n",
            ss.ss_family == AF_INET6 ? "[" : "", cfg->host,
            ss.ss_family == AF_INET6 ? "]" : "", port);
  return 0;
}

int kv_server_open(kv_server_t *srv, uv_loop_t *loop, char *err,
                   size_t errlen) {
  int rc;

  kv_metrics_init(&srv->metrics);
  srv->loop = loop;
  srv->loop->data = srv;
  rc = kv_conn_env_init(&srv->env, loop);
  if (rc != 0) {
    snprintf(err, errlen, "%s", kv_strerror(rc));
    return rc;
  }
  srv->env.router = &srv->router;
  srv->env.metrics = &srv->metrics;
  srv->env.gone = on_conn_gone;
  apply_limits(srv);
  update_date(srv);
  rc = kv_store_open(srv->loop, &srv->cfg, &srv->metrics, &srv->store, err,
                     errlen);
  if (rc != 0) return rc;
  srv->router = (kv_router_t){
      .store = srv->store,
      .cfg = &srv->cfg,
      .limits = &srv->env.http.limits,
      .metrics = &srv->metrics,
      .conns = &srv->env.nconns,
      .ready = 1,
  };
  return 0;
}

void kv_server_free(kv_server_t *srv) {
  if (srv == NULL) return;
  if (srv->store != NULL) kv_store_free(srv->store);
  if (srv->loop != NULL) uv_loop_close(srv->loop);
  kv_conn_env_free(&srv->env);
  free(srv);
}

int kv_server_main(int argc, char **argv) {
  kv_server_t *srv;
  char err[512];
  int rc;

  srv = calloc(1, sizeof(*srv));
  if (srv == NULL) {
    fprintf(stderr, "kvd: out of memory\n");
    return 1;
  }
  rc = kv_config_parse(&srv->cfg, argc, argv);
  if (rc != KV_CONFIG_RUN) {
    free(srv);
    return rc == KV_CONFIG_EXIT_OK ? 0 : rc == KV_CONFIG_EXIT_USAGE ? 2 : 1;
  }
  /* Like Redis's protected mode: an open port with no token is a
   * mistake unless the user says otherwise. */
  if (!kv_config_is_loopback(srv->cfg.host) && srv->cfg.token_len == 0 &&
      !srv->cfg.insecure) {
    fprintf(stderr, "kvd: refusing to listen on %s without --token-file "
                    "(pass --insecure to allow it)\n", srv->cfg.host);
    free(srv);
    return 2;
  }
  srv->argc = argc;
  srv->argv = argv;
  if ((rc = kv_log_open(srv->cfg.log_file)) != 0) {
    fprintf(stderr, "kvd: %s: cannot open the log: %s\n", srv->cfg.log_file,
            strerror(-rc));
    free(srv);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  rc = kv_server_open(srv, uv_default_loop(), err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "kvd: %s: %s\n", srv->cfg.data, err);
    if (srv->cfg.log_file[0] != '\0')
      kv_log_error("%s: %s", srv->cfg.data, err);
    rc = 1;
    goto out;
  }
  /* Signals are handled before the "listening" line: whoever waits for
   * it may send SIGTERM at once. */
  uv_signal_init(srv->loop, &srv->sigterm);
  uv_signal_init(srv->loop, &srv->sigint);
  srv->sigterm.data = srv->sigint.data = srv;
  uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  uv_signal_start(&srv->sigint, on_signal, SIGINT);
  uv_signal_init(srv->loop, &srv->sighup);
  srv->sighup.data = srv;
  uv_signal_start(&srv->sighup, on_hup, SIGHUP);
  rc = listen_on(srv);
  if (rc != 0) {
    kv_log_error("cannot listen on %s:%d: %s", srv->cfg.host, srv->cfg.port,
                 uv_strerror(rc));
    kv_store_close(srv->store);
    uv_close((uv_handle_t *)&srv->listener, NULL);
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->sighup, NULL);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    rc = 1;
    goto out;
  }
  uv_timer_init(srv->loop, &srv->sweep);
  uv_timer_init(srv->loop, &srv->deadline);
  srv->sweep.data = srv->deadline.data = srv;
  uv_timer_start(&srv->sweep, on_sweep, 1000, 1000);

  notify("READY=1");
  uv_run(srv->loop, UV_RUN_DEFAULT);
  rc = 0;
out:
  kv_server_free(srv);
  return rc;
}
