/* map.c - records and the incrementally rehashed hash map.
 *
 * The map is two chained tables, as in Redis's dict: t[0] is the current
 * table and t[1] exists only while a resize is in progress.  Buckets of t[0]
 * below rehash_idx have already been moved to t[1]; new keys go to t[1].
 * Every get, put and del moves one bucket, and the listener's once-a-second
 * sweep moves more for a millisecond (kv_map_rehash_for, as Redis's cron
 * does), so no request pays for a whole resize and an idle map finishes.  Records never move in memory, so a borrowed pointer survives any
 * number of rehash steps.
 */
#include "kv/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "kv/error.h"

#define MAP_MIN_BITS 4 /* 16 buckets: never shrink below this */
/* The bucket index is the 32-bit cached hash, so larger tables are useless. */
#define MAP_MAX_BITS (SIZE_MAX > 0xffffffffu ? 32 : 28)
#define MAP_STEP_BUCKETS 1 /* buckets moved by each get, put and del */
#define MAP_EMPTY_VISITS 10 /* empty buckets skipped per bucket asked for */
#define MAP_NOT_REHASHING SIZE_MAX

typedef struct {
  kv_rec_t **b; /* NULL when the table is not allocated */
  size_t mask;  /* buckets - 1 */
  size_t used;  /* records linked into this table */
} map_table_t;

struct kv_map {
  map_table_t t[2];
  size_t rehash_idx; /* next t[0] bucket to move, or MAP_NOT_REHASHING */
  size_t count;
  uint64_t bytes;
  uint64_t seed;
};

int kv_rec_new(const char *key, size_t klen, size_t vcap, kv_rec_t **out) {
  if (out == NULL || key == NULL || klen == 0 || klen > KV_KEY_MAX ||
      vcap > UINT32_MAX)
    return KV_EINVAL;
  kv_rec_t *r = malloc(sizeof(*r) + klen + vcap);
  if (r == NULL) return KV_ENOMEM;
  r->next = NULL;
  r->rev = 0;
  r->expires = 0;
  r->heap = 0;
  r->hash = 0; /* set by kv_map_put, which knows the map's seed */
  r->refs = 1;
  r->vlen = 0;
  r->klen = (uint16_t)klen;
  memcpy(r->data, key, klen);
  *out = r;
  return 0;
}

/* Reallocates to exactly vcap value bytes, or to vlen if vcap is smaller so
 * the value written so far is never cut.  The record keeps no capacity
 * field, so every call reallocates: grow geometrically.  A vcap no vlen
 * could describe is refused with KV_EINVAL; on any failure *r is unchanged
 * and still valid. */
int kv_rec_reserve(kv_rec_t **r, size_t vcap) {
  if (r == NULL || *r == NULL || vcap > UINT32_MAX) return KV_EINVAL;
  if (vcap < (*r)->vlen) vcap = (*r)->vlen;
  kv_rec_t *n = realloc(*r, sizeof(*n) + (*r)->klen + vcap);
  if (n == NULL) return KV_ENOMEM;
  *r = n;
  return 0;
}

int kv_rec_cmp(const void *a, const void *b) {
  const kv_rec_t *x = *(kv_rec_t *const *)a, *y = *(kv_rec_t *const *)b;
  return kv_slice_cmp(kv_rec_key(x), x->klen, kv_rec_key(y), y->klen);
}

void kv_rec_unref(kv_rec_t *r) {
  if (r != NULL && --r->refs == 0) free(r);
}

/* Draws the hash seed from the kernel.  getrandom only fails before the
 * entropy pool is ready (interrupted) or on very old kernels; then a seed
 * from the clock, pid and an address still varies between runs, which is
 * weaker against flooding but keeps the server up. */
static uint64_t map_seed(const void *salt) {
  uint64_t seed;
  for (;;) {
    ssize_t n = getrandom(&seed, sizeof(seed), 0);
    if (n == (ssize_t)sizeof(seed)) return seed;
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t mix[4] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec,
                     (uint64_t)getpid(), (uint64_t)(uintptr_t)salt};
  return XXH3_64bits(mix, sizeof(mix));
}

int kv_map_new(kv_map_t **out) {
  if (out == NULL) return KV_EINVAL;
  kv_map_t *m = calloc(1, sizeof(*m));
  if (m == NULL) return KV_ENOMEM;
  /* t[0] always exists, so an insert never depends on an allocation. */
  m->t[0].b = calloc((size_t)1 << MAP_MIN_BITS, sizeof(kv_rec_t *));
  if (m->t[0].b == NULL) {
    free(m);
    return KV_ENOMEM;
  }
  m->t[0].mask = ((size_t)1 << MAP_MIN_BITS) - 1;
  m->rehash_idx = MAP_NOT_REHASHING;
  m->seed = map_seed(m);
  *out = m;
  return 0;
}

