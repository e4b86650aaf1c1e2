/* store.c - opening, loading, reading and draining the store. */
#include "kv/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/error.h"
#include "kv/log.h"

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
    kv_rec_t *rec, *old;
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
    kv_map_put(s->map, rec, &old);
    kv_rec_unref(old);
  }
out:
  if (snap) kv_ckpt_snap_close(snap);
  return rc;
}

int kv_store_open(uv_loop_t *loop, const kv_config_t *cfg,
                  kv_metrics_t *metrics, kv_store_t **out, char *errbuf,
                  size_t errlen) {
  const char *dir = cfg->data;
  kv_store_t *s;
  uint64_t t0 = uv_hrtime();
  int rc;

  s = calloc(1, sizeof(*s));
  if (!s || !(s->dir = strdup(dir))) {
    rc = KV_ENOMEM;
    snprintf(errbuf, errlen, "%s", kv_strerror(rc));
    goto fail;
  }
  s->loop = loop;
  s->metrics = metrics;
  s->pend_tail = &s->pend_head;
  rc = kv_ckpt_open(dir, cfg->sync, 0, cfg->max_readers, &s->ckpt, errbuf,
                    errlen);
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
  /* The map holds its own copies now: the reload's LMDB pages need not
   * count in kvd's memory. */
  kv_ckpt_release_pages(s->ckpt);
  /* The loaded map may need rehash steps; finish them before serving. */
  while (kv_map_rehash_step(s->map, 1024)) {
  }
  uv_timer_init(loop, &s->image_timer);
  s->image_timer.data = s;
  kv__imager_init(s);
  kv_log_info("loaded %zu keys (%llu bytes) at revision %llu from %s in "
              "%llu ms", kv_map_count(s->map),
              (unsigned long long)kv_map_bytes(s->map),
              (unsigned long long)s->rev, dir,
              (unsigned long long)((uv_hrtime() - t0) / 1000000));
  /* The image on disk may predate a crash; build a fresh one now so the
   * first GET / is served at once. */
  kv__imager_changed(s);
  *out = s;
  return 0;
fail:
  if (s) {
    if (s->map) kv_map_free(s->map);
    if (s->ckpt) kv_ckpt_close(s->ckpt);
    free(s->dir);
    free(s);
  }
  return rc;
}

/* A millisecond a second: a million-bucket rehash left by the last writes
 * finishes within seconds of idling, at 0.1% of the listener. */
#define KV_STORE_REHASH_NS 1000000

void kv_store_sweep(kv_store_t *s) {
  (void)kv_map_rehash_for(s->map, KV_STORE_REHASH_NS);
}

kv_rec_t *kv_store_get(kv_store_t *s, const char *key, size_t klen) {
  return kv_map_get(s->map, key, klen);
}

/* Called whenever a commit or an image build finishes: once draining, and
 * with nothing in flight, pending or stale, the drain is complete. */
void kv__store_maybe_drained(kv_store_t *s) {
  void (*done)(kv_store_t *);

  if (!s->drained || s->committing || s->pend_head) return;
  if (!kv__imager_idle(s)) return;
  done = s->drained;
  s->drained = NULL;
  done(s);
}

void kv_store_drain(kv_store_t *s, void (*done)(kv_store_t *s)) {
  s->drained = done;
  kv__imager_kick(s);
  kv__store_maybe_drained(s);
}

void kv_store_close(kv_store_t *s) {
  s->closing = 1;
  uv_close((uv_handle_t *)&s->image_timer, NULL);
  uv_close((uv_handle_t *)&s->image_async, NULL);
}

void kv_store_free(kv_store_t *s) {
  if (!s) return;
  kv_image_unref(s->image);
  kv_map_free(s->map);
  kv_ckpt_close(s->ckpt);
  free(s->ops);
  free(s->seen);
  free(s->dir);
  free(s);
}
