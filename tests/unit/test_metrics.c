/* test_metrics.c - counters, histograms and the Prometheus text.
 *
 * The fixture's exposition is compared byte for byte, so a change in any
 * name, label, bucket or number format shows here.
 */
#include "kv/metrics.h"

#include <llhttp.h>

#include "kv/error.h"
#include "test.h"

/* Renders m with gauges g into a NUL-terminated malloc'd string. */
static char *render(const kv_metrics_t *m, const kv_metrics_gauges_t *g) {
  char *out = NULL, *s;
  size_t len = 0;
  CHECK_INT(kv_metrics_render(m, g, &out, &len), 0);
  CHECK(out != NULL);
  s = malloc(len + 1);
  CHECK(s != NULL);
  memcpy(s, out, len);
  s[len] = '\0';
  CHECK_INT(strlen(s), len);
  free(out);
  return s;
}

/* Returns how many times line (with its newline) is a whole line of text. */
static int count_lines(const char *text, const char *line) {
  size_t n = strlen(line);
  int c = 0;
  for (const char *p = text; *p;) {
    const char *eol = strchr(p, '\n');
    size_t l = eol ? (size_t)(eol - p) : strlen(p);
    if (l == n && memcmp(p, line, n) == 0) c++;
    p += l + (eol != NULL);
  }
  return c;
}

KV_TEST(last_error_counted, "the last error code, KV_ENOBACKUP, is counted and rendered") {
  kv_metrics_t m;
  kv_metrics_gauges_t g = {0};
  char *text;
  kv_metrics_init(&m);
  kv_metrics_error(&m, KV_ENOBACKUP);
  kv_metrics_error(&m, KV_ENOBACKUP);
  CHECK_INT(m.errors[KV_M_NERRORS - 1], 2);
  text = render(&m, &g);
  CHECK_INT(count_lines(text, "kvd_errors_total{kind=\"nobackup\"} 2"), 1);
  CHECK_INT(count_lines(text, "kvd_errors_total{kind=\"nomem\"} 0"), 0);
  free(text);
}

