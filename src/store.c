/* store.c - the store: opening and replaying, reading, and the one
 * scheduler of the log, the checkpoint and the image.
 *
 * Every part reports its completion here (kv__store_committed, ckpt_done,
 * the imager through kv__store_schedule), and kv__store_schedule decides
 * what runs next: a spare log segment, an image build, a checkpoint, the
 * next group commit, the end of a drain.  Writes reach LMDB only through
 * checkpoints: batches of logged writes applied in one synced transaction
 * that also records the last revision it holds, after which the log
 * segments it covers are removed.  So LMDB is never ahead of the map, and
 * never holds a transaction that was not synced. */
#include "store_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/error.h"
#include "kv/log.h"
#include "kv/thread.h"

static void ckpt_done(uv_async_t *h);

/* ---- the map and the expiry heap, which change together ------------------ */

/* Puts rec in the map, taking over the caller's reference, and in the
 * expiry heap if it expires.  Returns 0 or KV_ENOMEM (rec is in the map
 * but not the heap). */
static int map_set(kv_store_t *s, kv_rec_t *rec) {
  kv_rec_t *old;

  kv_map_put(s->map, rec, &old);
  if (old) {
    kv_ttl_remove(&s->ttl, old);
    kv_rec_unref(old);
  }
  return rec->expires ? kv_ttl_add(&s->ttl, rec) : 0;
}

static void map_unset(kv_store_t *s, const char *key, size_t klen) {
  kv_rec_t *old = kv_map_del(s->map, key, klen);

  if (old) {
    kv_ttl_remove(&s->ttl, old);
    kv_rec_unref(old);
  }
}

/* Rebuilds the map from LMDB.  Records are copied out of the snapshot,
 * because LMDB's pages are only valid while its transaction is open. */
static int store_load(kv_store_t *s) {
  kv_ckpt_snap_t *snap = NULL;
  kv_item_t it;
  uint64_t keys = 0;
  int rc;

  rc = kv_ckpt_stat(s->ckpt, &keys, &s->rev);
  if (rc != 0) return rc;
  if (keys <= SIZE_MAX)
    (void)kv_map_reserve(s->map, (size_t)keys); /* only an optimisation */
  rc = kv_ckpt_snap_open(s->ckpt, NULL, 0, &snap);
  if (rc != 0) goto out;
  while ((rc = kv_ckpt_snap_next(snap, &it)) == 1) {
    kv_rec_t *rec;
    /* Every key and value was checked on the way in, so one that fails
     * now was damaged on disk: refuse to serve it rather than spread it. */
    if (it.key.len == 0 || it.key.len > KV_KEY_MAX ||
        it.val.len > UINT32_MAX || it.rev > s->rev ||
        !kv_utf8_valid(it.key.ptr, it.key.len) ||
        !kv_utf8_valid(it.val.ptr, it.val.len)) {
      rc = KV_ECORRUPT;
      goto out;
    }
    rc = kv_rec_new(it.key.ptr, it.key.len, it.val.len, &rec);
    if (rc != 0) goto out;
    memcpy(kv_rec_value_mut(rec), it.val.ptr, it.val.len);
    rec->vlen = (uint32_t)it.val.len;
    rec->rev = it.rev;
    /* A key that expired while kvd was down stays until its removal is
     * written, right after start; readers do not see it meanwhile. */
    rec->expires = it.expires;
    rc = map_set(s, rec);
    if (rc != 0) goto out;
  }
out:
  if (snap) kv_ckpt_snap_close(snap);
  return rc;
}

/* A checkpoint starts once this much log waits for it, or its oldest write
 * has waited this long, or an image or a drain needs LMDB caught up. */
#define KV_CKPT_BYTES ((uint64_t)16 << 20)
#define KV_CKPT_MS 5000
/* Past this much log not yet in LMDB, new batches wait for the checkpoint
 * (the log between checkpoints is bounded by it plus one batch). */
#define KV_LOG_MAX ((uint64_t)256 << 20)
/* A checkpoint that found no disk space is retried after this. */
#define KV_CKPT_RETRY_MS 1000

/* ---- the checkpoint queue ------------------------------------------------ */

static void ckq_release(kv_ckq_t *q, size_t n) {
  for (size_t i = 0; i < n; i++) {
    kv_rec_unref(q[i].rec);
    free(q[i].key);
  }
}

