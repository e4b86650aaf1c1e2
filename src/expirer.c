/* expirer.c - writing the removal of keys whose time has passed.
 *
 * Readers stop seeing a key at its expiry time by comparing it with the
 * wall clock (kv_store_get, the image, listings), so removal is only
 * bookkeeping, and it may lag a little: a timer set for the earliest
 * expiry in the heap moves the due records into the next group commit,
 * which writes each one's removal as an op of its own, with its own
 * revision (commit.c).  At most KV_EXPIRE_SLICE wait or fly at a time, so
 * a million keys that expire together go out as a few hundred batches,
 * each a few milliseconds of the listener, never one long stall; the next
 * slice starts as soon as the last has landed.
 */
#include <stdlib.h>

#include "kv/error.h"
#include "kv/log.h"
#include "store_int.h"

#define KV_EXPIRE_SLICE 4096
/* After a failed batch (the disk is full, writes are disabled), the next
 * try waits this long. */
#define KV_EXPIRE_RETRY_MS 1000

/* Moves the due records out of the heap into the next batch, up to the
 * slice.  The batch holds a reference on each. */
static void expire_run(kv_store_t *s) {
  uint64_t now = kv_ttl_now();
  kv_rec_t *r;

  if (!s->exp_due && !(s->exp_due = malloc(KV_EXPIRE_SLICE * sizeof *s->exp_due)))
    return;
  if (!s->exp_fly && !(s->exp_fly = malloc(KV_EXPIRE_SLICE * sizeof *s->exp_fly)))
    return;
  while ((r = kv_ttl_first(&s->ttl)) != NULL && s->ttl.h[0].at <= now &&
         s->exp_n + s->exp_fly_n < KV_EXPIRE_SLICE) {
    kv_ttl_remove(&s->ttl, r);
    s->exp_due[s->exp_n++] = kv_rec_ref(r);
  }
  s->expiring = s->exp_n + s->exp_fly_n;
}

/* The batch the records flew with has landed: applied ones are out of the
 * map; after a failure, the ones still their key's go back to the heap
 * for a later try. */
void kv__expirer_landed(kv_store_t *s, int rc) {
  uint64_t now = kv_ttl_now(), lag = 0;

  for (size_t i = 0; i < s->exp_fly_n; i++) {
    kv_rec_t *r = s->exp_fly[i];
    /* How late the slowest removal of the batch was written. */
    if (rc == 0 && now > r->expires && now - r->expires > lag)
      lag = now - r->expires;
    if (rc != 0 && !r->heap &&
        kv_map_get(s->map, kv_rec_key(r), r->klen) == r &&
        kv_ttl_add(&s->ttl, r) != 0)
      kv_log_warn("%s: out of memory: a key that expired is removed only "
                  "at the next restart", s->dir);
    kv_rec_unref(r);
  }
  if (rc != 0 && s->exp_fly_n)
    s->expire_retry = now + KV_EXPIRE_RETRY_MS;
  if (rc == 0 && s->exp_fly_n && s->metrics)
    kv_hist_observe(&s->metrics->expire_lag, (double)lag / 1e3);
  s->exp_fly_n = 0;
  s->expiring = s->exp_n;
}

static void expire_tick(uv_timer_t *t) {
  kv_store_t *s = t->data;

  s->expire_due = 0;
  if (s->closing || s->drained || s->failed) return;
  if (kv_ttl_now() >= s->expire_retry) expire_run(s);
  kv__store_schedule(s);
}

void kv__expirer_init(kv_store_t *s) {
  uv_timer_init(s->loop, &s->expire_timer);
  s->expire_timer.data = s;
}

void kv__expirer_free(kv_store_t *s) {
  for (size_t i = 0; i < s->exp_n; i++) kv_rec_unref(s->exp_due[i]);
  for (size_t i = 0; i < s->exp_fly_n; i++) kv_rec_unref(s->exp_fly[i]);
  free(s->exp_due);
  free(s->exp_fly);
}

/* Sets the timer for the earliest expiry, unless it is set sooner or a
 * full slice waits or flies (its landing calls here again).  Called by
 * every kv__store_schedule, so it must be cheap when nothing changes. */
void kv__expirer_arm(kv_store_t *s) {
  uint64_t due, now;

  if (!s->ttl.n || s->closing || s->drained || s->failed ||
      s->exp_n + s->exp_fly_n >= KV_EXPIRE_SLICE) {
    if (s->expire_due && !s->closing) {
      uv_timer_stop(&s->expire_timer);
      s->expire_due = 0;
    }
    return;
  }
  due = s->ttl.h[0].at > s->expire_retry ? s->ttl.h[0].at : s->expire_retry;
  if (s->expire_due && s->expire_due <= due) return;
  now = kv_ttl_now();
  uv_timer_start(&s->expire_timer, expire_tick, due > now ? due - now : 0,
                 0);
  s->expire_due = due;
}
