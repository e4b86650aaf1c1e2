/* imager.c - when to rebuild the JSON image, and who is waiting for it.
 *
 * A build reads an LMDB snapshot on a worker thread, so it never stalls the
 * listener however many keys there are.  LMDB holds only checkpointed
 * writes, which the map already holds: an image therefore never shows a
 * write before it is acknowledged, and the snapshot's revision says which
 * writes it reflects (its ETag).  When LMDB is behind what a client needs,
 * the build waits for a checkpoint (store.c schedules it); when LMDB cannot
 * give a snapshot, the map's records are the source.
 *
 * Builds happen only when the image is stale: a GET / that needs a fresher
 * image than exists, a background refresh some time after writes, or the
 * final image at shutdown.  Never once per write.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/error.h"
#include "kv/log.h"
#include "kv/thread.h"
#include "store_int.h"

#define KV_IMAGE_REFRESH_MIN_MS 1000

/* Fresh: it reflects every write applied, and none of its keys has
 * expired since it was built (their removal may not be written yet, but
 * readers must not see them). */
static int image_fresh(const kv_store_t *s) {
  return s->image && kv_image_rev(s->image) >= s->rev &&
         (!s->image_expires || kv_ttl_now() < s->image_expires);
}

static int source_next(kv_store_t *s, kv_item_t *item) {
  const kv_rec_t *r;

  if (!s->recs) return kv_ckpt_snap_next(s->snap, item);
  if (s->rec_next == s->nrecs) return 0;
  r = s->recs[s->rec_next++];
  kv_rec_item(r, item);
  return 1;
}

/* kv_image_next_fn: the source's records that had not expired when the
 * build began; notes the earliest expiry among them, when the image
 * stops being fresh. */
static int build_next(void *it, kv_item_t *item) {
  kv_store_t *s = it;
  int r;

  while ((r = source_next(s, item)) == 1) {
    if (!item->expires) return 1;
    if (item->expires <= s->build_now) continue;
    if (!s->built_expires || item->expires < s->built_expires)
      s->built_expires = item->expires;
    return 1;
  }
  return r;
}

static int build(kv_store_t *s, const char *dir) {
  /* From the first record again (the fallback is a second pass). */
  if (s->recs) s->rec_next = 0;
  else kv_ckpt_snap_rewind(s->snap);
  s->built_expires = 0;
  return kv_image_build(dir, s->snap_rev, s->snap_hint, build_next, s,
                        &s->built);
}

/* The builder's own thread, at the lowest priority: a build is a second
 * or so of CPU at a million keys, and on a busy core it must yield to the
 * listener, not share with it.  The records are immutable and the listener holds a reference on each
 * until image_done, so reading them here is safe.  Until image_done runs,
 * the fields it reports through (built, build_rc, built_ms, built_file_rc)
 * belong to this thread. */
static void *image_thread(void *arg) {
  kv_store_t *s = arg;
  uint64_t t0 = uv_hrtime();
  int rc;

  kv_thread_nice(KV_NICE_IMAGE);
  if (s->recs)
    qsort(s->recs, s->nrecs, sizeof(*s->recs), kv_rec_cmp);
  rc = build(s, s->dir);
  s->built_file_rc = rc;
  /* The map is in memory even when the disk cannot take its image: serve
   * GET / from an anonymous buffer rather than fail it. */
  if (rc == KV_ENOSPACE || rc == KV_EIO) rc = build(s, NULL);
  s->build_rc = rc;
  s->built_ms = (uv_hrtime() - t0) / 1000000;
  /* The build read every page of data.mdb, but the map serves reads:
   * forget the pages here, where it costs the listener nothing. */
  if (!s->recs) kv_ckpt_release_pages(s->ckpt);
  uv_async_send(&s->image_async);
  return NULL;
}

/* Answers the waiters this build covers: those that need no newer commit
 * than the snapshot's.  The rest wait for the next build. */
static void answer_waiters(kv_store_t *s, int rc, uint64_t rev) {
  kv_image_wait_t **pp = &s->waiters, *w;

  while ((w = *pp) != NULL) {
    if (w->need_rev > rev) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    w->next = NULL;
    if (rc == 0)
      w->done(w, 0, kv_image_ref(s->image));
    else
      w->done(w, rc, NULL);
  }
}

static void image_done(uv_async_t *h) {
  kv_store_t *s = h->data;
  int rc = s->build_rc;

  if (!s->imaging) return; /* a coalesced or stray wakeup */
  if (s->snap) kv_ckpt_snap_close(s->snap);
  s->snap = NULL;
  for (size_t i = 0; i < s->nrecs; i++) kv_rec_unref(s->recs[i]);
  free(s->recs);
  s->recs = NULL;
  s->nrecs = 0;
  s->imaging = 0;
  s->build_ms = s->built_ms;
  /* A value that is not UTF-8 can only come from damage on disk. */
  if (rc == KV_EUTF8) rc = KV_ECORRUPT;
  if (s->metrics && rc == 0) {
    kv_hist_observe(&s->metrics->image, (double)s->build_ms / 1e3);
    s->metrics->image_bytes = kv_image_len(s->built);
  }
  if (rc == 0 && s->built_file_rc != 0)
    kv_log_warn("%s: cannot write the image file (%s): serving GET / from "
                "memory", s->dir, kv_strerror(s->built_file_rc));
  if (rc == 0) {
    kv_image_unref(s->image);
    s->image = s->built;
    s->image_expires = s->built_expires;
    s->built = NULL;
    s->failed_rev = 0;
  } else {
    s->failed_rev = s->snap_rev + 1;
    kv_log_warn("%s: cannot build the image: %s", s->dir, kv_strerror(rc));
  }
  answer_waiters(s, rc, s->snap_rev);
  kv__store_schedule(s);
}