/* Queues a write that is now in the map and the log.  The map's record
 * (PUT) is referenced; a deleted key is copied.  Returns 0 or KV_ENOMEM. */
static int ckq_push(kv_store_t *s, const kv_op_t *op, kv_rec_t *rec) {
  kv_ckq_t *e;

  if (s->ckq_n == s->ckq_cap) {
    size_t cap = s->ckq_cap ? s->ckq_cap * 2 : 256;
    kv_ckq_t *q = realloc(s->ckq, cap * sizeof *q);
    if (!q) return KV_ENOMEM;
    s->ckq = q;
    s->ckq_cap = cap;
  }
  e = &s->ckq[s->ckq_n];
  e->op = *op;
  e->rec = NULL;
  e->key = NULL;
  if (op->op == KV_OP_PUT) {
    e->rec = kv_rec_ref(rec);
    e->op.key.ptr = kv_rec_key(rec);
    e->op.val.ptr = kv_rec_value(rec);
  } else {
    if (!(e->key = malloc(op->key.len + 1))) return KV_ENOMEM;
    memcpy(e->key, op->key.ptr, op->key.len);
    e->op.key.ptr = e->key;
  }
  e->bytes = kv_revlog_size(op, 1);
  if (s->ckq_n++ == 0) s->ckq_since = uv_now(s->loop);
  s->ckq_bytes += e->bytes;
  return 0;
}

/* Puts a failed checkpoint's writes back in front of the queue. */
static void ckq_requeue(kv_store_t *s) {
  size_t n = s->ck_fly_n + s->ckq_n;
  kv_ckq_t *q = s->ck_fly;

  if (s->ckq_n) {
    q = realloc(s->ck_fly, n * sizeof *q);
    if (!q) abort(); /* cannot keep the writes LMDB still lacks */
    memcpy(q + s->ck_fly_n, s->ckq, s->ckq_n * sizeof *q);
    free(s->ckq);
  }
  s->ckq = q;
  s->ckq_n = s->ckq_cap = n;
  s->ckq_bytes += s->ck_fly_bytes;
  s->ck_fly = NULL;
  s->ck_fly_n = 0;
  s->ck_fly_bytes = 0;
}

/* ---- loading -------------------------------------------------------------- */

/* Applies one replayed log record to the map and queues it for the next
 * checkpoint, since LMDB does not hold it. */
static int replay_apply(void *ctx, const kv_op_t *op) {
  kv_store_t *s = ctx;
  kv_rec_t *rec = NULL;
  int rc;

  if (!kv_utf8_valid(op->key.ptr, op->key.len) ||
      !kv_utf8_valid(op->val.ptr, op->val.len) || op->val.len > UINT32_MAX)
    return KV_ECORRUPT;
  if (op->op == KV_OP_PUT) {
    rc = kv_rec_new(op->key.ptr, op->key.len, op->val.len, &rec);
    if (rc != 0) return rc;
    memcpy(kv_rec_value_mut(rec), op->val.ptr, op->val.len);
    rec->vlen = (uint32_t)op->val.len;
    rec->rev = op->rev;
    rec->expires = op->expires;
    rc = map_set(s, rec);
    if (rc != 0) return rc;
  } else {
    map_unset(s, op->key.ptr, op->key.len);
  }
  s->rev = op->rev;
  return ckq_push(s, op, rec);
}

static int store_replay(kv_store_t *s, const kv_config_t *cfg, char *errbuf,
                        size_t errlen) {
  uint64_t last;
  int rc;

  rc = kv_revlog_open(s->dir, cfg->sync, cfg->log_segment, 0, &s->log,
                      errbuf, errlen);
  if (rc == 0)
    rc = kv_revlog_replay(s->log, s->ckpt_rev, replay_apply, s, &last,
                          errbuf, errlen);
  if (rc != 0 && !errbuf[0])
    snprintf(errbuf, errlen, "cannot replay the log: %s", kv_strerror(rc));
  return rc;
}

