/* store.h - the listener's view of the data: map, log, checkpoint, image.
 *
 * The store lives on the listener thread.  Reads come from the in-memory
 * map.  Writes go through the group commit (commit.c): writes that arrive
 * while a commit is running wait in a pending batch; the whole batch is
 * numbered and appended to the revision log (revlog.c) with one write and
 * one fdatasync on a worker thread; only after it is durable is the batch
 * applied to the map and each write told its outcome.  A failed commit
 * fails the whole batch and leaves the map as it was.  So the map only
 * ever holds durable data, and every acknowledged write is on disk.
 *
 * Logged writes wait in a queue until a checkpoint applies them to LMDB
 * (checkpoint.c) in one synced transaction on a thread of its own, at a
 * lower priority than the listener (thread.h), after which the
 * log segments they came from are removed.  The JSON image (imager.c) is
 * rebuilt on a worker thread from an LMDB snapshot once a checkpoint has
 * caught up with what it must show, only when a client asks for a fresher
 * one than exists, or a while after writes stop.  A backup (backup.c)
 * copies LMDB once it has caught up, while checkpoints wait.  store.c
 * alone decides what runs next.
 */
#ifndef KV_STORE_H
#define KV_STORE_H

#include <stdint.h>
#include <uv.h>

#include "kv/checkpoint.h"
#include "kv/cond.h"
#include "kv/config.h"
#include "kv/feed.h"
#include "kv/image.h"
#include "kv/map.h"
#include "kv/metrics.h"
#include "kv/revlog.h"
#include "kv/slice.h"
#include "kv/ttl.h"

typedef struct kv_write kv_write_t;

/* status is 0 or a negative error for the whole batch; existed says
 * whether the key had a value just before this write was applied. */
typedef void (*kv_write_cb)(kv_write_t *w, int status, int existed);

struct kv_write {
  kv_write_t *next;
  int op;        /* KV_OP_PUT or KV_OP_DEL */
  kv_rec_t *rec; /* PUT: the new record; the store takes this reference */
  kv_slice_t key; /* DEL: the key; must stay valid until done runs */
  kv_write_cb done;
  const kv_cond_t *cond; /* If-Match / If-None-Match, or NULL */
  uint32_t ttl;  /* PUT: seconds from being applied to expiry; 0: none */
  /* Set by the store when the write's batch is formed: */
  uint64_t rev;  /* its revision; 0 for a DELETE of a missing key */
  int existed;   /* the key had a value, counting earlier writes */
  int cond_rc;   /* KV_EPRECOND: cond failed, nothing was written */
};

typedef struct kv_image_wait kv_image_wait_t;

/* status is 0 with a referenced image (the callee unrefs it), or an
 * error with img NULL. */
typedef void (*kv_image_cb)(kv_image_wait_t *w, int status, kv_image_t *img);

struct kv_image_wait {
  kv_image_wait_t *next;
  uint64_t need_rev; /* the image must reflect at least this revision */
  kv_image_cb done;
};

/* A listing (contract section 3): the keys under prefix that sort after
 * `after`, at most limit of them, from one consistent snapshot, as a JSON
 * object of keys and values or an array of keys. */
typedef struct kv_list kv_list_t;
typedef void (*kv_list_cb)(kv_list_t *l);

struct kv_list {
  kv_list_t *next;
  /* Set by the caller; the strings must stay valid until done runs. */
  const char *prefix;
  size_t plen;
  const char *after; /* NULL: from the first key under prefix */
  size_t alen;
  int keys;          /* keys only */
  size_t limit;      /* 0: every match */
  kv_list_cb done;
  /* Set by the store before done runs. */
  int status;        /* 0 or an error */
  kv_image_t *body;  /* referenced: the callee takes it over */
  uint64_t rev;      /* the snapshot's revision */
  int more;          /* matches remain after the last one sent */
  char *last;        /* the last key sent: room for KV_KEY_MAX bytes */
  size_t last_len;
  /* The store's own. */
  uint64_t need_rev, t0, now;
  kv_ckpt_snap_t *snap;
  kv_rec_t **recs;   /* or the map's records */
  size_t nrecs, rec_next, rec_end, sent;
  struct kv_store *s;
};

/* A write applied to the map and logged, waiting to be checkpointed into
 * LMDB.  It holds a reference on its record (PUT) or a copy of its key
 * (DEL), so op's slices stay valid. */
typedef struct {
  kv_op_t op;
  kv_rec_t *rec;
  char *key;
  uint64_t bytes; /* what it takes in the log */
} kv_ckq_t;

