/* test_map.c - records and the incrementally rehashed map. */
#include "kv/map.h"

#include <stdio.h>
#include <string.h>

#include "kv/error.h"
#include "test.h"

/* A published record for key with value val. */
static kv_rec_t *mk(const char *key, size_t klen, const char *val,
                    size_t vlen) {
  kv_rec_t *r = NULL;
  CHECK_INT(kv_rec_new(key, klen, vlen, &r), 0);
  memcpy(kv_rec_value_mut(r), val, vlen);
  r->vlen = (uint32_t)vlen;
  return r;
}

static kv_rec_t *mks(const char *key, const char *val) {
  return mk(key, strlen(key), val, strlen(val));
}

/* Puts a record that must be new to the map. */
static void put_new(kv_map_t *m, kv_rec_t *r) {
  kv_rec_t *old = (kv_rec_t *)1;
  CHECK_INT(kv_map_put(m, r, &old), 0);
  CHECK(old == NULL);
}

static void check_get(kv_map_t *m, const char *key, size_t klen,
                      const char *val, size_t vlen) {
  kv_rec_t *r = kv_map_get(m, key, klen);
  if (r == NULL) KV__FAIL("key of %zu bytes not found", klen);
  CHECK_MEM(kv_rec_key(r), r->klen, key, klen);
  CHECK_MEM(kv_rec_value(r), r->vlen, val, vlen);
}

static void check_gets(kv_map_t *m, const char *key, const char *val) {
  check_get(m, key, strlen(key), val, strlen(val));
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

KV_TEST(basic_ops, "put get replace and del keep count and bytes exact") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  CHECK_INT(kv_map_count(m), 0);
  CHECK_INT(kv_map_bytes(m), 0);
  CHECK(kv_map_get(m, "a", 1) == NULL);

  kv_rec_t *a = mks("alpha", "one");
  put_new(m, a);
  CHECK_INT(a->refs, 1);
  CHECK_INT(kv_map_count(m), 1);
  CHECK_INT(kv_map_bytes(m), 5 + 3);
  CHECK(kv_map_get(m, "alpha", 5) == a);
  check_gets(m, "alpha", "one");
  CHECK(kv_map_get(m, "alph", 4) == NULL);
  CHECK(kv_map_get(m, "alphb", 5) == NULL);

  put_new(m, mks("beta", ""));
  CHECK_INT(kv_map_count(m), 2);
  CHECK_INT(kv_map_bytes(m), 8 + 4);
  check_gets(m, "beta", "");

  /* Replacing returns the old record with the map's reference. */
  kv_rec_t *a2 = mks("alpha", "uno-dos-tres");
  kv_rec_t *old = NULL;
  CHECK_INT(kv_map_put(m, a2, &old), 0);
  CHECK(old == a);
  CHECK_INT(old->refs, 1);
  CHECK_INT(kv_map_count(m), 2);
  CHECK_INT(kv_map_bytes(m), 5 + 12 + 4);
  CHECK(kv_map_get(m, "alpha", 5) == a2);
  kv_rec_unref(old);

  /* With old NULL the map drops the replaced record itself. */
  CHECK_INT(kv_map_put(m, mks("beta", "b"), NULL), 0);
  CHECK_INT(kv_map_count(m), 2);
  CHECK_INT(kv_map_bytes(m), 5 + 12 + 4 + 1);
  check_gets(m, "beta", "b");

  CHECK(kv_map_del(m, "gamma", 5) == NULL);
  CHECK(kv_map_del(m, "alph", 4) == NULL);
  CHECK_INT(kv_map_count(m), 2);
  kv_rec_t *d = kv_map_del(m, "alpha", 5);
  CHECK(d == a2);
  CHECK(d->next == NULL);
  CHECK_INT(d->refs, 1);
  CHECK_INT(kv_map_count(m), 1);
  CHECK_INT(kv_map_bytes(m), 4 + 1);
  CHECK(kv_map_get(m, "alpha", 5) == NULL);
  CHECK(kv_map_del(m, "alpha", 5) == NULL);
  kv_rec_unref(d);

  kv_rec_unref(kv_map_del(m, "beta", 4));
  CHECK_INT(kv_map_count(m), 0);
  CHECK_INT(kv_map_bytes(m), 0);

  /* Keys no record can have are simply absent. */
  CHECK(kv_map_get(m, "", 0) == NULL);
  CHECK(kv_map_del(m, "", 0) == NULL);
  char big[KV_KEY_MAX + 1];
  memset(big, 'k', sizeof(big));
  CHECK(kv_map_get(m, big, sizeof(big)) == NULL);
  kv_map_free(m);
}