int kv_store_open(uv_loop_t *loop, const kv_config_t *cfg,
                  kv_metrics_t *metrics, kv_store_t **out, char *errbuf,
                  size_t errlen) {
  const char *dir = cfg->data;
  kv_store_t *s;
  uint64_t t0 = uv_hrtime();
  int rc;

  errbuf[0] = '\0';
  s = calloc(1, sizeof(*s));
  if (!s || !(s->dir = strdup(dir))) {
    rc = KV_ENOMEM;
    snprintf(errbuf, errlen, "%s", kv_strerror(rc));
    goto fail;
  }
  s->loop = loop;
  s->metrics = metrics;
  s->pend_tail = &s->pend_head;
  rc = kv_ckpt_open(dir, 0, cfg->max_readers, &s->ckpt, errbuf, errlen);
  if (rc != 0) goto fail;
  if (cfg->map_size &&
      (rc = kv_ckpt_set_mapsize(s->ckpt, cfg->map_size)) != 0) {
    snprintf(errbuf, errlen, "cannot set the map size: %s",
             kv_strerror(rc));
    goto fail;
  }
  rc = kv_map_new(&s->map);
  if (rc == 0) rc = store_load(s);
  if (rc != 0) {
    snprintf(errbuf, errlen, "cannot load the data: %s", kv_strerror(rc));
    goto fail;
  }
  s->ckpt_rev = s->rev;
  /* The map holds its own copies now: the reload's LMDB pages need not
   * count in kvd's memory. */
  kv_ckpt_release_pages(s->ckpt);
  rc = store_replay(s, cfg, errbuf, errlen);
  if (rc != 0) goto fail;
  /* The loaded map may need rehash steps; finish them before serving. */
  while (kv_map_rehash_step(s->map, 1024)) {
  }
  uv_timer_init(loop, &s->image_timer);
  s->image_timer.data = s;
  kv__imager_init(s);
  uv_async_init(loop, &s->ckpt_async, ckpt_done);
  s->ckpt_async.data = s;
  kv__expirer_init(s);
  kv__lister_init(s);
  if (kv__feed_init(s) != 0) abort(); /* a few bytes, at start-up */
  s->history = cfg->history;
  s->tomb_ms = cfg->tomb_secs * 1000;
  s->tombs = kv_ckpt_tombs(s->ckpt);
  kv__backup_init(s);
  kv__expirer_arm(s); /* keys that expired while kvd was down go first */
  kv_log_info("loaded %zu keys (%llu bytes) at revision %llu from %s in "
              "%llu ms (%zu from the log)", kv_map_count(s->map),
              (unsigned long long)kv_map_bytes(s->map),
              (unsigned long long)s->rev, dir,
              (unsigned long long)((uv_hrtime() - t0) / 1000000), s->ckq_n);
  /* The image on disk may predate a crash; build a fresh one now so the
   * first GET / is served at once. */
  kv__imager_changed(s);
  *out = s;
  return 0;
fail:
  if (s) {
    ckq_release(s->ckq, s->ckq_n);
    free(s->ckq);
    kv_ttl_free(&s->ttl);
    if (s->map) kv_map_free(s->map);
    kv_revlog_close(s->log);
    if (s->ckpt) kv_ckpt_close(s->ckpt);
    free(s->dir);
    free(s);
  }
  return rc;
}

kv_rec_t *kv_store_get(kv_store_t *s, const char *key, size_t klen) {
  kv_rec_t *r = kv_map_get(s->map, key, klen);

  /* Gone for every reader from its expiry time on, removal written or
   * not. */
  return r && r->expires && kv_rec_expired(r, kv_ttl_now()) ? NULL : r;
}

/* ---- group commit results ------------------------------------------------ */

