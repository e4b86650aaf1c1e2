/* feed.c - watches: the index, live delivery and catching up from the log.
 *
 * Each watch has a position, `from`: every matching change before it has
 * been taken.  Live changes after q_from are queued for it as they are
 * applied; a gap between from and q_from (a watch that starts in the past,
 * or whose queue overflowed and was dropped) is read from the revision
 * log by a catch-up job on a thread of its own, and delivered before the
 * queue.  So a watch never misses a change or sees one twice, and one
 * that does not read costs at most its queue.
 *
 * The index maps a key, or a prefix, to the watches on it.  A write looks
 * up its own key, and each prefix of it whose length some prefix watch
 * has: the work per write depends on the lengths watched, not on how
 * many watches there are.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "kv/error.h"
#include "kv/image.h"
#include "kv/log.h"
#include "kv/thread.h"
#include "store_int.h"

/* Catch-up jobs running at once; more wait their turn. */
#define KV_FEED_JOBS 2
/* One catch-up job stops after this many change bytes: a watch far
 * behind alternates reading and sending. */
#define KV_FEED_JOB_BYTES ((size_t)256 << 10)

struct kv_watch {
  kv_watch_t *next;  /* index bucket chain */
  kv_watch_t *rnext; /* ready list, or job queue */
  char *key;
  size_t klen;
  int exact;
  uint32_t hash;
  uint64_t from;    /* every match before it was taken */
  uint64_t q_from;  /* the queue holds every match from here on */
  kv_change_t **q;  /* ring */
  size_t qhead, qn, qcap, qbytes;
  kv_change_t **hist; /* a finished catch-up job's changes */
  size_t hn, hi;
  uint64_t hist_to;   /* the last revision that job covered */
  int err;            /* the watch failed: take says so */
  unsigned job : 1;      /* a catch-up job runs or waits for a thread */
  unsigned dead : 1;     /* unwatched while its job ran */
  unsigned notified : 1; /* ready ran; nothing taken since */
  unsigned listed : 1;   /* on the ready list */
  kv_watch_cb ready;
  void *data;
};

typedef struct kv_job {
  struct kv_job *next;
  kv_store_t *s;
  kv_watch_t *w;
  uint64_t from, to;   /* revisions to read */
  uint64_t reached;    /* the last one read */
  kv_change_t **out;
  size_t n, cap, bytes;
  int rc;
  int collapsed;       /* read from LMDB: the latest change of each key */
} kv_job_t;

struct kv_feed {
  kv_watch_t **tab; /* the index */
  size_t cap, n;
  uint32_t plens[KV_KEY_MAX + 1]; /* prefix watches by prefix length */
  uint16_t lens[KV_KEY_MAX + 1];  /* the lengths in use, ascending */
  size_t nlens;
  kv_watch_t *ready, **ready_tail;
  kv_watch_t *jobq, **jobq_tail; /* watches waiting for a job thread */
  size_t running;
  kv_job_t *done;  /* finished jobs, from their threads */
  uv_mutex_t mu;   /* guards done */
  uv_async_t async;
};

void kv_change_unref(kv_change_t *c) {
  if (c && --c->refs == 0) free(c);
}

static kv_change_t *change_new(const kv_op_t *op) {
  char *p;
  size_t len;
  kv_change_t *c;

  if (kv_image_change(op->rev, op->op, op->key, op->val,
                      offsetof(kv_change_t, json), &p, &len) != 0)
    return NULL;
  c = (kv_change_t *)(void *)p;
  c->refs = 1;
  c->op = (uint8_t)op->op;
  c->rev = op->rev;
  c->len = len;
  return c;
}

static int watch_matches(const kv_watch_t *w, const char *key, size_t klen) {
  if (w->exact) return klen == w->klen && memcmp(key, w->key, klen) == 0;
  return klen >= w->klen && memcmp(key, w->key, w->klen) == 0;
}

/* ---- the index ---------------------------------------------------------- */

static uint32_t index_hash(kv_store_t *s, const char *key, size_t len,
                           int exact) {
  return kv_map_hash(s->map, key, len) ^ (exact ? 0x9e3779b9u : 0);
}