KV_TEST(put_self, "putting the map's own record hands the reference back") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  kv_rec_t *r = mks("k", "v");
  put_new(m, r);
  kv_rec_t *old = NULL;
  CHECK_INT(kv_map_put(m, kv_rec_ref(r), &old), 0);
  CHECK(old == r);
  CHECK_INT(r->refs, 2);
  kv_rec_unref(old);
  CHECK_INT(kv_map_count(m), 1);
  CHECK_INT(kv_map_bytes(m), 2);
  CHECK(kv_map_get(m, "k", 1) == r);

  /* Re-putting each record must not cut the chain it sits in. */
  char k[16];
  for (int i = 0; i < 1000; i++) {
    int kl = snprintf(k, sizeof(k), "%d", i);
    put_new(m, mk(k, (size_t)kl, k, (size_t)kl));
  }
  for (int i = 999; i >= 0; i--) {
    int kl = snprintf(k, sizeof(k), "%d", i);
    r = kv_map_get(m, k, (size_t)kl);
    CHECK(r != NULL);
    CHECK_INT(kv_map_put(m, kv_rec_ref(r), &old), 0);
    CHECK(old == r);
    kv_rec_unref(old);
  }
  CHECK_INT(kv_map_count(m), 1001);
  for (int i = 0; i < 1000; i++) {
    int kl = snprintf(k, sizeof(k), "%d", i);
    check_get(m, k, (size_t)kl, k, (size_t)kl);
  }
  kv_map_free(m);
}

KV_TEST(held_record, "a replaced or deleted record is readable while held") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  put_new(m, mks("key", "first value"));
  /* A response being written holds a reference to the value it sends. */
  kv_rec_t *held = kv_rec_ref(kv_map_get(m, "key", 3));
  CHECK_INT(held->refs, 2);

  kv_rec_t *old = NULL;
  CHECK_INT(kv_map_put(m, mks("key", "second"), &old), 0);
  CHECK(old == held);
  kv_rec_unref(old); /* the map's reference */
  CHECK_INT(held->refs, 1);
  check_gets(m, "key", "second");
  CHECK_MEM(kv_rec_key(held), held->klen, "key", 3);
  CHECK_MEM(kv_rec_value(held), held->vlen, "first value", 11);
  kv_rec_unref(held);

  held = kv_rec_ref(kv_map_get(m, "key", 3));
  kv_rec_unref(kv_map_del(m, "key", 3));
  CHECK_INT(kv_map_count(m), 0);
  CHECK_MEM(kv_rec_value(held), held->vlen, "second", 6);
  kv_rec_unref(held);
  kv_map_free(m);
}

enum { NKEYS = 200000, NSAMPLE = 3 };

static size_t key_of(char *buf, size_t i) {
  return (size_t)snprintf(buf, 32, "key:%zu", i);
}

/* The value of key i at generation g; its length varies with both. */
static size_t val_of(char *buf, size_t i, unsigned g) {
  return (size_t)snprintf(buf, 64, "v%u:%zu%.*s", g, i, (int)(i % 7),
                          "xxxxxxx");
}