void kv__store_committed(kv_store_t *s, kv_write_t *batch, int rc) {
  kv_write_t *w, *next;

  if (s->metrics && rc == 0) {
    kv_hist_observe(&s->metrics->batch, (double)s->ops_n);
    kv_hist_observe(&s->metrics->commit, (double)s->commit_ns / 1e9);
  }
  if (s->metrics && rc != 0) kv_metrics_error(s->metrics, rc);
  if (rc == 0) {
    s->commits++;
  } else if (rc == KV_EIO) {
    /* After a failed fsync the kernel may have dropped the dirty pages,
     * so a retry could report success for data that is not on disk (the
     * PostgreSQL "fsyncgate" lesson).  Stop taking writes; the map still
     * holds exactly the durable state, so reads go on. */
    s->failed = 1;
    kv_log_error("%s: commit failed (%s): writes are disabled until kvd is "
                 "restarted; check the disk", s->dir, kv_strerror(rc));
  } else if (rc != KV_EREADONLY) {
    kv_log_warn("%s: commit failed: %s", s->dir, kv_strerror(rc));
  }
  /* Apply everything first, so each answer's Kvd-Revision covers the
   * whole batch as the client's next read will see it.  Ops are in
   * revision order; a PUT's record is its write's, the next one with that
   * revision.  Memory for the heap or the queue is all that could fail
   * here, after the write is durable: there is no way to answer it
   * honestly but to stop. */
  w = batch;
  for (size_t i = 0; rc == 0 && i < s->ops_n; i++) {
    kv_op_t *op = &s->ops[i];
    kv_rec_t *rec = NULL;
    if (op->op == KV_OP_PUT) {
      while (w && w->rev != op->rev) w = w->next;
      assert(w != NULL && w->op == KV_OP_PUT);
      rec = w->rec;
      if (map_set(s, kv_rec_ref(rec)) != 0) abort();
    } else {
      map_unset(s, op->key.ptr, op->key.len);
      if (op->op == KV_OP_EXPIRE) s->expired++;
    }
    s->rev = op->rev;
    if (ckq_push(s, op, rec) != 0) abort();
    kv__feed_publish(s, op);
  }
  s->ops_n = 0;
  for (w = batch; w; w = next) {
    next = w->next;
    w->next = NULL;
    if (w->op == KV_OP_PUT) kv_rec_unref(w->rec);
    w->rec = NULL;
    w->done(w, rc, rc == 0 && w->existed);
  }
  kv__expirer_landed(s, rc);
  kv__feed_notify(s);
  if (rc == 0) kv__imager_changed(s);
  kv__store_schedule(s);
}

/* ---- checkpoints ----------------------------------------------------------- */

/* The checkpoint's own thread, below the listener's priority: on a busy
 * core its LMDB work yields to requests, and the log's bound (KV_LOG_MAX)
 * holds writes back if it ever falls too far behind. */
static void *ckpt_thread(void *arg) {
  kv_store_t *s = arg;
  uint64_t t0 = uv_hrtime();
  int rc;

  kv_thread_nice(KV_NICE_CHECKPOINT);
  /* The op list is made here, not on the listener: a checkpoint can hold
   * hundreds of thousands of writes. */
  if (s->ck_ops_cap < s->ck_fly_n || !s->ck_ops) {
    size_t cap = s->ck_fly_n ? s->ck_fly_n : 1;
    kv_op_t *ops = realloc(s->ck_ops, cap * sizeof *ops);
    if (!ops) {
      s->ckpt_rc = KV_ENOMEM;
      s->ckpt_ns = uv_hrtime() - t0;
      uv_async_send(&s->ckpt_async);
      return NULL;
    }
    s->ck_ops = ops;
    s->ck_ops_cap = cap;
  }
  for (size_t i = 0; i < s->ck_fly_n; i++) s->ck_ops[i] = s->ck_fly[i].op;
  kv_ckpt_set_prune(s->ckpt, s->ck_keep,
                    s->ck_now > s->tomb_ms ? s->ck_now - s->tomb_ms : 0,
                    s->ck_now);
  s->ckpt_rc = kv_ckpt_commit(s->ckpt, s->ck_ops, s->ck_fly_n);
  s->ck_tombs = kv_ckpt_tombs(s->ckpt);
  /* The deleted keys' copies are no longer needed once LMDB has them;
   * freeing them here spares the listener.  (Records, whose references
   * only the listener may drop, stay for ckpt_done.) */
  for (size_t i = 0; s->ckpt_rc == 0 && i < s->ck_fly_n; i++) {
    free(s->ck_fly[i].key);
    s->ck_fly[i].key = NULL;
  }
  if (s->ckpt_rc == 0 && s->ck_fly_n) {
    /* Only now may the segments the checkpoint covers go, and only those
     * the change feed's exact history does not need. */
    uint64_t upto = s->ck_ops[s->ck_fly_n - 1].rev;
    rc = kv_revlog_trim(s->log, upto < s->ck_keep ? upto : s->ck_keep);
    if (rc != 0)
      kv_log_warn("%s: cannot remove old log segments: %s", s->dir,
                  kv_strerror(rc));
  }
  s->ckpt_ns = uv_hrtime() - t0;
  uv_async_send(&s->ckpt_async);
  return NULL;
}