static int index_grow(struct kv_feed *f) {
  size_t cap = f->cap ? f->cap * 2 : 64;
  kv_watch_t **tab = calloc(cap, sizeof *tab);

  if (!tab) return KV_ENOMEM;
  for (size_t i = 0; i < f->cap; i++) {
    kv_watch_t *w = f->tab[i], *next;
    for (; w; w = next) {
      next = w->next;
      w->next = tab[w->hash & (cap - 1)];
      tab[w->hash & (cap - 1)] = w;
    }
  }
  free(f->tab);
  f->tab = tab;
  f->cap = cap;
  return 0;
}

static void lens_update(struct kv_feed *f) {
  f->nlens = 0;
  for (size_t l = 0; l <= KV_KEY_MAX; l++)
    if (f->plens[l]) f->lens[f->nlens++] = (uint16_t)l;
}

static int index_add(kv_store_t *s, kv_watch_t *w) {
  struct kv_feed *f = s->feed;
  kv_watch_t **b;

  if (f->n + 1 > f->cap / 2 && index_grow(f) != 0) return KV_ENOMEM;
  w->hash = index_hash(s, w->key, w->klen, w->exact);
  b = &f->tab[w->hash & (f->cap - 1)];
  w->next = *b;
  *b = w;
  f->n++;
  /* A prefix longer than any key can match none: it needs no length. */
  if (!w->exact && w->klen <= KV_KEY_MAX && f->plens[w->klen]++ == 0)
    lens_update(f);
  return 0;
}

static void index_del(kv_store_t *s, kv_watch_t *w) {
  struct kv_feed *f = s->feed;
  kv_watch_t **pp = &f->tab[w->hash & (f->cap - 1)];

  while (*pp && *pp != w) pp = &(*pp)->next;
  if (*pp) *pp = w->next;
  f->n--;
  if (!w->exact && w->klen <= KV_KEY_MAX && --f->plens[w->klen] == 0)
    lens_update(f);
}

/* ---- delivery ----------------------------------------------------------- */

static void mark_ready(struct kv_feed *f, kv_watch_t *w) {
  if (w->notified || w->listed) return;
  w->listed = 1;
  w->rnext = NULL;
  *f->ready_tail = w;
  f->ready_tail = &w->rnext;
}

static void unlist(struct kv_feed *f, kv_watch_t *w) {
  kv_watch_t **pp = &f->ready;

  if (!w->listed) return;
  while (*pp && *pp != w) pp = &(*pp)->rnext;
  if (*pp) *pp = w->rnext;
  if (f->ready_tail == &w->rnext) f->ready_tail = pp;
  w->listed = 0;
}

static void queue_drop(kv_watch_t *w) {
  while (w->qn) {
    kv_change_unref(w->q[w->qhead]);
    w->qhead = (w->qhead + 1) % w->qcap;
    w->qn--;
  }
  w->qhead = 0;
  w->qbytes = 0;
}

/* Queues c for w; a queue that would pass KV_WATCH_BUF (or cannot grow)
 * is dropped instead, and the log covers it. */
static void queue_push(kv_watch_t *w, kv_change_t *c) {
  if (c->rev < w->q_from) return;
  if (w->qbytes + c->len > KV_WATCH_BUF ||
      (w->qn == w->qcap && w->qcap >= 65536)) {
    queue_drop(w);
    w->q_from = c->rev + 1; /* c itself is read from the log */
    return;
  }
  if (w->qn == w->qcap) {
    size_t cap = w->qcap ? w->qcap * 2 : 8;
    kv_change_t **q = malloc(cap * sizeof *q);
    if (!q) {
      queue_drop(w);
      w->q_from = c->rev + 1;
      return;
    }
    for (size_t i = 0; i < w->qn; i++) q[i] = w->q[(w->qhead + i) % w->qcap];
    free(w->q);
    w->q = q;
    w->qcap = cap;
    w->qhead = 0;
  }
  c->refs++;
  w->q[(w->qhead + w->qn++) % w->qcap] = c;
  w->qbytes += c->len;
}

static void deliver(kv_store_t *s, kv_watch_t *w, kv_change_t **c,
                    const kv_op_t *op) {
  if (!*c && !(*c = change_new(op))) {
    /* Without memory for the change, the log still has it. */
    queue_drop(w);
    if (w->q_from <= op->rev) w->q_from = op->rev + 1;
  } else {
    queue_push(w, *c);
  }
  mark_ready(s->feed, w);
}