KV_TEST(every_error_counted, "every error code from -1 to -46 is counted once under its own kind") {
  kv_metrics_t m;
  kv_metrics_gauges_t g = {0};
  char *text, line[96];
  int n = 0;
  kv_metrics_init(&m);
#define COUNT(name, code, status, msg) kv_metrics_error(&m, KV_##name);
  KV_ERRORS(COUNT)
#undef COUNT
  for (int i = 0; i < KV_M_NERRORS; i++) CHECK_INT(m.errors[i], 1);
  text = render(&m, &g);
#define RENDERED(name, code, status, msg)                                     \
  do {                                                                        \
    char kind[32];                                                            \
    size_t k;                                                                 \
    for (k = 0; #name[k + 1] != '\0'; k++)                                    \
      kind[k] = (char)(#name[k + 1] | 0x20);                                  \
    kind[k] = '\0';                                                           \
    snprintf(line, sizeof line, "kvd_errors_total{kind=\"%s\"} 1", kind);     \
    CHECK_INT(count_lines(text, line), 1);                                    \
    n++;                                                                      \
  } while (0);
  KV_ERRORS(RENDERED)
#undef RENDERED
  CHECK_INT(n, KV_M_NERRORS);
  free(text);
}

KV_TEST(out_of_range_errors_ignored, "zero, positive and unknown error codes change no counter") {
  kv_metrics_t m, zero;
  kv_metrics_init(&m);
  kv_metrics_init(&zero);
  kv_metrics_error(&m, 0);
  kv_metrics_error(&m, 1);
  kv_metrics_error(&m, 32);
  kv_metrics_error(&m, -KV_M_NERRORS - 1);
  kv_metrics_error(&m, -1000);
  CHECK(memcmp(m.errors, zero.errors, sizeof m.errors) == 0);
}

static const char fixture_text[] =
    "# HELP kvd_requests_total Requests answered, by method and status.\n"
    "# TYPE kvd_requests_total counter\n"
    "kvd_requests_total{method=\"GET\",code=\"200\"} 2\n"
    "kvd_requests_total{method=\"GET\",code=\"404\"} 1\n"
    "kvd_requests_total{method=\"PUT\",code=\"201\"} 1\n"
    "kvd_requests_total{method=\"other\",code=\"other\"} 1\n"
    "# HELP kvd_request_duration_seconds Time from a request's head to its "
    "answer being queued.\n"
    "# TYPE kvd_request_duration_seconds histogram\n"
    "kvd_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"
    "kvd_request_duration_seconds_bucket{le=\"0.00025\"} 2\n"
    "kvd_request_duration_seconds_bucket{le=\"0.0005\"} 2\n"
    "kvd_request_duration_seconds_bucket{le=\"0.001\"} 2\n"
    "kvd_request_duration_seconds_bucket{le=\"0.0025\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"0.005\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"0.01\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"0.025\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"0.05\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"0.1\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"0.25\"} 3\n"
    "kvd_request_duration_seconds_bucket{le=\"1\"} 4\n"
    "kvd_request_duration_seconds_bucket{le=\"+Inf\"} 5\n"
    "kvd_request_duration_seconds_sum 2.5023\n"
    "kvd_request_duration_seconds_count 5\n"
    "# HELP kvd_commit_batch_size Writes per group commit.\n"
    "# TYPE kvd_commit_batch_size histogram\n"
    "kvd_commit_batch_size_bucket{le=\"1\"} 1\n"
    "kvd_commit_batch_size_bucket{le=\"2\"} 1\n"
    "kvd_commit_batch_size_bucket{le=\"4\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"8\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"16\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"32\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"64\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"128\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"256\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"1024\"} 2\n"
    "kvd_commit_batch_size_bucket{le=\"+Inf\"} 3\n"
    "kvd_commit_batch_size_sum 2052\n"
    "kvd_commit_batch_size_count 3\n"
    "# HELP kvd_commit_duration_seconds LMDB commit time per batch, fsync "
    "included.\n"
    "# TYPE kvd_commit_duration_seconds histogram\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.0005\"} 0\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.001\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.002\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.005\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.01\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.02\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.05\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.1\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"0.25\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"1\"} 1\n"
    "kvd_commit_duration_seconds_bucket{le=\"+Inf\"} 1\n"
    "kvd_commit_duration_seconds_sum 0.0007\n"
    "kvd_commit_duration_seconds_count 1\n"
    "# HELP kvd_errors_total Error answers and failures, by kind.\n"
    "# TYPE kvd_errors_total counter\n"
    "kvd_errors_total{kind=\"nomem\"} 1\n"
    "kvd_errors_total{kind=\"notfound\"} 1\n"
    "kvd_errors_total{kind=\"coding\"} 3\n"
    "# HELP kvd_keys Keys stored.\n"
    "# TYPE kvd_keys gauge\n"
    "kvd_keys 2\n"
    "# HELP kvd_stored_bytes Bytes of keys and values stored.\n"
    "# TYPE kvd_stored_bytes gauge\n"
    "kvd_stored_bytes 10\n"
    "# HELP kvd_commits_total Group commits applied to the map.\n"
    "# TYPE kvd_commits_total counter\n"
    "kvd_commits_total 7\n"
    "# HELP kvd_revision The store's revision: the last write applied.\n"
    "# TYPE kvd_revision gauge\n"
    "kvd_revision 9\n"
    "# HELP kvd_checkpoint_revision The revision the LMDB checkpoint holds.\n"
    "# TYPE kvd_checkpoint_revision gauge\n"
    "kvd_checkpoint_revision 8\n"
    "# HELP kvd_log_pending_bytes Log bytes not yet checkpointed into LMDB.\n"
    "# TYPE kvd_log_pending_bytes gauge\n"
    "kvd_log_pending_bytes 96\n"
    "# HELP kvd_checkpoint_duration_seconds Time to write one checkpoint and "
    "trim the log.\n"
    "# TYPE kvd_checkpoint_duration_seconds histogram\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"0.01\"} 0\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"0.05\"} 0\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"0.1\"} 0\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"0.25\"} 1\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"0.5\"} 1\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"1\"} 1\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"2.5\"} 1\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"5\"} 1\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"10\"} 1\n"
    "kvd_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 1\n"
    "kvd_checkpoint_duration_seconds_sum 0.25\n"
    "kvd_checkpoint_duration_seconds_count 1\n"
    "# HELP kvd_ttl_keys Keys with a time to live, expired ones not yet "
    "removed included.\n"
    "# TYPE kvd_ttl_keys gauge\n"
    "kvd_ttl_keys 3\n"
    "# HELP kvd_expired_total Keys removed at their expiry time since start.\n"
    "# TYPE kvd_expired_total counter\n"
    "kvd_expired_total 2\n"
    "# HELP kvd_expire_lag_seconds Per batch of expiries: how long after its "
    "expiry time the latest removal was written.\n"
    "# TYPE kvd_expire_lag_seconds histogram\n"
    "kvd_expire_lag_seconds_bucket{le=\"0.01\"} 0\n"
    "kvd_expire_lag_seconds_bucket{le=\"0.05\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"0.1\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"0.25\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"0.5\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"1\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"2.5\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"5\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"10\"} 1\n"
    "kvd_expire_lag_seconds_bucket{le=\"+Inf\"} 1\n"
    "kvd_expire_lag_seconds_sum 0.03\n"
    "kvd_expire_lag_seconds_count 1\n"
    "# HELP kvd_watches Open change feeds.\n"
    "# TYPE kvd_watches gauge\n"
    "kvd_watches 4\n"
    "# HELP kvd_list_duration_seconds Time to answer one listing, waiting for "
    "a checkpoint included.\n"
    "# TYPE kvd_list_duration_seconds histogram\n"
    "kvd_list_duration_seconds_bucket{le=\"0.0001\"} 0\n"
    "kvd_list_duration_seconds_bucket{le=\"0.00025\"} 0\n"
    "kvd_list_duration_seconds_bucket{le=\"0.0005\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.001\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.0025\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.005\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.01\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.025\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.05\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.1\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"0.25\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"1\"} 1\n"
    "kvd_list_duration_seconds_bucket{le=\"+Inf\"} 1\n"
    "kvd_list_duration_seconds_sum 0.0004\n"
    "kvd_list_duration_seconds_count 1\n"
    "# HELP kvd_image_build_duration_seconds Time to build one JSON image.\n"
    "# TYPE kvd_image_build_duration_seconds histogram\n"
    "kvd_image_build_duration_seconds_bucket{le=\"0.01\"} 0\n"
    "kvd_image_build_duration_seconds_bucket{le=\"0.05\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"0.1\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"0.25\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"0.5\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"1\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"2.5\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"5\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"10\"} 1\n"
    "kvd_image_build_duration_seconds_bucket{le=\"+Inf\"} 1\n"
    "kvd_image_build_duration_seconds_sum 0.02\n"
    "kvd_image_build_duration_seconds_count 1\n"
    "# HELP kvd_image_bytes Size of the newest JSON image.\n"
    "# TYPE kvd_image_bytes gauge\n"
    "kvd_image_bytes 123\n"
    "# HELP kvd_backup_duration_seconds Time to copy LMDB for one GET "
    "/_backup.\n"
    "# TYPE kvd_backup_duration_seconds histogram\n"
    "kvd_backup_duration_seconds_bucket{le=\"0.01\"} 0\n"
    "kvd_backup_duration_seconds_bucket{le=\"0.05\"} 0\n"
    "kvd_backup_duration_seconds_bucket{le=\"0.1\"} 0\n"
    "kvd_backup_duration_seconds_bucket{le=\"0.25\"} 0\n"
    "kvd_backup_duration_seconds_bucket{le=\"0.5\"} 0\n"
    "kvd_backup_duration_seconds_bucket{le=\"1\"} 0\n"
    "kvd_backup_duration_seconds_bucket{le=\"2.5\"} 1\n"
    "kvd_backup_duration_seconds_bucket{le=\"5\"} 1\n"
    "kvd_backup_duration_seconds_bucket{le=\"10\"} 1\n"
    "kvd_backup_duration_seconds_bucket{le=\"+Inf\"} 1\n"
    "kvd_backup_duration_seconds_sum 1.5\n"
    "kvd_backup_duration_seconds_count 1\n"
    "# HELP kvd_backups_total Backup copies made for GET /_backup.\n"
    "# TYPE kvd_backups_total counter\n"
    "kvd_backups_total 1\n"
    "# HELP kvd_open_connections Open client connections.\n"
    "# TYPE kvd_open_connections gauge\n"
    "kvd_open_connections 1\n"
    "# HELP kvd_connections_accepted_total Connections accepted.\n"
    "# TYPE kvd_connections_accepted_total counter\n"
    "kvd_connections_accepted_total 5\n"
    "# HELP kvd_connections_refused_total Connections refused at "
    "--max-connections.\n"
    "# TYPE kvd_connections_refused_total counter\n"
    "kvd_connections_refused_total 1\n"
    "# HELP kvd_ready 1 once the map is loaded.\n"
    "# TYPE kvd_ready gauge\n"
    "kvd_ready 1\n"
    "# HELP kvd_writes_disabled 1 after a failed fsync: writes refused until "
    "restart.\n"
    "# TYPE kvd_writes_disabled gauge\n"
    "kvd_writes_disabled 0\n";

KV_TEST(render_exact, "a small fixture renders to exactly the expected exposition text") {
  kv_metrics_t m;
  kv_metrics_gauges_t g = {.keys = 2, .bytes = 10, .conns = 1, .commits = 7,
                           .rev = 9, .ckpt_rev = 8, .log_pending = 96,
                           .ttl_keys = 3, .expired = 2, .watches = 4,
                           .ready = 1, .writes_failed = 0};
  char *text;
  kv_metrics_init(&m);
  kv_metrics_request(&m, HTTP_GET, 200, 0.00005);  /* le 0.0001 */
  kv_metrics_request(&m, HTTP_GET, 200, 0.0002);   /* le 0.00025 */
  kv_metrics_request(&m, HTTP_GET, 404, 0.002);    /* le 0.0025 */
  kv_metrics_request(&m, HTTP_PUT, 201, 0.25005);  /* le 1 */
  kv_metrics_request(&m, HTTP_PATCH, 418, 2.25);   /* other, other, +Inf */
  kv_hist_observe(&m.batch, 1);    /* le 1: bounds are inclusive */
  kv_hist_observe(&m.batch, 3);    /* le 4 */
  kv_hist_observe(&m.batch, 2048); /* +Inf */
  kv_hist_observe(&m.commit, 0.0007);
  kv_hist_observe(&m.image, 0.02);
  kv_hist_observe(&m.checkpoint, 0.25);
  kv_hist_observe(&m.list, 0.0004);
  kv_hist_observe(&m.expire_lag, 0.03);
  kv_hist_observe(&m.backup, 1.5);
  m.backups = 1;
  m.image_bytes = 123;
  m.conns_accepted = 5;
  m.conns_refused = 1;
  kv_metrics_error(&m, KV_ENOMEM);
  kv_metrics_error(&m, KV_ENOTFOUND);
  kv_metrics_error(&m, KV_ECODING);
  kv_metrics_error(&m, KV_ECODING);
  kv_metrics_error(&m, KV_ECODING);
  kv_metrics_error(&m, 0); /* not an error: not counted */
  text = render(&m, &g);
  CHECK_STR(text, fixture_text);
  free(text);
}
