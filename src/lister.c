/* lister.c - listings by prefix, from one consistent snapshot.
 *
 * Order comes from LMDB, which keeps the keys sorted: a listing waits until
 * a checkpoint has caught up with every write applied when it arrived,
 * then a thread of its own walks an LMDB read snapshot with a cursor from
 * the first key it needs (the prefix, or just after `after`) and stops at
 * the limit, so a page costs what it sends however many keys the store
 * holds, and the listener only opens the snapshot.  The snapshot's
 * revision is the listing's.  When LMDB cannot help (checkpoints or writes
 * failed, no reader slot), the map's records are the source: every
 * acknowledged write, sorted on the thread.
 *
 * A listing has its own thread, not one of libuv's pool: a long one (a
 * million keys without a limit) must not hold up group commits, which run
 * in the pool.  At most KV_LIST_THREADS run at once; others wait their
 * turn.
 */
#include <stdlib.h>
#include <string.h>

#include "kv/error.h"
#include "kv/log.h"
#include "kv/thread.h"
#include "store_int.h"

#define KV_LIST_THREADS 4

/* Reads the next record of the source, in key order. */
static int source_next(kv_list_t *l, kv_item_t *item) {
  const kv_rec_t *r;

  if (!l->recs) return kv_ckpt_snap_next(l->snap, item);
  if (l->rec_next == l->rec_end) return 0;
  r = l->recs[l->rec_next++];
  kv_rec_item(r, item);
  return 1;
}

/* kv_image_next_fn: the matches, from after `after`, up to the limit;
 * notes whether another match follows and the last key sent. */
static int list_next(void *it, kv_item_t *item) {
  kv_list_t *l = it;
  kv_item_t x;
  int r;

  for (;;) {
    r = source_next(l, &x);
    if (r <= 0) return r;
    if (x.expires && x.expires <= l->now) continue;
    if (l->after &&
        kv_slice_cmp(x.key.ptr, x.key.len, l->after, l->alen) <= 0)
      continue;
    if (l->limit && l->sent == l->limit) {
      l->more = 1;
      return 0;
    }
    l->sent++;
    memcpy(l->last, x.key.ptr, x.key.len);
    l->last_len = x.key.len;
    *item = x;
    return 1;
  }
}

static int has_prefix(const kv_rec_t *r, const kv_list_t *l) {
  return r->klen >= l->plen && memcmp(kv_rec_key(r), l->prefix, l->plen) == 0;
}

/* The map's records, in no order: keep the matches and sort them.  Their
 * references are dropped on the listener, so all are kept in recs. */
static void sort_recs(kv_list_t *l) {
  size_t n = 0;

  for (size_t i = 0; i < l->nrecs; i++) {
    kv_rec_t *r = l->recs[i];
    if (has_prefix(r, l)) {
      l->recs[i] = l->recs[n];
      l->recs[n++] = r;
    }
  }
  qsort(l->recs, n, sizeof *l->recs, kv_rec_cmp);
  l->rec_next = 0;
  l->rec_end = n;
}

/* Hands l back to the listener (lister_done), from its thread or, on an
 * error, from the listener itself: never from inside a caller's call. */
static void list_hand_back(kv_store_t *s, kv_list_t *l) {
  uv_mutex_lock(&s->list_mu);
  l->next = s->lists_done;
  s->lists_done = l;
  uv_mutex_unlock(&s->list_mu);
  uv_async_send(&s->list_async);
}

static void *list_thread(void *arg) {
  kv_list_t *l = arg;

  if (l->recs) sort_recs(l);
  l->status = kv_image_build_as(l->keys ? KV_IMAGE_KEYS : KV_IMAGE_OBJECT,
                                NULL, l->rev, 0, list_next, l, &l->body);
  list_hand_back(l->s, l);
  return NULL;
}

static void list_fail(kv_store_t *s, kv_list_t *l, int rc) {
  l->status = rc;
  list_hand_back(s, l);
}