static void check_key(kv_map_t *m, size_t i, const unsigned char *gen) {
  char k[32], v[64];
  size_t kl = key_of(k, i);
  if (gen[i] == 0) {
    CHECK(kv_map_get(m, k, kl) == NULL);
    return;
  }
  size_t vl = val_of(v, i, gen[i]);
  check_get(m, k, kl, v, vl);
}

/* Tracks whether a rehash is running (n = 0 moves nothing) and counts the
 * rehashes that started since the last call. */
static int rehashing_now, rehash_starts;

static void watch_rehash(kv_map_t *m) {
  int r = kv_map_rehash_step(m, 0);
  if (r && !rehashing_now) rehash_starts++;
  rehashing_now = r;
}

KV_TEST(many_keys, "200k keys stay findable through incremental resizes") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  unsigned char *gen = calloc(NKEYS, 1);
  CHECK(gen != NULL);
  uint64_t bytes = 0;
  size_t count = 0;
  int sampled_mid_rehash = 0;
  char k[32], v[64];
  rehashing_now = rehash_starts = 0;

  for (size_t i = 0; i < NKEYS; i++) {
    size_t kl = key_of(k, i), vl = val_of(v, i, 1);
    put_new(m, mk(k, kl, v, vl));
    gen[i] = 1;
    count++;
    bytes += kl + vl;
    /* Replace an earlier key now and then: it may sit in either table. */
    if (i % 5 == 4) {
      size_t j = rng() % i;
      char ov[64];
      size_t ol = val_of(ov, j, gen[j]);
      gen[j] = gen[j] % 250 + 1;
      kl = key_of(k, j);
      vl = val_of(v, j, gen[j]);
      kv_rec_t *old = NULL;
      CHECK_INT(kv_map_put(m, mk(k, kl, v, vl), &old), 0);
      CHECK(old != NULL);
      CHECK_MEM(kv_rec_value(old), old->vlen, ov, ol);
      bytes += vl - ol;
      kv_rec_unref(old);
    }
    if (i % 1000 == 999) kv_map_rehash_step(m, 2);
    watch_rehash(m);
    sampled_mid_rehash += rehashing_now;
    check_key(m, i, gen);
    for (int s = 0; s < NSAMPLE; s++) check_key(m, rng() % (i + 1), gen);
    CHECK(kv_map_get(m, "key:-1", 6) == NULL);
    CHECK_INT(kv_map_count(m), count);
    CHECK_INT(kv_map_bytes(m), bytes);
  }
  /* 16 buckets doubling at load factor 1 up to 2^18 is 14 grows. */
  CHECK(rehash_starts >= 10);
  CHECK(sampled_mid_rehash > 1000);
  for (size_t i = 0; i < NKEYS; i++) check_key(m, i, gen);

  /* Delete in random order down to a handful, then everything. */
  size_t *order = malloc(NKEYS * sizeof(*order));
  CHECK(order != NULL);
  for (size_t i = 0; i < NKEYS; i++) order[i] = i;
  for (size_t i = NKEYS - 1; i > 0; i--) {
    size_t j = rng() % (i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  rehash_starts = 0;
  sampled_mid_rehash = 0;
  for (size_t n = 0; n < NKEYS; n++) {
    size_t i = order[n];
    size_t kl = key_of(k, i), vl = val_of(v, i, gen[i]);
    kv_rec_t *r = kv_map_del(m, k, kl);
    CHECK(r != NULL);
    CHECK_MEM(kv_rec_value(r), r->vlen, v, vl);
    kv_rec_unref(r);
    CHECK(kv_map_del(m, k, kl) == NULL);
    gen[i] = 0;
    count--;
    bytes -= kl + vl;
    watch_rehash(m);
    sampled_mid_rehash += rehashing_now;
    check_key(m, i, gen);
    for (int s = 0; s < NSAMPLE && n + 1 < NKEYS; s++)
      check_key(m, order[n + 1 + rng() % (NKEYS - n - 1)], gen);
    CHECK_INT(kv_map_count(m), count);
    CHECK_INT(kv_map_bytes(m), bytes);
  }
  CHECK(rehash_starts >= 5);
  CHECK(sampled_mid_rehash > 1000);
  CHECK_INT(kv_map_count(m), 0);
  CHECK_INT(kv_map_bytes(m), 0);

  /* The shrunken map still takes keys. */
  put_new(m, mks("again", "yes"));
  check_gets(m, "again", "yes");
  free(order);
  free(gen);
  kv_map_free(m);
}

enum { RKEYS = 40000, RPHASE = 60000 };

KV_TEST(random_ops, "random puts and dels match a model through many resizes") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  unsigned char *gen = calloc(RKEYS, 1);
  CHECK(gen != NULL);
  uint64_t bytes = 0;
  size_t count = 0;
  char k[32], v[64];
  rehashing_now = rehash_starts = 0;
  /* Alternate put-heavy and del-heavy phases so the map swings between
   * nearly empty and nearly full, resizing both ways. */
  for (int phase = 0; phase < 6; phase++) {
    uint64_t put_pct = phase % 2 == 0 ? 85 : 15;
    for (size_t op = 0; op < RPHASE; op++) {
      size_t i = rng() % RKEYS, kl = key_of(k, i);
      if (rng() % 100 < put_pct) {
        unsigned g = gen[i] % 250 + 1;
        size_t vl = val_of(v, i, g);
        kv_rec_t *old = NULL;
        CHECK_INT(kv_map_put(m, mk(k, kl, v, vl), &old), 0);
        if (gen[i] == 0) {
          CHECK(old == NULL);
          count++;
          bytes += kl + vl;
        } else {
          char ov[64];
          size_t ol = val_of(ov, i, gen[i]);
          CHECK(old != NULL);
          CHECK_MEM(kv_rec_value(old), old->vlen, ov, ol);
          bytes += vl - ol;
          kv_rec_unref(old);
        }
        gen[i] = (unsigned char)g;
      } else {
        kv_rec_t *r = kv_map_del(m, k, kl);
        if (gen[i] == 0) {
          CHECK(r == NULL);
        } else {
          CHECK(r != NULL);
          CHECK_MEM(kv_rec_key(r), r->klen, k, kl);
          count--;
          bytes -= kl + r->vlen;
          gen[i] = 0;
          kv_rec_unref(r);
        }
      }
      if (op % 64 == 0) kv_map_rehash_step(m, rng() % 8);
      watch_rehash(m);
      check_key(m, rng() % RKEYS, gen);
      CHECK_INT(kv_map_count(m), count);
      CHECK_INT(kv_map_bytes(m), bytes);
    }
  }
  CHECK(rehash_starts >= 10);
  for (size_t i = 0; i < RKEYS; i++) check_key(m, i, gen);
  free(gen);
  kv_map_free(m);
}