void kv__feed_publish(kv_store_t *s, const kv_op_t *op) {
  struct kv_feed *f = s->feed;
  kv_change_t *c = NULL;
  kv_watch_t *w;

  if (f->n == 0) return;
  for (w = f->tab[index_hash(s, op->key.ptr, op->key.len, 1) & (f->cap - 1)];
       w; w = w->next)
    if (w->exact && watch_matches(w, op->key.ptr, op->key.len))
      deliver(s, w, &c, op);
  for (size_t i = 0; i < f->nlens && f->lens[i] <= op->key.len; i++) {
    uint32_t h = index_hash(s, op->key.ptr, f->lens[i], 0);
    for (w = f->tab[h & (f->cap - 1)]; w; w = w->next)
      if (!w->exact && w->hash == h && w->klen == f->lens[i] &&
          watch_matches(w, op->key.ptr, op->key.len))
        deliver(s, w, &c, op);
  }
  kv_change_unref(c);
}

/* Runs the callbacks of the watches that became ready.  Never from inside
 * the apply loop: a callback may end its own watch, or another. */
void kv__feed_notify(kv_store_t *s) {
  struct kv_feed *f = s->feed;
  kv_watch_t *w;

  while ((w = f->ready) != NULL) {
    f->ready = w->rnext;
    if (!f->ready) f->ready_tail = &f->ready;
    w->listed = 0;
    w->notified = 1;
    w->ready(w->data);
  }
}

/* ---- catching up -------------------------------------------------------- */

static int job_keep(kv_job_t *j, kv_change_t *c) {
  if (j->n == j->cap) {
    size_t cap = j->cap ? j->cap * 2 : 64;
    kv_change_t **out = realloc(j->out, cap * sizeof *out);
    if (!out) return KV_ENOMEM;
    j->out = out;
    j->cap = cap;
  }
  j->out[j->n++] = c;
  j->bytes += c->len;
  return 0;
}

/* kv_revlog_fn: keeps the matches, up to the job's budget. */
static int job_op(void *ctx, const kv_op_t *op) {
  kv_job_t *j = ctx;
  kv_change_t *c;

  j->reached = op->rev;
  if (!watch_matches(j->w, op->key.ptr, op->key.len)) return 0;
  if (!(c = change_new(op)) || job_keep(j, c) != 0) {
    free(c);
    return KV_ENOMEM;
  }
  return j->bytes >= KV_FEED_JOB_BYTES ? KV_ESTOP : 0;
}

/* For the collapsed history: keeps every match, whatever the budget. */
static int job_any(void *ctx, const kv_op_t *op) {
  kv_job_t *j = ctx;
  kv_change_t *c;

  if (!watch_matches(j->w, op->key.ptr, op->key.len)) return 0;
  if (!(c = change_new(op)) || job_keep(j, c) != 0) {
    free(c);
    return KV_ENOMEM;
  }
  return 0;
}

static int by_rev(const void *a, const void *b) {
  const kv_change_t *x = *(kv_change_t *const *)a;
  const kv_change_t *y = *(kv_change_t *const *)b;
  return (x->rev > y->rev) - (x->rev < y->rev);
}

/* The log no longer holds the start: send the latest change of each key
 * that changed since, as LMDB (its values and tombstones) has them, in
 * revision order, up to just before the log's first revision; from there
 * the log has every change, so the feed is exact again (a key changed
 * since is left to the log's changes).
 * The changes are not reference-counted yet, so sorting them here is
 * safe. */
static int job_collapsed(kv_job_t *j) {
  kv_ckpt_snap_t *snap;
  uint64_t c_rev, upto;
  int rc = kv_ckpt_snap_open(j->s->ckpt, j->w->key, j->w->klen, &snap);

  if (rc != 0) return rc;
  uint64_t first = kv_revlog_first(j->s->log);

  rc = kv_ckpt_snap_rev(snap, &c_rev);
  upto = c_rev < j->to ? c_rev : j->to;
  if (first && first - 1 < upto) upto = first - 1;
  if (upto < j->from) upto = j->from - 1; /* the log caught up: nothing */
  if (rc == 0) rc = kv_ckpt_snap_changes(snap, j->from - 1, upto, job_any, j);
  kv_ckpt_snap_close(snap);
  if (rc != 0) return rc;
  if (j->n) qsort(j->out, j->n, sizeof *j->out, by_rev);
  j->reached = upto;
  j->collapsed = 1;
  return 0;
}