static void refresh_timer(uv_timer_t *t) {
  kv_store_t *s = t->data;
  s->timer_armed = 0;
  if (!image_fresh(s)) {
    s->refresh = 1;
    kv__store_schedule(s);
  }
}

/* The image just went stale.  Schedule a background refresh for when the
 * writes pause: each commit pushes it back, but never past ten delays
 * after the first stale commit, so a steady load still gets fresh images.
 * The delay is at least four times the last build's duration, so builds
 * take at most a fifth of one worker thread, and a build's snapshot, which
 * keeps LMDB from reusing pages, is rarely open during a burst. */
void kv__imager_changed(kv_store_t *s) {
  uint64_t delay = s->build_ms * 4, now = uv_now(s->loop);

  if (s->closing) return;
  if (delay < KV_IMAGE_REFRESH_MIN_MS) delay = KV_IMAGE_REFRESH_MIN_MS;
  if (!s->timer_armed) {
    s->timer_armed = 1;
    s->stale_since = now;
  } else if (now - s->stale_since >= 9 * delay) {
    return; /* keep the deadline */
  }
  uv_timer_start(&s->image_timer, refresh_timer, delay, 0);
}

void kv__imager_init(kv_store_t *s) {
  uv_async_init(s->loop, &s->image_async, image_done);
  s->image_async.data = s;
}

/* Opens what the build reads: an LMDB snapshot, which costs the listener
 * nothing; or, when LMDB cannot give one (writes or checkpoints failed,
 * the reader table is full), the map's records, which hold every
 * acknowledged write.  Sets the revision the build will reflect. */
static int open_source(kv_store_t *s, int from_map) {
  int rc = from_map ? KV_EIO : kv_ckpt_snap_open(s->ckpt, NULL, 0, &s->snap);

  if (rc == 0) rc = kv_ckpt_snap_rev(s->snap, &s->snap_rev);
  if (rc == 0) return 0;
  if (s->snap) kv_ckpt_snap_close(s->snap);
  s->snap = NULL;
  if (!from_map)
    kv_log_warn("%s: no LMDB snapshot for the image (%s): building it from "
                "memory", s->dir, kv_strerror(rc));
  s->snap_rev = s->rev;
  return kv_map_collect(s->map, &s->recs, &s->nrecs);
}

/* The revision a build must reach: the newest a waiter needs, or the
 * store's own for a refresh or the final image. */
static uint64_t wanted_rev(const kv_store_t *s) {
  uint64_t need = 0;
  if (s->refresh || s->drained) return s->rev;
  for (const kv_image_wait_t *w = s->waiters; w; w = w->next)
    if (w->need_rev > need) need = w->need_rev;
  return need;
}

/* Starts a build if one is wanted: not one already running, and LMDB
 * caught up with what it must show, or else a checkpoint asked for.
 * Never answers a waiter itself.  Returns 0, or the error that kept a
 * wanted build from starting. */
int kv__imager_start(kv_store_t *s) {
  int rc, from_map;

  if (s->imaging || image_fresh(s) || s->grow_wanted) return 0;
  if (!s->waiters && !s->refresh && !s->drained) return 0;
  /* A build of this very state already failed: retry only for a client
   * who asks, not in a loop. */
  if (!s->waiters && s->failed_rev == s->rev + 1) return 0;
  /* LMDB cannot catch up while writes or checkpoints are failing, or the
   * disk refuses the checkpoint: the map is the source then. */
  from_map = s->failed || s->ckpt_failed || s->ckpt_retry;
  if (!from_map && s->ckpt_rev < wanted_rev(s)) {
    s->ckpt_wanted = 1;
    return 0;
  }
  rc = open_source(s, from_map);
  if (rc != 0) {
    s->failed_rev = s->rev + 1;
    kv_log_warn("%s: cannot start an image build: %s", s->dir,
                kv_strerror(rc));
    return rc;
  }
  s->refresh = 0;
  /* Encoding adds quotes, a colon and a comma per key, and some escapes. */
  s->snap_hint = (size_t)(kv_map_bytes(s->map) + kv_map_bytes(s->map) / 16 +
                          6 * kv_map_count(s->map) + 4096);
  s->imaging = 1;
  s->built_file_rc = 0;
  s->build_now = kv_ttl_now();
  if (kv_thread_start(image_thread, s) != 0) {
    s->build_rc = KV_ENOMEM;
    uv_async_send(&s->image_async);
  }
  return 0;
}

void kv__imager_fail(kv_store_t *s, int rc) { answer_waiters(s, rc, s->rev); }

/* True when shutdown need not wait for the imager: nothing is building and
 * the image is fresh, or building this state already failed. */
int kv__imager_idle(kv_store_t *s) {
  return !s->imaging && (image_fresh(s) || s->failed_rev == s->rev + 1);
}

int kv_store_image(kv_store_t *s, kv_image_wait_t *w, kv_image_t **img) {
  int rc;

  if (image_fresh(s)) {
    *img = kv_image_ref(s->image);
    return 0;
  }
  w->need_rev = s->rev;
  w->next = s->waiters;
  s->waiters = w;
  rc = kv__imager_start(s);
  if (rc == 0) {
    kv__store_schedule(s); /* a checkpoint may be wanted now */
    return 1;
  }
  /* Answered here, by the caller, never through w->done: the caller must
   * not be told "wait" for an answer that was already given. */
  s->waiters = w->next;
  w->next = NULL;
  answer_waiters(s, rc, s->rev);
  return rc;
}