KV_TEST(near_keys, "keys differing only in length or last byte are distinct") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  static char key[KV_KEY_MAX];
  memset(key, 'x', sizeof(key));
  char v[16];
  /* x, xx, ... up to 511 bytes, and each with its last byte changed. */
  for (size_t len = 1; len <= KV_KEY_MAX; len++) {
    int vl = snprintf(v, sizeof(v), "L%zu", len);
    put_new(m, mk(key, len, v, (size_t)vl));
    key[len - 1] = 'y';
    vl = snprintf(v, sizeof(v), "Y%zu", len);
    put_new(m, mk(key, len, v, (size_t)vl));
    key[len - 1] = 'x';
  }
  CHECK_INT(kv_map_count(m), 2 * KV_KEY_MAX);
  for (size_t len = 1; len <= KV_KEY_MAX; len++) {
    int vl = snprintf(v, sizeof(v), "L%zu", len);
    check_get(m, key, len, v, (size_t)vl);
    key[len - 1] = 'y';
    vl = snprintf(v, sizeof(v), "Y%zu", len);
    check_get(m, key, len, v, (size_t)vl);
    key[len - 1] = 'z';
    CHECK(kv_map_get(m, key, len) == NULL);
    key[len - 1] = 'x';
  }
  /* Deleting one length leaves its neighbours alone. */
  kv_rec_unref(kv_map_del(m, key, 100));
  CHECK(kv_map_get(m, key, 100) == NULL);
  check_get(m, key, 99, "L99", 3);
  check_get(m, key, 101, "L101", 4);
  CHECK_INT(kv_map_count(m), 2 * KV_KEY_MAX - 1);
  kv_map_free(m);
}