/* Hands a finished (or failed) job to the listener (jobs_done). */
static void job_hand_back(struct kv_feed *f, kv_job_t *j) {
  uv_mutex_lock(&f->mu);
  j->next = f->done;
  f->done = j;
  uv_mutex_unlock(&f->mu);
  uv_async_send(&f->async);
}

static void *job_thread(void *arg) {
  kv_job_t *j = arg;

  kv_thread_nice(KV_NICE_COPY);
  j->reached = j->from - 1;
  j->rc = kv_revlog_scan(j->s->log, j->from, j->to, job_op, j);
  if (j->rc == KV_ENOTFOUND) j->rc = job_collapsed(j);
  job_hand_back(j->s->feed, j);
  return NULL;
}

static void job_free(kv_job_t *j) {
  for (size_t i = 0; i < j->n; i++) kv_change_unref(j->out[i]);
  free(j->out);
  free(j);
}

static void watch_free(kv_watch_t *w) {
  queue_drop(w);
  free(w->q);
  for (size_t i = w->hi; i < w->hn; i++) kv_change_unref(w->hist[i]);
  free(w->hist);
  free(w->key);
  free(w);
}

/* Starts the catch-up jobs that have a thread free. */
static void jobs_start(kv_store_t *s) {
  struct kv_feed *f = s->feed;
  kv_watch_t *w;

  while (f->running < KV_FEED_JOBS && (w = f->jobq) != NULL) {
    kv_job_t *j = calloc(1, sizeof *j);
    int ok;

    if (!j) return; /* tried again at the next take or completion */
    f->jobq = w->rnext;
    if (!f->jobq) f->jobq_tail = &f->jobq;
    j->s = s;
    j->w = w;
    j->from = w->from;
    j->to = w->q_from - 1;
    ok = kv_thread_start(job_thread, j) == 0;
    f->running++;
    if (!ok) {
      j->rc = KV_ENOMEM;
      job_hand_back(f, j);
    }
  }
}

static void job_want(kv_store_t *s, kv_watch_t *w) {
  struct kv_feed *f = s->feed;

  if (w->job) return;
  w->job = 1;
  w->rnext = NULL;
  *f->jobq_tail = w;
  f->jobq_tail = &w->rnext;
  jobs_start(s);
}

static void jobs_done(uv_async_t *h) {
  kv_store_t *s = h->data;
  struct kv_feed *f = s->feed;
  kv_job_t *j, *next;

  uv_mutex_lock(&f->mu);
  j = f->done;
  f->done = NULL;
  uv_mutex_unlock(&f->mu);
  for (; j; j = next) {
    kv_watch_t *w = j->w;
    next = j->next;
    f->running--;
    w->job = 0;
    if (w->dead) {
      watch_free(w);
      job_free(j);
      continue;
    }
    /* A deletion the collapsed read needed was forgotten meanwhile. */
    if (j->rc == 0 && j->collapsed && j->from - 1 < s->tombs.forgot)
      j->rc = KV_EGONE;
    if (j->rc != 0) {
      w->err = j->rc;
      if (j->rc != KV_EGONE)
        kv_log_warn("%s: cannot read the change history: %s", s->dir,
                    kv_strerror(j->rc));
    } else if (j->n == 0) {
      if (w->from <= j->reached) w->from = j->reached + 1;
    } else {
      w->hist = j->out;
      w->hn = j->n;
      w->hi = 0;
      w->hist_to = j->reached;
      j->out = NULL;
      j->n = 0;
    }
    job_free(j);
    mark_ready(f, w);
  }
  jobs_start(s);
  kv__feed_notify(s);
  kv__store_schedule(s);
}

/* ---- the watch API ------------------------------------------------------- */

