/* metrics.c - Prometheus text exposition (format version 0.0.4). */
#include "kv/metrics.h"

#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/error.h"

/* errors[] holds code -1 at index 0 up to code -KV_M_NERRORS at the last
 * index: every code in the table must fit. */
#define KV__ERR_FITS(n, c, s, msg)                                            \
  _Static_assert((c) <= -1 && (c) >= -KV_M_NERRORS,                           \
                 "KV_M_NERRORS is too small for KV_" #n);
KV_ERRORS(KV__ERR_FITS)
#undef KV__ERR_FITS

static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001,
                                        0.0025, 0.005,   0.01,   0.025,
                                        0.05,   0.1,     0.25,   1};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024};
static const double commit_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                       0.02,   0.05,  0.1,   0.25,  1};
static const double image_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                       5, 10};
static const int statuses[KV_M_NSTATUS] = {
    200, 201, 204, 304, 400, 401, 404, 405, 408, 410, 412, 413, 414,
    417, 431, 500, 501, 503, 505, 507, 0 /* other */};
static const char *const methods[KV_M_NMETHODS] = {"GET",  "HEAD",   "PUT",
                                                   "POST", "DELETE", "other"};

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void hist_init(kv_hist_t *h, const double *bounds, int n) {
  memset(h, 0, sizeof(*h));
  h->bounds = bounds;
  h->n = n;
}

void kv_metrics_init(kv_metrics_t *m) {
  memset(m, 0, sizeof(*m));
  hist_init(&m->latency, latency_bounds, NELEM(latency_bounds));
  hist_init(&m->batch, batch_bounds, NELEM(batch_bounds));
  hist_init(&m->commit, commit_bounds, NELEM(commit_bounds));
  hist_init(&m->image, image_bounds, NELEM(image_bounds));
  hist_init(&m->checkpoint, image_bounds, NELEM(image_bounds));
  hist_init(&m->list, latency_bounds, NELEM(latency_bounds));
  hist_init(&m->expire_lag, image_bounds, NELEM(image_bounds));
  hist_init(&m->backup, image_bounds, NELEM(image_bounds));
}

void kv_hist_observe(kv_hist_t *h, double v) {
  int i = 0;
  while (i < h->n && v > h->bounds[i]) i++;
  h->counts[i]++;
  h->count++;
  h->sum += v;
}

static int method_index(int method) {
  switch (method) {
  case HTTP_GET: return KV_M_GET;
  case HTTP_HEAD: return KV_M_HEAD;
  case HTTP_PUT: return KV_M_PUT;
  case HTTP_POST: return KV_M_POST;
  case HTTP_DELETE: return KV_M_DELETE;
  default: return KV_M_OTHER;
  }
}

static int status_index(int status) {
  int i;
  for (i = 0; statuses[i] != 0; i++)
    if (statuses[i] == status) return i;
  return i;
}

void kv_metrics_request(kv_metrics_t *m, int method, int status,
                        double seconds) {
  m->requests[method_index(method)][status_index(status)]++;
  kv_hist_observe(&m->latency, seconds);
}

void kv_metrics_error(kv_metrics_t *m, int err) {
  if (err < 0 && -err <= KV_M_NERRORS) m->errors[-err - 1]++;
}

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} buf_t;

static void put(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(buf_t *b, const char *fmt, ...) {
  va_list ap;
  int n;

  if (b->oom) return;
  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) break;
    char *np = realloc(b->p, b->cap * 2 + (size_t)n);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = b->cap * 2 + (size_t)n;
  }
  b->len += (size_t)n;
}

static void put_hist(buf_t *b, const char *name, const char *help,
                     const kv_hist_t *h) {
  uint64_t cum = 0;

  put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  for (int i = 0; i < h->n; i++) {
    cum += h->counts[i];
    put(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
        (unsigned long long)cum);
  }
  cum += h->counts[h->n];
  put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
  put(b, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name,
      (unsigned long long)h->count);
}

static void put_gauge(buf_t *b, const char *name, const char *type,
                      const char *help, unsigned long long v) {
  put(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
      name, v);
}

/* The label for an error code: its name without the E, lower case. */
static const char *error_kind(int code, char *buf, size_t cap) {
  const char *name = NULL;
  size_t i;
#define KV__ERR_NAME(n, c, s, msg) if (code == (c)) name = #n;
  KV_ERRORS(KV__ERR_NAME)
#undef KV__ERR_NAME
  if (!name) return NULL;
  for (i = 0; name[i + 1] && i + 1 < cap; i++)
    buf[i] = (char)(name[i + 1] | 0x20);
  buf[i] = '\0';
  return buf;
}

