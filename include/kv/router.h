/* router.h - routes and handlers: a function of the request.
 *
 * Raw paths that start with "/_" are kvd's own endpoints; "/" is the whole
 * map; anything else is a key, percent-decoded.  The head is routed as soon
 * as it is complete, so a body is sized, streamed into its record, or
 * refused before it is read.
 *
 * The router knows nothing of sockets.  It is given a request and an
 * answer to write into, and says whether the request is answered or
 * waiting.  A waiting request waits in a kv_router_wait_t its caller
 * owns: the caller sets the store callbacks in it, hears the outcome, and
 * hands it back to kv_router_resume, which writes the answer.  Today a
 * write waits for its commit, GET / for a fresh image, a listing for its
 * snapshot and GET /_backup for its copy; a change feed will stream
 * through the same door.
 */
#ifndef KV_ROUTER_H
#define KV_ROUTER_H

#include <stddef.h>

#include "kv/cond.h"
#include "kv/config.h"
#include "kv/http.h"
#include "kv/metrics.h"
#include "kv/out.h"
#include "kv/store.h"

enum {
  KV_ROUTE_NONE = 0,
  KV_ROUTE_KEY,
  KV_ROUTE_ROOT,
  KV_ROUTE_LIST, /* GET / with prefix, keys, after or limit */
  KV_ROUTE_HEALTH,
  KV_ROUTE_READY,
  KV_ROUTE_METRICS,
  KV_ROUTE_CHANGES,
  KV_ROUTE_BACKUP
};

/* How a change feed is framed. */
enum { KV_FEED_NDJSON = 0, KV_FEED_SSE, KV_FEED_LONGPOLL };

/* What the router serves from: set up by the server, borrowed. */
typedef struct {
  kv_store_t *store;
  const kv_config_t *cfg;          /* the token and --auth */
  const kv_http_limits_t *limits;  /* the largest value */
  kv_metrics_t *metrics;           /* errors are counted here */
  const size_t *conns;             /* open connections, for /_metrics */
  int ready;                       /* the map is loaded */
  int stopping;                    /* shutting down: /_ready says 503 */
} kv_router_t;

/* The output object an answer is written into.  The caller sets the first
 * part; the router fills in the second as it answers. */
typedef struct {
  kv_out_t *out;    /* where the bytes go */
  const char *date; /* the Date header's value */
  int close;        /* this is the connection's last answer */
  size_t queued;    /* bytes still being written: a stream waits past a bound */
  uint64_t now;     /* uv_now() */
  int status;       /* the status answered */
  size_t body;      /* the body's length, for the access log */
} kv_router_answer_t;

/* What a waiting request waits on.  The caller owns it (it lives as long
 * as the connection) and sets write.done, image.done and list.done to its
 * own callbacks; when one runs, the caller records the outcome below and calls
 * kv_router_resume.  The router fills in the rest before it submits. */
typedef struct {
  kv_write_t write;      /* a PUT, POST or DELETE waiting for its commit */
  kv_image_wait_t image; /* a GET / waiting for a fresh image, or a
                          * GET /_backup for its copy */
  int status;            /* the outcome: 0 or the store's error */
  int existed;           /* a write's: the key had a value */
  kv_image_t *img;       /* an image's, referenced: resume takes it over */
  kv_cond_t cond;        /* the request's preconditions, while it waits */
  kv_list_t list;        /* a listing waiting for its snapshot */
  char *list_buf;        /* its prefix, after and last key, malloc'd */
  /* A change feed: the caller sets watch_ready and watch_data, and resumes
   * when it runs, when the stream's output is written, and through
   * kv_router_tick once a second; it ends one early with kv_router_stop. */
  kv_watch_cb watch_ready;
  void *watch_data;
  kv_watch_t *watch;
  int streaming;         /* a change feed is open: see above */
  int feed;              /* KV_FEED_* */
  int chunked;           /* chunked framing; else until the close */
  uint64_t heartbeat_ms; /* 0: none */
  uint64_t last_sent;    /* uv_now() of the last bytes sent */
  uint64_t deadline;     /* a long poll's timeout */
  uint64_t since;        /* where the feed started: its Kvd-Revision */
  kv_change_t **lp;      /* a long poll's changes so far */
  size_t lp_n, lp_cap, lp_bytes;
} kv_router_wait_t;

/* What routing a message, or resuming it, gives. */
enum {
  KV_ROUTER_ANSWERED = 0, /* the answer is in a->out */
  KV_ROUTER_WAITING = 1   /* w is with the store: pause until it answers */
};

/* Routes a complete head: checks the framing headers, the target, the key,
 * the method and the token, and chooses where the body goes.  Errors land
 * in r->err (answered at the end of the message, connection kept) or
 * r->fatal (answered now, connection closed).  Returns 0, or -1 when
 * r->fatal is set. */
int kv_router_head(const kv_router_t *rt, kv_http_req_t *r);

/* Answers a complete message into a, or submits w to the store.  Returns
 * KV_ROUTER_ANSWERED, KV_ROUTER_WAITING, or KV_ENOMEM when the answer could
 * not be queued whole (a->out then holds a partial answer: drop the
 * connection). */
int kv_router_message(const kv_router_t *rt, kv_http_req_t *r,
                      kv_router_answer_t *a, kv_router_wait_t *w);

/* Answers a waiting request from the outcome recorded in w.  Returns as
 * kv_router_message does. */
int kv_router_resume(const kv_router_t *rt, kv_http_req_t *r,
                     kv_router_answer_t *a, kv_router_wait_t *w);

/* A change feed's timers: a heartbeat when nothing was sent for a while,
 * the end of a long poll.  now is uv_now().  Returns as
 * kv_router_resume does. */
int kv_router_tick(const kv_router_t *rt, kv_http_req_t *r,
                   kv_router_answer_t *a, kv_router_wait_t *w, uint64_t now);

/* Ends a change feed before it ended by itself: the client went away
 * (graceful 0), or kvd is shutting down (graceful 1: the stream is ended
 * properly).  Returns 0 (answered) or KV_ENOMEM. */
int kv_router_stop(const kv_router_t *rt, kv_http_req_t *r,
                   kv_router_answer_t *a, kv_router_wait_t *w, int graceful);

/* The one way an error is answered, by the router and by the connection
 * (malformed requests, timeouts): the status and message of err, extra
 * header lines (NULL or "Allow: ...\r\n"), no body for HEAD; counted in
 * the metrics.  Returns 0 or KV_ENOMEM. */
int kv_router_error(const kv_router_t *rt, const kv_http_req_t *r,
                    kv_router_answer_t *a, int err, const char *extra);

#endif