KV_TEST(binary_keys, "keys and values with NUL bytes are compared by length") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  for (int c = 0; c < 256; c++) {
    char k = (char)c, val[3] = {'\0', (char)c, '\0'};
    put_new(m, mk(&k, 1, val, 3));
  }
  put_new(m, mk("\0\0", 2, "two", 3));
  put_new(m, mk("a\0b", 3, "a0b", 3));
  put_new(m, mk("a\0c", 3, "a0c", 3));
  put_new(m, mk("a\0b\0", 4, "a0b0", 4));
  CHECK_INT(kv_map_count(m), 260);
  for (int c = 0; c < 256; c++) {
    char k = (char)c, val[3] = {'\0', (char)c, '\0'};
    check_get(m, &k, 1, val, 3);
  }
  check_get(m, "\0\0", 2, "two", 3);
  check_get(m, "a\0b", 3, "a0b", 3);
  check_get(m, "a\0c", 3, "a0c", 3);
  check_get(m, "a\0b\0", 4, "a0b0", 4);
  CHECK(kv_map_get(m, "\0\0\0", 3) == NULL);
  CHECK(kv_map_get(m, "a\0d", 3) == NULL);
  CHECK(kv_map_get(m, "a", 2) == NULL); /* "a" and its terminator */
  kv_rec_unref(kv_map_del(m, "\0", 1));
  CHECK(kv_map_get(m, "\0", 1) == NULL);
  check_get(m, "\0\0", 2, "two", 3);
  CHECK_INT(kv_map_count(m), 259);
  CHECK_INT(kv_map_bytes(m), 255 * 4 + 5 + 6 + 6 + 8);
  kv_map_free(m);
}

KV_TEST(rehash_step, "rehash_step returns 1 only while a rehash is running") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  CHECK_INT(kv_map_rehash_step(m, 0), 0);
  CHECK_INT(kv_map_rehash_step(m, 1), 0);
  CHECK_INT(kv_map_rehash_step(m, SIZE_MAX), 0);

  /* Insert until a grow starts, then drive it one bucket at a time. */
  char k[32];
  size_t n = 0;
  while (kv_map_rehash_step(m, 0) == 0) {
    CHECK(n < 100000);
    size_t kl = key_of(k, n++);
    put_new(m, mk(k, kl, "v", 1));
  }
  CHECK(n >= 16);
  size_t calls = 0;
  while (kv_map_rehash_step(m, 1) == 1) {
    calls++;
    /* Each call moves a bucket or skips ten empty ones. */
    CHECK(calls <= n);
    CHECK_INT(kv_map_rehash_step(m, 0), 1);
  }
  CHECK_INT(kv_map_rehash_step(m, 0), 0);
  CHECK_INT(kv_map_rehash_step(m, 1), 0);
  CHECK_INT(kv_map_count(m), n);
  for (size_t i = 0; i < n; i++) {
    size_t kl = key_of(k, i);
    check_get(m, k, kl, "v", 1);
  }

  /* The next grow finishes in one unbounded step. */
  size_t first = n;
  while (kv_map_rehash_step(m, 0) == 0) {
    CHECK(n < 100000);
    size_t kl = key_of(k, n++);
    put_new(m, mk(k, kl, "v", 1));
  }
  CHECK(n >= 2 * first);
  CHECK_INT(kv_map_rehash_step(m, SIZE_MAX), 0);
  CHECK_INT(kv_map_rehash_step(m, 0), 0);
  for (size_t i = 0; i < n; i++) {
    size_t kl = key_of(k, i);
    check_get(m, k, kl, "v", 1);
  }
  CHECK_INT(kv_map_count(m), n);

  /* Delete until a shrink starts: its old table is sparse, so steps end
   * early on runs of empty buckets yet still report the rehash. */
  size_t left = n;
  while (kv_map_rehash_step(m, 0) == 0) {
    CHECK(left > 0);
    size_t kl = key_of(k, --left);
    kv_rec_unref(kv_map_del(m, k, kl));
  }
  CHECK(left < n / 4);
  calls = 0;
  while (kv_map_rehash_step(m, 1) == 1) calls++;
  CHECK(calls > 0);
  CHECK_INT(kv_map_rehash_step(m, 0), 0);
  CHECK_INT(kv_map_count(m), left);
  for (size_t i = 0; i < n; i++) {
    size_t kl = key_of(k, i);
    if (i < left)
      check_get(m, k, kl, "v", 1);
    else
      CHECK(kv_map_get(m, k, kl) == NULL);
  }
  kv_map_free(m);
}

