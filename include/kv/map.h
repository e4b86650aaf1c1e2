/* map.h - the in-memory map, owned by the listener thread.
 *
 * A record holds one key and its value in a single allocation.  Records are
 * immutable once published and reference-counted, so a response still being
 * written to a slow socket keeps its value alive after the key is
 * overwritten or deleted.  Reference counts are not atomic: only the
 * listener thread may take or drop references.
 *
 * The map is a chained hash table (xxh3, seeded at random against flooding)
 * that grows and shrinks by incremental rehashing, so no single request pays
 * for moving a million keys.
 */
#ifndef KV_MAP_H
#define KV_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "kv/slice.h"

#define KV_KEY_MAX 511 /* LMDB's default maximum key size */

typedef struct kv_rec kv_rec_t;
struct kv_rec {
  kv_rec_t *next; /* hash chain; belongs to the map */
  uint64_t rev;   /* modification revision, set when its write commits */
  uint64_t expires; /* Unix milliseconds of its expiry; 0: never */
  uint32_t hash;  /* low 32 bits of the key's hash */
  uint32_t refs;
  uint32_t vlen;
  uint32_t heap;  /* 1 + its place in the store's expiry heap; 0: none */
  uint16_t klen;
  char data[]; /* klen key bytes, then vlen value bytes */
};

static inline const char *kv_rec_key(const kv_rec_t *r) { return r->data; }
static inline const char *kv_rec_value(const kv_rec_t *r) {
  return r->data + r->klen;
}
/* r as an item (its slices point into r). */
static inline void kv_rec_item(const kv_rec_t *r, kv_item_t *item) {
  item->key.ptr = r->data;
  item->key.len = r->klen;
  item->val.ptr = r->data + r->klen;
  item->val.len = r->vlen;
  item->rev = r->rev;
  item->expires = r->expires;
}

/* True once r's expiry time (Unix ms) is at or before now: from then on
 * the key is gone for every reader, whether or not its removal has been
 * written yet. */
static inline int kv_rec_expired(const kv_rec_t *r, uint64_t now) {
  return r->expires != 0 && r->expires <= now;
}

static inline char *kv_rec_value_mut(kv_rec_t *r) { return r->data + r->klen; }

/* Allocates a record for key with room for vcap value bytes; vlen starts at
 * 0 and refs at 1.  klen must be 1..KV_KEY_MAX.  Returns 0, KV_EINVAL or
 * KV_ENOMEM. */
int kv_rec_new(const char *key, size_t klen, size_t vcap, kv_rec_t **out);

/* Grows an unpublished record (refs == 1, not in a map) to hold vcap value
 * bytes; *r may move.  Returns 0 or KV_ENOMEM (the record is unchanged). */
int kv_rec_reserve(kv_rec_t **r, size_t vcap);

static inline kv_rec_t *kv_rec_ref(kv_rec_t *r) {
  r->refs++;
  return r;
}

/* qsort comparator for an array of kv_rec_t pointers: key-byte order. */
int kv_rec_cmp(const void *a, const void *b);

/* Drops a reference; frees the record at zero.  Accepts NULL. */
void kv_rec_unref(kv_rec_t *r);

typedef struct kv_map kv_map_t;

int kv_map_new(kv_map_t **out);

/* Drops the map's reference on every record. */
void kv_map_free(kv_map_t *m);

/* Returns the record for key, borrowed (take a ref to keep it), or NULL. */
kv_rec_t *kv_map_get(kv_map_t *m, const char *key, size_t klen);

/* Inserts rec, taking over the caller's reference.  If the key was present,
 * the old record is unlinked and returned through *old with the map's
 * reference (the caller must unref it); otherwise *old is NULL.  Returns 0
 * or KV_ENOMEM (only when a rehash table cannot be allocated, in which case
 * the insert still succeeds in the current table: KV_ENOMEM is never
 * returned for a lost insert). */
int kv_map_put(kv_map_t *m, kv_rec_t *rec, kv_rec_t **old);

/* Unlinks key and returns its record with the map's reference, or NULL. */
kv_rec_t *kv_map_del(kv_map_t *m, const char *key, size_t klen);

size_t kv_map_count(const kv_map_t *m);

/* The map's seeded hash of key: for tables beside the map that must resist
 * flooding as it does. */
uint32_t kv_map_hash(const kv_map_t *m, const char *key, size_t klen);

/* Sum of key and value bytes of every record in the map. */
uint64_t kv_map_bytes(const kv_map_t *m);

/* Sizes the table for n records at once, finishing any rehash.  Returns 0
 * or KV_ENOMEM (the map is unchanged and still works). */
int kv_map_reserve(kv_map_t *m, size_t n);

/* Returns every record, each with a new reference, in no order, through
 * a malloc'd array.  Finishes any rehash first.  Returns 0 or KV_ENOMEM. */
int kv_map_collect(kv_map_t *m, kv_rec_t ***out, size_t *n);

/* Moves up to n buckets of an ongoing rehash.  Returns 1 while a rehash is
 * still in progress, 0 when none is. */
int kv_map_rehash_step(kv_map_t *m, size_t n);

/* Moves buckets of an ongoing rehash for about ns nanoseconds.  Returns
 * 1 while a rehash is still in progress, 0 when none is. */
int kv_map_rehash_for(kv_map_t *m, uint64_t ns);

/* 1 while a rehash is in progress. */
int kv_map_rehashing(const kv_map_t *m);

#endif