typedef struct kv_store {
  uv_loop_t *loop;
  char *dir;
  kv_map_t *map;
  kv_ckpt_t *ckpt;
  kv_revlog_t *log;
  uint64_t rev;   /* the last revision applied to the map */
  uint64_t commits; /* batches committed */
  kv_metrics_t *metrics; /* may be NULL */
  int failed;     /* a log flush failed: writes are refused until restart */

  /* group commit (commit.c) */
  kv_write_t *pend_head, **pend_tail;
  size_t pend_n;
  kv_write_t *fly;            /* the batch being committed */
  kv_op_t *ops;
  size_t ops_cap, ops_n;
  struct kv_seen *seen;       /* keys of the batch being formed */
  size_t seen_cap, seen_mask;
  int commit_rc;
  int commit_pre;  /* error decided before the trip to the pool */
  int committing;
  uint64_t commit_ns;         /* how long the last commit took */
  uv_work_t commit_work;
  uv_work_t spare_work;       /* a spare log segment being made */
  int sparing;
  int spare_rc;
  uint64_t spare_retry;       /* uv_now() before which none is made */

  /* checkpoint (store.c): logged writes not yet in LMDB */
  kv_ckq_t *ckq;              /* applied, waiting */
  size_t ckq_n, ckq_cap;
  uint64_t ckq_bytes;
  uint64_t ckq_since;         /* uv_now() of the oldest waiting write */
  kv_ckq_t *ck_fly;           /* in the checkpoint being written */
  size_t ck_fly_n;
  uint64_t ck_fly_bytes;
  kv_op_t *ck_ops;
  size_t ck_ops_cap;
  uint64_t ckpt_rev;          /* the revision LMDB holds */
  int checkpointing;
  int ckpt_rc;
  int ckpt_failed;            /* LMDB failed: the log is kept, no retries */
  int ckpt_wanted;            /* someone waits for LMDB to catch up */
  int grow_wanted;            /* the checkpoint needs a bigger map */
  uint64_t ckpt_retry;        /* uv_now() before which none is retried */
  uint64_t ckpt_ns;
  uv_async_t ckpt_async;      /* the checkpoint thread's "done" */
  int ck_running;             /* that thread runs: its outcome is unread */

  /* image (imager.c) */
  kv_image_t *image;          /* newest generation, or NULL */
  kv_image_wait_t *waiters;
  kv_ckpt_snap_t *snap;       /* snapshot of the build in progress */
  kv_rec_t **recs;            /* or the map's records */
  size_t nrecs, rec_next;
  uint64_t snap_rev;
  size_t snap_hint;
  kv_image_t *built;
  int build_rc;
  int imaging;
  uint64_t build_ms;          /* how long the last build took */
  uint64_t built_ms;          /* the builder's: how long this build took */
  int built_file_rc;          /* the builder's: why the file failed, or 0 */
  uint64_t build_now;         /* wall ms: keys expired by then are left out */
  uint64_t built_expires;     /* the builder's: the earliest expiry in it */
  uint64_t image_expires;     /* the image's earliest expiry, or 0 */
  uv_async_t image_async;     /* the builder thread's "done" */
  uv_timer_t image_timer;     /* background refresh after writes */
  int timer_armed;
  uint64_t stale_since;       /* uv_now() of the first commit it waits for */
  int refresh;                /* a background build is due */
  uint64_t failed_rev;        /* 1 + rev of a failed build, or 0 */

  /* expiry (expirer.c) */
  kv_ttl_t ttl;               /* the map's records that expire, by time */
  uv_timer_t expire_timer;
  uint64_t expire_due;        /* wall ms the timer is set for; 0: unset */
  kv_rec_t **exp_due;         /* records that expired, for the next batch */
  kv_rec_t **exp_fly;         /* and those in the batch in flight */
  size_t exp_n, exp_fly_n;    /* (each referenced) */
  size_t expiring;            /* exp_n + exp_fly_n */
  uint64_t expire_retry;      /* wall ms before which none is submitted */
  uint64_t expired;           /* expiries applied since start */

  /* listings (lister.c) */
  struct kv_list *lists;      /* waiting for LMDB to catch up, or a slot */
  struct kv_list *lists_done; /* finished by a lister thread */
  size_t listing;             /* lister threads running */
  uv_mutex_t list_mu;         /* guards lists_done */
  uv_async_t list_async;      /* a lister thread's "done" */

  /* the change feed (feed.c) */
  struct kv_feed *feed;
  uint64_t history;           /* revisions of exact history kept: --history */
  uint64_t ck_keep;           /* the checkpoint's trim stops below this */
  uint64_t tomb_ms;           /* --tombstone-retention, in ms */
  uint64_t ck_now;            /* wall ms when the checkpoint started */
  kv_ckpt_tombs_t tombs;      /* LMDB's tombstones, as of the last one */
  kv_ckpt_tombs_t ck_tombs;   /* the checkpoint thread's, until done */
  /* backups (backup.c) */
  kv_image_wait_t *backups;   /* waiting for a copy, oldest first */
  int backing;                /* a copy runs, or its outcome is unread */
  uint64_t backup_rev;        /* the revision the copy holds */
  int backup_rc;              /* the copier's: 0 or an error */
  kv_image_t *backup_img;     /* the copier's: the copy, mapped */
  uint64_t backup_ns;         /* the copier's: how long it took */
  uv_async_t backup_async;    /* the copier's "done" */

  /* shutdown */
  void (*drained)(struct kv_store *s); /* set by kv_store_drain */
  int closing;
} kv_store_t;

