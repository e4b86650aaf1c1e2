/* ttl.h - expiry times: the wall clock, and the heap of keys that expire.
 *
 * Expiry times are Unix milliseconds, so they mean the same after a
 * restart.  The heap orders the map's records that have one by that time,
 * earliest first.  It borrows the records (the map holds them) and keeps
 * each one's place in the record itself (kv_rec_t.heap), so a record that
 * leaves the map leaves the heap in O(log n) without a search.  Listener
 * thread only, like the map.
 */
#ifndef KV_TTL_H
#define KV_TTL_H

#include <stddef.h>
#include <stdint.h>

#include "kv/map.h"

#define KV_TTL_MAX 315360000 /* seconds: ten years */

/* The wall clock in Unix milliseconds. */
uint64_t kv_ttl_now(void);

/* Each entry carries its time, so ordering the heap never touches the
 * records themselves: a million of them are a million cache misses. */
typedef struct {
  uint64_t at;
  kv_rec_t *rec;
} kv_ttl_ent_t;

typedef struct {
  kv_ttl_ent_t *h;
  size_t n, cap;
} kv_ttl_t;

/* Adds r (r->expires != 0, not in the heap).  Returns 0 or KV_ENOMEM. */
int kv_ttl_add(kv_ttl_t *t, kv_rec_t *r);

/* Removes r if it is in the heap. */
void kv_ttl_remove(kv_ttl_t *t, kv_rec_t *r);

/* The record that expires first, or NULL. */
static inline kv_rec_t *kv_ttl_first(const kv_ttl_t *t) {
  return t->n ? t->h[0].rec : NULL;
}

void kv_ttl_free(kv_ttl_t *t);

#endif