static void list_release(kv_list_t *l) {
  kv_ckpt_snap_close(l->snap);
  l->snap = NULL;
  for (size_t i = 0; i < l->nrecs; i++) kv_rec_unref(l->recs[i]);
  free(l->recs);
  l->recs = NULL;
  l->nrecs = 0;
}

static void list_run(kv_store_t *s, kv_list_t *l, int from_map) {
  int rc = from_map ? KV_EIO : kv_ckpt_snap_open(s->ckpt, l->prefix, l->plen,
                                                  &l->snap);

  l->now = kv_ttl_now();
  if (rc == 0) rc = kv_ckpt_snap_rev(l->snap, &l->rev);
  if (rc == 0 && l->after) kv_ckpt_snap_seek(l->snap, l->after, l->alen);
  if (rc != 0) {
    kv_ckpt_snap_close(l->snap);
    l->snap = NULL;
    l->rev = s->rev;
    rc = kv_map_collect(s->map, &l->recs, &l->nrecs);
  }
  if (rc == 0) rc = kv_thread_start(list_thread, l);
  s->listing++; /* until its completion is seen, error or not */
  if (rc != 0) list_fail(s, l, rc);
}

/* Starts the listings that can start: LMDB has caught up with them (or
 * cannot help), a thread is free, and LMDB is not waiting to be resized,
 * which needs every snapshot closed.  Asks for a checkpoint for the
 * others. */
void kv__lister_start(kv_store_t *s) {
  kv_list_t **pp = &s->lists, *l;
  int from_map = s->failed || s->ckpt_failed || s->ckpt_retry;

  while ((l = *pp) != NULL) {
    if (s->listing >= KV_LIST_THREADS || s->grow_wanted) return;
    if (!from_map && s->ckpt_rev < l->need_rev) {
      s->ckpt_wanted = 1;
      pp = &l->next;
      continue;
    }
    *pp = l->next;
    l->next = NULL;
    list_run(s, l, from_map);
  }
}

static void lister_done(uv_async_t *h) {
  kv_store_t *s = h->data;
  kv_list_t *l, *next;

  uv_mutex_lock(&s->list_mu);
  l = s->lists_done;
  s->lists_done = NULL;
  uv_mutex_unlock(&s->list_mu);
  for (; l; l = next) {
    next = l->next;
    l->next = NULL;
    s->listing--;
    list_release(l);
    /* A key or value that is not UTF-8 can only come from damage. */
    if (l->status == KV_EUTF8) l->status = KV_ECORRUPT;
    if (l->status != 0) {
      kv_log_warn("%s: cannot answer a listing: %s", s->dir,
                  kv_strerror(l->status));
      kv_image_unref(l->body);
      l->body = NULL;
    } else if (s->metrics) {
      kv_hist_observe(&s->metrics->list,
                      (double)(uv_hrtime() - l->t0) / 1e9);
    }
    l->done(l);
  }
  kv__store_schedule(s);
}

void kv__lister_init(kv_store_t *s) {
  uv_mutex_init(&s->list_mu);
  uv_async_init(s->loop, &s->list_async, lister_done);
  s->list_async.data = s;
}

int kv__lister_idle(const kv_store_t *s) {
  return !s->lists && !s->lists_done && s->listing == 0;
}

void kv_store_list(kv_store_t *s, kv_list_t *l) {
  kv_list_t **pp = &s->lists;

  l->s = s;
  l->next = NULL;
  l->need_rev = s->rev;
  l->t0 = uv_hrtime();
  l->status = 0;
  l->body = NULL;
  l->more = 0;
  l->sent = 0;
  l->last_len = 0;
  l->snap = NULL;
  l->recs = NULL;
  l->nrecs = l->rec_next = l->rec_end = 0;
  while (*pp) pp = &(*pp)->next; /* first come, first served */
  *pp = l;
  kv__store_schedule(s);
}