int kv_store_watch(kv_store_t *s, const kv_watch_opts_t *o,
                   kv_watch_t **out) {
  kv_watch_t *w = calloc(1, sizeof *w);

  *out = NULL;
  if (!w || !(w->key = malloc(o->klen + 1))) {
    free(w);
    return KV_ENOMEM;
  }
  /* A deletion after since was forgotten: the client must list and
   * resume from the listing's revision. */
  if (o->since < s->tombs.forgot) {
    free(w->key);
    free(w);
    return KV_EGONE;
  }
  memcpy(w->key, o->key, o->klen);
  w->klen = o->klen;
  w->exact = o->exact;
  w->from = o->since + 1;
  w->q_from = s->rev + 1;
  w->ready = o->ready;
  w->data = o->data;
  if (index_add(s, w) != 0) {
    free(w->key);
    free(w);
    return KV_ENOMEM;
  }
  /* The first take asks for anything there is. */
  w->notified = 1;
  *out = w;
  return 0;
}

int kv_store_watch_take(kv_store_t *s, kv_watch_t *w, kv_change_t **arr,
                        size_t max, size_t max_bytes) {
  size_t n = 0, bytes = 0;

  if (w->err) return w->err;
  /* What a catch-up job read comes first: it is older than the queue. */
  while (w->hist && w->hi < w->hn && n < max && bytes < max_bytes) {
    kv_change_t *c = w->hist[w->hi++];
    arr[n++] = c;
    bytes += c->len;
    w->from = c->rev + 1;
  }
  if (w->hist && w->hi == w->hn) {
    free(w->hist);
    w->hist = NULL;
    w->hn = w->hi = 0;
    if (w->from <= w->hist_to) w->from = w->hist_to + 1;
  }
  if (w->hist) return (int)n;
  if (w->from < w->q_from) {
    if (!w->job) job_want(s, w);
    w->notified = 0; /* the job's end says when */
    return (int)n;
  }
  while (w->qn && n < max && bytes < max_bytes) {
    kv_change_t *c = w->q[w->qhead];
    w->qhead = (w->qhead + 1) % w->qcap;
    w->qn--;
    w->qbytes -= c->len;
    if (c->rev < w->from) {
      kv_change_unref(c);
      continue;
    }
    arr[n++] = c;
    bytes += c->len;
    w->from = c->rev + 1;
  }
  if (w->qn == 0) w->notified = 0; /* the next match calls ready */
  return (int)n;
}

uint64_t kv_store_watch_position(const kv_store_t *s, const kv_watch_t *w) {
  if (w->hist || w->from < w->q_from) return w->from - 1;
  if (w->qn) return w->q[w->qhead]->rev - 1;
  return s->rev > w->from - 1 ? s->rev : w->from - 1;
}

void kv_store_unwatch(kv_store_t *s, kv_watch_t *w) {
  struct kv_feed *f = s->feed;

  if (!w) return;
  index_del(s, w);
  unlist(f, w);
  if (w->job) {
    /* Waiting for a thread: just forget it.  Running: its end frees. */
    kv_watch_t **pp = &f->jobq;
    while (*pp && *pp != w) pp = &(*pp)->rnext;
    if (*pp) {
      *pp = w->rnext;
      if (f->jobq_tail == &w->rnext) f->jobq_tail = pp;
      watch_free(w);
      return;
    }
    w->dead = 1;
    return;
  }
  watch_free(w);
}

size_t kv_store_watches(const kv_store_t *s) { return s->feed->n; }

int kv__feed_init(kv_store_t *s) {
  struct kv_feed *f = calloc(1, sizeof *f);

  if (!f) return KV_ENOMEM;
  f->ready_tail = &f->ready;
  f->jobq_tail = &f->jobq;
  uv_mutex_init(&f->mu);
  uv_async_init(s->loop, &f->async, jobs_done);
  f->async.data = s;
  s->feed = f;
  return 0;
}

int kv__feed_idle(const kv_store_t *s) {
  return !s->feed || (s->feed->running == 0 && !s->feed->done);
}

void kv__feed_close(kv_store_t *s) {
  if (s->feed) uv_close((uv_handle_t *)&s->feed->async, NULL);
}

void kv__feed_free(kv_store_t *s) {
  struct kv_feed *f = s->feed;

  if (!f) return;
  /* Watches belong to their connections, which end them first. */
  free(f->tab);
  uv_mutex_destroy(&f->mu);
  free(f);
  s->feed = NULL;
}
