/* slice.h - the one plain value type: a pointer and a length. */
#ifndef KV_SLICE_H
#define KV_SLICE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  const char *ptr;
  size_t len;
} kv_slice_t;

/* One stored key and value with its modification revision and its expiry
 * time (Unix milliseconds; 0: never). */
typedef struct {
  kv_slice_t key;
  kv_slice_t val;
  uint64_t rev;
  uint64_t expires;
} kv_item_t;

/* Key-byte order, as LMDB sorts: bytes first, then the shorter key. */
static inline int kv_slice_cmp(const char *a, size_t alen, const char *b,
                               size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  return c ? c : (alen > blen) - (alen < blen);
}

#endif
