/* metrics.h - counters and histograms, served as Prometheus text.
 *
 * Everything is updated on the listener thread, so plain integers do.
 * Durations measured on worker threads are handed back with their
 * completion and recorded there.
 */
#ifndef KV_METRICS_H
#define KV_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define KV_HIST_MAX 16

typedef struct {
  const double *bounds; /* upper bounds, ascending; +Inf is implicit */
  int n;
  uint64_t counts[KV_HIST_MAX + 1];
  uint64_t count;
  double sum;
} kv_hist_t;

enum { KV_M_GET, KV_M_HEAD, KV_M_PUT, KV_M_POST, KV_M_DELETE, KV_M_OTHER,
       KV_M_NMETHODS };

#define KV_M_NSTATUS 24
#define KV_M_NERRORS 46 /* error codes -1..-46 (include/kv/error.h) */

typedef struct {
  uint64_t requests[KV_M_NMETHODS][KV_M_NSTATUS];
  uint64_t errors[KV_M_NERRORS]; /* code c counted at errors[-c - 1] */
  kv_hist_t latency;     /* request seconds, head received to answer queued */
  kv_hist_t batch;       /* writes per commit */
  kv_hist_t commit;      /* commit seconds, fsync included */
  kv_hist_t image;       /* image build seconds */
  kv_hist_t checkpoint;  /* checkpoint seconds: LMDB commit and log trim */
  kv_hist_t list;        /* listing seconds, submitted to body built */
  kv_hist_t expire_lag;  /* per expiry batch: its latest removal's delay */
  kv_hist_t backup;      /* backup copy seconds */
  uint64_t backups;      /* backup copies made */
  uint64_t image_bytes;  /* size of the newest image */
  uint64_t conns_accepted, conns_refused;
} kv_metrics_t;

void kv_metrics_init(kv_metrics_t *m);
void kv_hist_observe(kv_hist_t *h, double v);

/* Counts one answered request; method is an llhttp method. */
void kv_metrics_request(kv_metrics_t *m, int method, int status,
                        double seconds);
/* Counts one error answer or failure, by kv error code. */
void kv_metrics_error(kv_metrics_t *m, int err);

typedef struct {
  uint64_t keys, bytes, conns, commits, rev, ckpt_rev, log_pending;
  uint64_t ttl_keys, expired, watches;
  int ready, writes_failed;
} kv_metrics_gauges_t;

/* Renders the exposition text into a malloc'd buffer. Returns 0 or
 * KV_ENOMEM. */
int kv_metrics_render(const kv_metrics_t *m, const kv_metrics_gauges_t *g,
                      char **out, size_t *len);

#endif
