/* expirer.c - writing the removal of keys whose time has passed.
 *
 * Readers stop seeing a key at its expiry time by comparing it with the
 * wall clock (kv_store_get, the image, listings), so removal is only
 * bookkeeping, and it may lag a little: a timer set for the earliest
 * expiry in the heap submits one expiry write per due key, as ordinary
 * writes of the group commit, logged with their own revisions.  At most
 * KV_EXPIRE_SLICE are in flight, so a million keys that expire together
 * go out as a few hundred batches, each a few milliseconds of the
 * listener, never one long stall; the next slice starts as soon as the
 * last is done.
 */
#include <stdlib.h>

#include "kv/container.h"
#include "kv/error.h"
#include "kv/log.h"
#include "store_int.h"

#define KV_EXPIRE_SLICE 4096
/* After a failed expiry write (the disk is full, writes are disabled),
 * the next try waits this long. */
#define KV_EXPIRE_RETRY_MS 1000

typedef struct {
  kv_write_t w;
  kv_store_t *s;
  kv_rec_t *rec; /* referenced: the record that expired */
} kv_expire_t;

static void expire_done(kv_write_t *w, int status, int existed) {
  kv_expire_t *e = KV_CONTAINER_OF(w, kv_expire_t, w);
  kv_store_t *s = e->s;
  kv_rec_t *rec = e->rec;

  (void)existed;
  s->expiring--;
  /* Not written: if the record is still the key's, it goes back into the
   * heap to be tried again (commit_form found the clock moved back, or
   * the batch failed). */
  if (status != 0 || w->rev == 0) {
    if (status != 0) s->expire_retry = kv_ttl_now() + KV_EXPIRE_RETRY_MS;
    if (!rec->heap &&
        kv_map_get(s->map, kv_rec_key(rec), rec->klen) == rec &&
        kv_ttl_add(&s->ttl, rec) != 0)
      kv_log_warn("%s: out of memory: a key that expired is removed only "
                  "at the next restart", s->dir);
  }
  kv_rec_unref(rec);
  free(e);
  /* kv__store_committed schedules after every done: that re-arms. */
}

/* Submits an expiry write for each due key, up to the slice. */
static void expire_run(kv_store_t *s) {
  uint64_t now = kv_ttl_now();
  kv_rec_t *r;

  while ((r = kv_ttl_first(&s->ttl)) != NULL && r->expires <= now &&
         s->expiring < KV_EXPIRE_SLICE) {
    kv_expire_t *e = malloc(sizeof *e);
    if (!e) {
      s->expire_retry = now + KV_EXPIRE_RETRY_MS;
      break;
    }
    kv_ttl_remove(&s->ttl, r);
    e->s = s;
    e->rec = kv_rec_ref(r);
    e->w.op = KV_OP_EXPIRE;
    e->w.rec = r;
    e->w.key.ptr = kv_rec_key(r);
    e->w.key.len = r->klen;
    e->w.cond = NULL;
    e->w.ttl = 0;
    e->w.done = expire_done;
    kv__commit_enqueue(s, &e->w);
    s->expiring++;
  }
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

/* Sets the timer for the earliest expiry, unless it is set sooner or a
 * full slice is in flight (its completion calls here again).  Called by
 * every kv__store_schedule, so it must be cheap when nothing changes. */
void kv__expirer_arm(kv_store_t *s) {
  kv_rec_t *first = kv_ttl_first(&s->ttl);
  uint64_t due, now;

  if (!first || s->closing || s->drained || s->failed ||
      s->expiring >= KV_EXPIRE_SLICE) {
    if (s->expire_due && !s->closing) {
      uv_timer_stop(&s->expire_timer);
      s->expire_due = 0;
    }
    return;
  }
  due = first->expires > s->expire_retry ? first->expires : s->expire_retry;
  if (s->expire_due && s->expire_due <= due) return;
  now = kv_ttl_now();
  uv_timer_start(&s->expire_timer, expire_tick, due > now ? due - now : 0,
                 0);
  s->expire_due = due;
}