static void ckpt_done(uv_async_t *h) {
  kv_store_t *s = h->data;
  int rc = s->ckpt_rc;

  if (!s->ck_running) return; /* a coalesced or stray wakeup */
  s->ck_running = 0;
  s->checkpointing = 0;
  if (rc == 0) {
    if (s->ck_fly_n) s->ckpt_rev = s->ck_ops[s->ck_fly_n - 1].rev;
    s->tombs = s->ck_tombs;
    ckq_release(s->ck_fly, s->ck_fly_n);
    free(s->ck_fly);
    s->ck_fly = NULL;
    s->ck_fly_n = 0;
    s->ck_fly_bytes = 0;
    s->ckpt_retry = 0;
    if (s->metrics)
      kv_hist_observe(&s->metrics->checkpoint, (double)s->ckpt_ns / 1e9);
  } else if (rc == KV_EMAPFULL) {
    s->grow_wanted = 1; /* kv__store_schedule grows the map and retries */
    s->checkpointing = 1;
  } else {
    ckq_requeue(s);
    if (s->metrics) kv_metrics_error(s->metrics, rc);
    if (rc == KV_ENOSPACE || rc == KV_ENOMEM) {
      kv_log_warn("%s: checkpoint: %s; the log keeps the writes, retrying",
                  s->dir, kv_strerror(rc));
      s->ckpt_retry = uv_now(s->loop) + KV_CKPT_RETRY_MS;
    } else {
      s->ckpt_failed = 1;
      kv_log_error("%s: checkpoint failed (%s): LMDB is left as it was and "
                   "the log keeps every write; restart kvd once the disk is "
                   "checked", s->dir, kv_strerror(rc));
    }
  }
  kv__store_schedule(s);
}

/* Runs the checkpoint in flight (ck_fly) on its thread; ckpt_done hears
 * the outcome on the listener. */
static void ckpt_run(kv_store_t *s) {
  s->ck_running = 1;
  if (kv_thread_start(ckpt_thread, s) != 0) {
    s->ckpt_rc = KV_ENOMEM;
    uv_async_send(&s->ckpt_async);
  }
}

static void ckpt_start(kv_store_t *s) {
  s->ck_fly = s->ckq;
  s->ck_fly_n = s->ckq_n;
  s->ck_fly_bytes = s->ckq_bytes;
  s->ckq = NULL;
  s->ckq_n = s->ckq_cap = 0;
  s->ckq_bytes = 0;
  s->ckpt_wanted = 0;
  s->checkpointing = 1;
  s->ck_keep = s->rev > s->history ? s->rev - s->history : 0;
  s->ck_now = kv_ttl_now();
  ckpt_run(s);
}

/* Grows the LMDB map after a checkpoint found it full, and retries.  LMDB
 * resizes only with no transaction open in the process, so this waits for
 * an image build's snapshot to close. */
static void ckpt_grow(kv_store_t *s) {
  size_t now;
  int rc;

  if (s->imaging || s->listing || s->backing || !kv__feed_idle(s)) return;
  s->grow_wanted = 0;
  rc = kv_ckpt_grow(s->ckpt, &now);
  if (rc == 0) {
    kv_log_info("%s: LMDB map grown to %zu KiB", s->dir, now >> 10);
    ckpt_run(s);
    return;
  }
  kv_log_error("%s: cannot grow the LMDB map: %s", s->dir, kv_strerror(rc));
  s->ckpt_rc = KV_ENOSPACE;
  s->ck_running = 1;
  ckpt_done(&s->ckpt_async);
}

/* The oldest tombstone is past both the exact history and its retention:
 * a checkpoint forgets it, even with no write to apply. */
static int tomb_due(const kv_store_t *s) {
  uint64_t keep = s->rev > s->history ? s->rev - s->history : 0;

  return s->tombs.first_rev && s->tombs.first_rev <= keep &&
         kv_ttl_now() >= s->tombs.first_ms + s->tomb_ms;
}

static int ckpt_due(kv_store_t *s) {
  uint64_t now = uv_now(s->loop);

  /* A backup copy holds LMDB at the revision it copies. */
  if (s->checkpointing || s->backing || s->ckpt_failed) return 0;
  if (s->ckpt_retry && now < s->ckpt_retry) return 0;
  if (s->ckq_n == 0) return !s->drained && !s->closing && tomb_due(s);
  return s->ckpt_wanted || s->drained || s->ckq_bytes >= KV_CKPT_BYTES ||
         now - s->ckq_since >= KV_CKPT_MS;
}

/* ---- the scheduler --------------------------------------------------------- */