int kv_metrics_render(const kv_metrics_t *m, const kv_metrics_gauges_t *g,
                      char **out, size_t *len) {
  buf_t b = {malloc(8192), 0, 8192, 0};
  char kind[32];

  if (!b.p) return KV_ENOMEM;
  put(&b, "# HELP kvd_requests_total Requests answered, by method and "
          "status.\n# TYPE kvd_requests_total counter\n");
  for (int i = 0; i < KV_M_NMETHODS; i++) {
    for (int j = 0; j < KV_M_NSTATUS; j++) {
      if (!m->requests[i][j]) continue;
      if (statuses[j])
        put(&b, "kvd_requests_total{method=\"%s\",code=\"%d\"} %llu\n",
            methods[i], statuses[j], (unsigned long long)m->requests[i][j]);
      else
        put(&b, "kvd_requests_total{method=\"%s\",code=\"other\"} %llu\n",
            methods[i], (unsigned long long)m->requests[i][j]);
      if (!statuses[j]) break;
    }
  }
  put_hist(&b, "kvd_request_duration_seconds",
           "Time from a request's head to its answer being queued.",
           &m->latency);
  put_hist(&b, "kvd_commit_batch_size", "Writes per group commit.",
           &m->batch);
  put_hist(&b, "kvd_commit_duration_seconds",
           "LMDB commit time per batch, fsync included.", &m->commit);
  put(&b, "# HELP kvd_errors_total Error answers and failures, by kind.\n"
          "# TYPE kvd_errors_total counter\n");
  for (int i = 0; i < KV_M_NERRORS; i++) {
    if (m->errors[i] && error_kind(-i - 1, kind, sizeof(kind)))
      put(&b, "kvd_errors_total{kind=\"%s\"} %llu\n", kind,
          (unsigned long long)m->errors[i]);
  }
  put_gauge(&b, "kvd_keys", "gauge", "Keys stored.", g->keys);
  put_gauge(&b, "kvd_stored_bytes", "gauge",
            "Bytes of keys and values stored.", g->bytes);
  put_gauge(&b, "kvd_commits_total", "counter",
            "Group commits applied to the map.", g->commits);
  put_gauge(&b, "kvd_revision", "gauge",
            "The store's revision: the last write applied.", g->rev);
  put_gauge(&b, "kvd_checkpoint_revision", "gauge",
            "The revision the LMDB checkpoint holds.", g->ckpt_rev);
  put_gauge(&b, "kvd_log_pending_bytes", "gauge",
            "Log bytes not yet checkpointed into LMDB.", g->log_pending);
  put_hist(&b, "kvd_checkpoint_duration_seconds",
           "Time to write one checkpoint and trim the log.", &m->checkpoint);
  put_gauge(&b, "kvd_ttl_keys", "gauge",
            "Keys with a time to live, expired ones not yet removed included.",
            g->ttl_keys);
  put_gauge(&b, "kvd_expired_total", "counter",
            "Keys removed at their expiry time since start.", g->expired);
  put_hist(&b, "kvd_expire_lag_seconds",
           "Per batch of expiries: how long after its expiry time the "
           "latest removal was written.", &m->expire_lag);
  put_gauge(&b, "kvd_watches", "gauge", "Open change feeds.", g->watches);
  put_hist(&b, "kvd_list_duration_seconds",
           "Time to answer one listing, waiting for a checkpoint included.",
           &m->list);
  put_hist(&b, "kvd_image_build_duration_seconds",
           "Time to build one JSON image.", &m->image);
  put_gauge(&b, "kvd_image_bytes", "gauge", "Size of the newest JSON image.",
            m->image_bytes);
  put_hist(&b, "kvd_backup_duration_seconds",
           "Time to copy LMDB for one GET /_backup.", &m->backup);
  put_gauge(&b, "kvd_backups_total", "counter",
            "Backup copies made for GET /_backup.", m->backups);
  put_gauge(&b, "kvd_open_connections", "gauge", "Open client connections.",
            g->conns);
  put_gauge(&b, "kvd_connections_accepted_total", "counter",
            "Connections accepted.", m->conns_accepted);
  put_gauge(&b, "kvd_connections_refused_total", "counter",
            "Connections refused at --max-connections.", m->conns_refused);
  put_gauge(&b, "kvd_ready", "gauge", "1 once the map is loaded.",
            (unsigned long long)g->ready);
  put_gauge(&b, "kvd_writes_disabled", "gauge",
            "1 after a failed fsync: writes refused until restart.",
            (unsigned long long)g->writes_failed);
  if (b.oom) {
    free(b.p);
    return KV_ENOMEM;
  }
  *out = b.p;
  *len = b.len;
  return 0;
}