KV_TEST(rec_limits, "kv_rec_new checks limits and kv_rec_reserve grows") {
  kv_rec_t *r = (kv_rec_t *)1;
  CHECK_INT(kv_rec_new("k", 0, 0, &r), KV_EINVAL);
  CHECK(r == (kv_rec_t *)1);
  static char key[KV_KEY_MAX + 1];
  memset(key, 'q', sizeof(key));
  CHECK_INT(kv_rec_new(key, KV_KEY_MAX + 1, 0, &r), KV_EINVAL);
  if (SIZE_MAX > UINT32_MAX)
    CHECK_INT(kv_rec_new("k", 1, (size_t)UINT32_MAX + 1, &r), KV_EINVAL);

  CHECK_INT(kv_rec_new(key, KV_KEY_MAX, 0, &r), 0);
  CHECK_INT(r->klen, KV_KEY_MAX);
  CHECK_INT(r->vlen, 0);
  CHECK_INT(r->refs, 1);
  CHECK(r->next == NULL);
  CHECK_MEM(kv_rec_key(r), r->klen, key, KV_KEY_MAX);
  kv_rec_unref(r);

  CHECK_INT(kv_rec_new("grow", 4, 4, &r), 0);
  memcpy(kv_rec_value_mut(r), "abcd", 4);
  r->vlen = 4;
  /* Grow by doubling to 1 MiB, filling the value as a body would. */
  for (size_t cap = 8; cap <= (1u << 20); cap *= 2) {
    CHECK_INT(kv_rec_reserve(&r, cap), 0);
    CHECK_MEM(kv_rec_key(r), r->klen, "grow", 4);
    CHECK_MEM(kv_rec_value(r), 4, "abcd", 4);
    char *v = kv_rec_value_mut(r);
    for (size_t i = r->vlen; i < cap; i++) v[i] = (char)('a' + i % 26);
    r->vlen = (uint32_t)cap;
  }
  CHECK_INT(r->vlen, 1u << 20);
  /* A capacity below vlen never cuts the value. */
  CHECK_INT(kv_rec_reserve(&r, 1), 0);
  CHECK_INT(r->vlen, 1u << 20);
  CHECK_INT(kv_rec_value(r)[(1u << 20) - 1], 'a' + ((1u << 20) - 1) % 26);
  if (SIZE_MAX > UINT32_MAX) {
    kv_rec_t *before = r;
    CHECK_INT(kv_rec_reserve(&r, (size_t)UINT32_MAX + 1), KV_EINVAL);
    CHECK(r == before);
  }

  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  put_new(m, r);
  CHECK_INT(kv_map_bytes(m), 4 + (1u << 20));
  kv_rec_t *g = kv_map_get(m, "grow", 4);
  CHECK(g == r);
  CHECK_MEM(kv_rec_value(g), 4, "abcd", 4);
  kv_map_free(m);
  kv_rec_unref(NULL);
}