/* Opens the data directory cfg->data (with cfg's sync mode, map size and
 * reader slots) and loads every key into the map.  On failure writes a
 * one-line reason to errbuf.  Returns 0 or an error. */
int kv_store_open(uv_loop_t *loop, const kv_config_t *cfg,
                  kv_metrics_t *metrics, kv_store_t **out, char *errbuf,
                  size_t errlen);

/* Returns the record for key, borrowed, or NULL. */
kv_rec_t *kv_store_get(kv_store_t *s, const char *key, size_t klen);

/* Housekeeping from the listener's once-a-second sweep: moves the buckets
 * of a rehash that writes left unfinished, within a small time budget. */
void kv_store_sweep(kv_store_t *s);

/* Queues a write for the next group commit; w->done runs later, never
 * from inside this call. */
void kv_store_submit(kv_store_t *s, kv_write_t *w);

/* Returns an image that reflects every write applied so far: at once
 * through *img (referenced) if the newest one is fresh, returning 0; or
 * later through w->done, returning 1; or, when no build can start, a
 * negative error (w->done is then never called). */
int kv_store_image(kv_store_t *s, kv_image_wait_t *w, kv_image_t **img);

/* Starts a listing that reflects every write applied so far.  Its answer
 * comes through l->done, never from inside this call. */
void kv_store_list(kv_store_t *s, kv_list_t *l);

/* Starts a watch (see feed.h).  o's strings are copied.  Returns 0 with
 * *out, KV_EGONE when o->since is older than the history kept, or
 * KV_ENOMEM.  o->ready is never called from inside this call. */
int kv_store_watch(kv_store_t *s, const kv_watch_opts_t *o, kv_watch_t **out);

/* Moves up to max of the changes ready for w, in revision order and
 * together at most about max_bytes, into arr; the caller owns their
 * references.  When none is ready, w->ready runs once some are.  Returns
 * how many, or the error that ended the watch (KV_EGONE, KV_EIO, ...). */
int kv_store_watch_take(kv_store_t *s, kv_watch_t *w, kv_change_t **arr,
                        size_t max, size_t max_bytes);

/* The revision up to which every matching change has been taken: the N of
 * a progress line. */
uint64_t kv_store_watch_position(const kv_store_t *s, const kv_watch_t *w);

/* Watches open now. */
size_t kv_store_watches(const kv_store_t *s);

/* Ends a watch; its callback never runs again. */
void kv_store_unwatch(kv_store_t *s, kv_watch_t *w);
/* Starts a backup (contract section 6): a compacted copy of LMDB, in
 * data.mdb's format, once it holds every write applied so far.  w->done
 * gets it as an image (referenced) whose revision is the copy's, or an
 * error: KV_ENOSPACE, KV_ENOBACKUP when checkpoints failed, KV_ESHUTDOWN
 * when the store drains before the copy starts.  Never from inside this
 * call. */
void kv_store_backup(kv_store_t *s, kv_image_wait_t *w);

/* Finishes the writes in flight and writes the final image, then calls
 * done(s).  New writes submitted meanwhile still commit. */
void kv_store_drain(kv_store_t *s, void (*done)(kv_store_t *s));

/* Closes the store's handles; kv_store_free runs once the loop has closed
 * them (after uv_run returns). */
void kv_store_close(kv_store_t *s);
void kv_store_free(kv_store_t *s);

#endif