static void map_table_unref_all(map_table_t *t) {
  if (t->b == NULL) return;
  for (size_t i = 0; i <= t->mask; i++) {
    kv_rec_t *r = t->b[i];
    while (r != NULL) {
      kv_rec_t *next = r->next;
      r->next = NULL; /* a record still referenced elsewhere is unlinked */
      kv_rec_unref(r);
      r = next;
    }
  }
  free(t->b);
  t->b = NULL;
}

void kv_map_free(kv_map_t *m) {
  if (m == NULL) return;
  map_table_unref_all(&m->t[0]);
  map_table_unref_all(&m->t[1]);
  free(m);
}

static inline int map_rehashing(const kv_map_t *m) {
  return m->rehash_idx != MAP_NOT_REHASHING;
}

static inline uint32_t map_hash(const kv_map_t *m, const char *key,
                                size_t klen) {
  return (uint32_t)XXH3_64bits_withSeed(key, klen, m->seed);
}

/* Moves up to n non-empty buckets from t[0] to t[1], giving up after
 * visiting MAP_EMPTY_VISITS empty buckets per bucket asked for, so one call
 * is bounded even in a sparse table.  When t[0] is empty the rehash ends
 * and t[1] becomes t[0].  Returns 1 if a rehash is still in progress. */
static int map_rehash(kv_map_t *m, size_t n) {
  if (!map_rehashing(m)) return 0;
  size_t empty = n > SIZE_MAX / MAP_EMPTY_VISITS ? SIZE_MAX
                                                 : n * MAP_EMPTY_VISITS;
  map_table_t *from = &m->t[0], *to = &m->t[1];
  while (n-- > 0 && from->used > 0) {
    /* Buckets below rehash_idx are empty and used > 0, so this stops
     * inside the table. */
    while (from->b[m->rehash_idx] == NULL) {
      m->rehash_idx++;
      if (--empty == 0) return 1;
    }
    kv_rec_t *r = from->b[m->rehash_idx];
    while (r != NULL) {
      kv_rec_t *next = r->next;
      size_t i = r->hash & to->mask;
      r->next = to->b[i];
      to->b[i] = r;
      from->used--;
      to->used++;
      r = next;
    }
    from->b[m->rehash_idx++] = NULL;
  }
  if (from->used > 0) return 1;
  free(from->b);
  *from = *to;
  *to = (map_table_t){0};
  m->rehash_idx = MAP_NOT_REHASHING;
  return 0;
}

/* Starts a rehash into a table of 2^bits buckets.  On KV_ENOMEM nothing
 * changes: the map keeps working, overloaded, in t[0]. */
static int map_start_rehash(kv_map_t *m, unsigned bits) {
  size_t size = (size_t)1 << bits;
  kv_rec_t **b = calloc(size, sizeof(*b));
  if (b == NULL) return KV_ENOMEM;
  m->t[1] = (map_table_t){.b = b, .mask = size - 1, .used = 0};
  m->rehash_idx = 0;
  return 0;
}

/* The number of bits of the smallest power of two >= n, within limits. */
static unsigned map_bits_for(size_t n) {
  unsigned bits = MAP_MIN_BITS;
  while (bits < MAP_MAX_BITS && ((size_t)1 << bits) < n) bits++;
  return bits;
}

/* Grows at load factor 1, to the power of two above count (normally twice
 * the size; more if earlier grows failed for lack of memory).  Returns 0 or
 * KV_ENOMEM. */
static int map_maybe_grow(kv_map_t *m) {
  size_t size = m->t[0].mask + 1;
  if (map_rehashing(m) || m->count < size) return 0;
  unsigned bits = map_bits_for(m->count + 1);
  if (((size_t)1 << bits) <= size) return 0; /* at MAP_MAX_BITS already */
  return map_start_rehash(m, bits);
}

/* Shrinks below load factor 1/8 to a table at most half full, so the
 * next few inserts do not grow it straight back.  A failed allocation is
 * ignored: the map is merely sparse, and the next del tries again. */
static void map_maybe_shrink(kv_map_t *m) {
  size_t size = m->t[0].mask + 1;
  if (map_rehashing(m) || size <= ((size_t)1 << MAP_MIN_BITS) ||
      m->count >= size / 8)
    return;
  (void)map_start_rehash(m, map_bits_for(m->count * 2));
}

/* Returns the link that points at key's record (a bucket head or a
 * predecessor's next) and sets *table to the table holding it, or returns
 * NULL.  A t[0] bucket below rehash_idx has been moved, so only t[1] is
 * searched for it; an unmoved one may still hold the key in t[0] while
 * newer keys went to t[1], so both are searched. */
static kv_rec_t **map_find(kv_map_t *m, uint32_t h, const char *key,
                           size_t klen, int *table) {
  for (int t = 0; t < 2; t++) {
    map_table_t *tb = &m->t[t];
    if (tb->b == NULL) break;
    size_t i = h & tb->mask;
    if (t == 0 && map_rehashing(m) && i < m->rehash_idx) continue;
    for (kv_rec_t **pp = &tb->b[i]; *pp != NULL; pp = &(*pp)->next) {
      const kv_rec_t *r = *pp;
      if (r->hash == h && r->klen == klen &&
          memcmp(r->data, key, klen) == 0) {
        *table = t;
        return pp;
      }
    }
  }
  return NULL;
}