KV_TEST(free_held, "freeing a map mid-rehash spares records held elsewhere") {
  kv_map_t *m = NULL;
  CHECK_INT(kv_map_new(&m), 0);
  enum { N = 3000, HELD = 50 };
  kv_rec_t *held[HELD];
  char k[32];
  size_t nheld = 0;
  for (size_t i = 0; i < N; i++) {
    size_t kl = key_of(k, i);
    put_new(m, mk(k, kl, k, kl));
  }
  /* Grow until a rehash is in progress so both tables hold records. */
  size_t n = N;
  while (kv_map_rehash_step(m, 0) == 0) {
    size_t kl = key_of(k, n++);
    put_new(m, mk(k, kl, k, kl));
  }
  for (size_t i = 0; i < n; i += n / HELD + 1) {
    size_t kl = key_of(k, i);
    held[nheld++] = kv_rec_ref(kv_map_get(m, k, kl));
  }
  CHECK_INT(kv_map_rehash_step(m, 0), 1);
  kv_map_free(m);
  for (size_t i = 0; i < nheld; i++) {
    CHECK_INT(held[i]->refs, 1);
    CHECK(held[i]->next == NULL);
    CHECK_MEM(kv_rec_key(held[i]), held[i]->klen, kv_rec_value(held[i]),
              held[i]->vlen);
    kv_rec_unref(held[i]);
  }
}

KV_TEST(reserve, "reserving room for a known count leaves no rehash for the inserts") {
  kv_map_t *m;
  char key[32];

  CHECK_INT(kv_map_new(&m), 0);
  put_new(m, mks("early", "x"));
  CHECK_INT(kv_map_reserve(m, 50000), 0);
  CHECK_INT(kv_map_rehash_step(m, 0), 0);
  for (int i = 0; i < 50000; i++) {
    snprintf(key, sizeof(key), "key-%d", i);
    put_new(m, mks(key, "v"));
    if (kv_map_rehash_step(m, 0) != 0) KV__FAIL("rehash after %d inserts", i);
  }
  CHECK_INT(kv_map_count(m), 50001);
  check_gets(m, "early", "x");
  check_gets(m, "key-49999", "v");
  CHECK_INT(kv_map_reserve(m, 10), 0); /* never shrinks */
  check_gets(m, "key-0", "v");
  kv_map_free(m);
}

KV_TEST(rehash_for_idle, "a table left half-rehashed finishes within a few millisecond budgets while idle") {
  kv_map_t *m = NULL;
  char k[32];
  size_t n = 0, calls = 0;

  CHECK_INT(kv_map_new(&m), 0);
  CHECK_INT(kv_map_rehashing(m), 0);
  CHECK_INT(kv_map_rehash_for(m, 1000000), 0);
  /* Grow past 64K keys, stopping as soon as the last insert started a
   * rehash: no further operation would ever move its buckets. */
  while (n < 65536 || !kv_map_rehashing(m)) {
    CHECK(n < 1000000);
    size_t kl = key_of(k, n++);
    put_new(m, mk(k, kl, "v", 1));
  }
  CHECK_INT(kv_map_rehashing(m), 1);
  /* What the listener's sweep does once a second. */
  while (kv_map_rehash_for(m, 1000000) == 1) CHECK(++calls < 1000);
  CHECK_INT(kv_map_rehashing(m), 0);
  CHECK_INT(kv_map_count(m), n);
  for (size_t i = 0; i < n; i++) {
    size_t kl = key_of(k, i);
    check_get(m, k, kl, "v", 1);
  }
  kv_map_free(m);
}