static void spare_work(uv_work_t *req) {
  kv_store_t *s = req->data;
  s->spare_rc = kv_revlog_prepare(s->log);
}

/* A spare that could not be made is tried again a second later (the next
 * switch makes its segment itself meanwhile), and said once. */
static void spare_done(uv_work_t *req, int uvstatus) {
  kv_store_t *s = req->data;
  int rc = uvstatus != 0 ? KV_ESTORE : s->spare_rc;

  s->sparing = 0;
  if (rc != 0 && !s->spare_retry)
    kv_log_warn("%s: cannot make a spare log segment: %s", s->dir,
                kv_strerror(rc));
  s->spare_retry = rc != 0 ? uv_now(s->loop) + KV_CKPT_RETRY_MS : 0;
  kv__store_schedule(s);
}

/* True once draining and nothing is in flight, pending, unlogged or stale;
 * a checkpoint that cannot be written is left to the log. */
static int store_idle(kv_store_t *s) {
  return !s->committing && !s->pend_head && !s->exp_n && !s->checkpointing &&
         !s->sparing && (s->ckq_n == 0 || s->ckpt_failed || s->ckpt_retry) &&
         kv__imager_idle(s) && kv__lister_idle(s) && kv__feed_idle(s) &&
         kv__backup_idle(s);
}

void kv__store_schedule(kv_store_t *s) {
  int rc;

  if (!s->sparing && !s->failed && !s->closing && !s->drained &&
      (!s->spare_retry || uv_now(s->loop) >= s->spare_retry) &&
      kv_revlog_wants_spare(s->log)) {
    s->sparing = 1;
    s->spare_work.data = s;
    uv_queue_work(s->loop, &s->spare_work, spare_work, spare_done);
  }
  rc = kv__imager_start(s); /* may ask for a checkpoint first */
  if (rc != 0) kv__imager_fail(s, rc);
  kv__lister_start(s); /* likewise */
  kv__backup_start(s); /* likewise, and holds checkpoints while it copies */
  if (s->grow_wanted) ckpt_grow(s);
  if (ckpt_due(s)) ckpt_start(s);
  if (!s->committing && (s->pend_head || s->exp_n)) {
    if (s->ckq_bytes + s->ck_fly_bytes < KV_LOG_MAX)
      kv__commit_start(s, 0);
    else if (s->ckpt_failed)
      kv__commit_start(s, KV_ENOSPACE); /* the log is full for good */
    /* else the checkpoint's completion schedules the batch */
  }
  kv__expirer_arm(s);
  if (s->drained && store_idle(s)) {
    void (*done)(kv_store_t *) = s->drained;
    s->drained = NULL;
    done(s);
  }
}

/* A millisecond a second: a million-bucket rehash left by the last writes
 * finishes within seconds of idling, at 0.1% of the listener. */
#define KV_STORE_REHASH_NS 1000000

void kv_store_sweep(kv_store_t *s) {
  (void)kv_map_rehash_for(s->map, KV_STORE_REHASH_NS);
  kv__store_schedule(s); /* checkpoints due by age, retries */
}

void kv_store_drain(kv_store_t *s, void (*done)(kv_store_t *s)) {
  s->drained = done;
  kv__store_schedule(s);
}

void kv_store_close(kv_store_t *s) {
  s->closing = 1;
  uv_close((uv_handle_t *)&s->image_timer, NULL);
  uv_close((uv_handle_t *)&s->image_async, NULL);
  uv_close((uv_handle_t *)&s->expire_timer, NULL);
  uv_close((uv_handle_t *)&s->ckpt_async, NULL);
  uv_close((uv_handle_t *)&s->list_async, NULL);
  kv__feed_close(s);
  uv_close((uv_handle_t *)&s->backup_async, NULL);
}

void kv_store_free(kv_store_t *s) {
  if (!s) return;
  kv_image_unref(s->image);
  ckq_release(s->ckq, s->ckq_n);
  free(s->ckq);
  ckq_release(s->ck_fly, s->ck_fly_n);
  free(s->ck_fly);
  free(s->ck_ops);
  kv__feed_free(s);
  kv__expirer_free(s);
  kv_ttl_free(&s->ttl);
  kv_map_free(s->map);
  kv_revlog_close(s->log);
  kv_ckpt_close(s->ckpt);
  uv_mutex_destroy(&s->list_mu);
  free(s->ops);
  free(s->seen);
  free(s->dir);
  free(s);
}
