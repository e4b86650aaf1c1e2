/* ttl.c - the expiry heap: a binary min-heap of records by expiry time. */
#include "kv/ttl.h"

#include <stdlib.h>
#include <time.h>

#include "kv/error.h"

uint64_t kv_ttl_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void place(kv_ttl_t *t, size_t i, kv_ttl_ent_t e) {
  t->h[i] = e;
  e.rec->heap = (uint32_t)(i + 1);
}

static void sift_up(kv_ttl_t *t, size_t i) {
  kv_ttl_ent_t e = t->h[i];

  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (t->h[p].at <= e.at) break;
    place(t, i, t->h[p]);
    i = p;
  }
  place(t, i, e);
}

static void sift_down(kv_ttl_t *t, size_t i) {
  kv_ttl_ent_t e = t->h[i];

  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= t->n) break;
    if (c + 1 < t->n && t->h[c + 1].at < t->h[c].at) c++;
    if (e.at <= t->h[c].at) break;
    place(t, i, t->h[c]);
    i = c;
  }
  place(t, i, e);
}

int kv_ttl_add(kv_ttl_t *t, kv_rec_t *r) {
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    kv_ttl_ent_t *h;
    if (cap > UINT32_MAX - 1) return KV_ENOMEM; /* places are 32-bit */
    h = realloc(t->h, cap * sizeof *h);
    if (!h) return KV_ENOMEM;
    t->h = h;
    t->cap = cap;
  }
  t->h[t->n].at = r->expires;
  t->h[t->n].rec = r;
  t->n++;
  sift_up(t, t->n - 1);
  return 0;
}

void kv_ttl_remove(kv_ttl_t *t, kv_rec_t *r) {
  size_t i;
  kv_ttl_ent_t last;

  if (r->heap == 0) return;
  i = r->heap - 1;
  r->heap = 0;
  last = t->h[--t->n];
  if (i == t->n) return;
  t->h[i] = last;
  /* The moved entry may belong above or below its new place. */
  if (i > 0 && t->h[(i - 1) / 2].at > last.at)
    sift_up(t, i);
  else
    sift_down(t, i);
}

void kv_ttl_free(kv_ttl_t *t) {
  for (size_t i = 0; i < t->n; i++) t->h[i].rec->heap = 0;
  free(t->h);
  t->h = NULL;
  t->n = t->cap = 0;
}