kv_rec_t *kv_map_get(kv_map_t *m, const char *key, size_t klen) {
  if (klen == 0 || klen > KV_KEY_MAX) return NULL;
  if (map_rehashing(m)) map_rehash(m, MAP_STEP_BUCKETS);
  int t;
  kv_rec_t **pp = map_find(m, map_hash(m, key, klen), key, klen, &t);
  return pp != NULL ? *pp : NULL;
}

/* A present key is replaced in place in its chain, so the new record sits
 * in whichever table held the old one.  A new key goes to t[1] during a
 * rehash (t[0]'s bucket may already be moved), else to t[0].  Putting a
 * record that is already the map's record for its key hands the caller's
 * reference back through *old.  With old NULL a replaced record is
 * unreferenced here.  Returns 0, or KV_ENOMEM if a grow could not start:
 * the insert is done either way. */
int kv_map_put(kv_map_t *m, kv_rec_t *rec, kv_rec_t **old) {
  kv_rec_t *prev = NULL;
  int err = 0, t;

  if (map_rehashing(m)) map_rehash(m, MAP_STEP_BUCKETS);
  rec->hash = map_hash(m, rec->data, rec->klen);
  kv_rec_t **pp = map_find(m, rec->hash, rec->data, rec->klen, &t);
  if (pp != NULL) {
    prev = *pp;
    if (prev != rec) {
      rec->next = prev->next;
      prev->next = NULL;
      *pp = rec;
      m->bytes -= (uint64_t)prev->klen + prev->vlen;
      m->bytes += (uint64_t)rec->klen + rec->vlen;
    }
  } else {
    map_table_t *tb = &m->t[map_rehashing(m) ? 1 : 0];
    size_t i = rec->hash & tb->mask;
    rec->next = tb->b[i];
    tb->b[i] = rec;
    tb->used++;
    m->count++;
    m->bytes += (uint64_t)rec->klen + rec->vlen;
    err = map_maybe_grow(m);
  }
  if (old != NULL)
    *old = prev;
  else
    kv_rec_unref(prev);
  return err;
}

kv_rec_t *kv_map_del(kv_map_t *m, const char *key, size_t klen) {
  if (klen == 0 || klen > KV_KEY_MAX) return NULL;
  if (map_rehashing(m)) map_rehash(m, MAP_STEP_BUCKETS);
  int t;
  kv_rec_t **pp = map_find(m, map_hash(m, key, klen), key, klen, &t);
  if (pp == NULL) return NULL;
  kv_rec_t *r = *pp;
  *pp = r->next;
  r->next = NULL;
  m->t[t].used--;
  m->count--;
  m->bytes -= (uint64_t)r->klen + r->vlen;
  map_maybe_shrink(m);
  return r;
}

size_t kv_map_count(const kv_map_t *m) { return m->count; }

uint64_t kv_map_bytes(const kv_map_t *m) { return m->bytes; }

int kv_map_rehash_step(kv_map_t *m, size_t n) { return map_rehash(m, n); }

static uint64_t map_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Steps of 128 buckets take microseconds, so the clock is read rarely
 * and the budget is overrun by little. */
int kv_map_rehash_for(kv_map_t *m, uint64_t ns) {
  uint64_t t0 = map_now_ns();

  while (map_rehash(m, 128))
    if (map_now_ns() - t0 >= ns) return 1;
  return 0;
}

int kv_map_rehashing(const kv_map_t *m) { return map_rehashing(m); }

uint32_t kv_map_hash(const kv_map_t *m, const char *key, size_t klen) {
  return map_hash(m, key, klen);
}

/* Sizing the table once for a known count (a reload) saves the log2(n)
 * incremental rehashes, each touching every record already inserted. */
int kv_map_reserve(kv_map_t *m, size_t n) {
  unsigned bits = map_bits_for(n);
  int rc;

  while (map_rehash(m, SIZE_MAX)) {
  }
  if (((size_t)1 << bits) <= m->t[0].mask + 1) return 0;
  rc = map_start_rehash(m, bits);
  if (rc != 0) return rc;
  while (map_rehash(m, SIZE_MAX)) {
  }
  return 0;
}

int kv_map_collect(kv_map_t *m, kv_rec_t ***out, size_t *n) {
  kv_rec_t **arr;
  size_t i = 0;

  while (map_rehash(m, SIZE_MAX)) {
  }
  arr = malloc((m->count ? m->count : 1) * sizeof(*arr));
  if (arr == NULL) return KV_ENOMEM;
  for (size_t b = 0; b <= m->t[0].mask; b++)
    for (kv_rec_t *r = m->t[0].b[b]; r != NULL; r = r->next)
      arr[i++] = kv_rec_ref(r);
  *out = arr;
  *n = i;
  return 0;
}
