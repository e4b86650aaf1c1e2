/* test_ttl.c - the expiry heap and the wall clock. */
#include "kv/ttl.h"

#include <time.h>

#include "kv/error.h"
#include "test.h"

static kv_rec_t *rec(const char *key, uint64_t expires) {
  kv_rec_t *r;
  if (kv_rec_new(key, strlen(key), 0, &r) != 0) KV__FAIL("out of memory");
  r->expires = expires;
  return r;
}

/* Checks the heap property and that every record knows its place. */
static void check_heap(const kv_ttl_t *t) {
  for (size_t i = 0; i < t->n; i++) {
    CHECK_INT(t->h[i].rec->heap, i + 1);
    CHECK_INT(t->h[i].at, t->h[i].rec->expires);
    if (i > 0) CHECK(t->h[(i - 1) / 2].at <= t->h[i].at);
  }
}

KV_TEST(first_is_earliest, "the first record is always the one that expires earliest, whatever the order of adds") {
  kv_ttl_t t = {0};
  uint64_t times[] = {50, 10, 40, 10, 30, 20, 60, 5};
  kv_rec_t *r[8];
  for (int i = 0; i < 8; i++) {
    r[i] = rec("k", times[i]);
    CHECK_INT(kv_ttl_add(&t, r[i]), 0);
    check_heap(&t);
  }
  uint64_t last = 0;
  for (int i = 0; i < 8; i++) {
    kv_rec_t *f = kv_ttl_first(&t);
    CHECK(f != NULL);
    CHECK(f->expires >= last);
    last = f->expires;
    kv_ttl_remove(&t, f);
    CHECK_INT(f->heap, 0);
    check_heap(&t);
  }
  CHECK(kv_ttl_first(&t) == NULL);
  kv_ttl_free(&t);
  for (int i = 0; i < 8; i++) kv_rec_unref(r[i]);
}

KV_TEST(remove_middle, "removing a record from the middle keeps the heap ordered and leaves the others in place") {
  kv_ttl_t t = {0};
  kv_rec_t *r[200];
  unsigned seed = 7;
  for (int i = 0; i < 200; i++) {
    seed = seed * 1103515245u + 12345u;
    r[i] = rec("k", 1 + (seed >> 8) % 1000);
    CHECK_INT(kv_ttl_add(&t, r[i]), 0);
  }
  for (int i = 0; i < 200; i += 3) {
    kv_ttl_remove(&t, r[i]);
    CHECK_INT(r[i]->heap, 0);
    check_heap(&t);
  }
  kv_ttl_remove(&t, r[0]); /* not in the heap: nothing happens */
  CHECK_INT(t.n, 200 - 67);
  kv_ttl_free(&t);
  for (int i = 0; i < 200; i++) {
    CHECK_INT(r[i]->heap, 0);
    kv_rec_unref(r[i]);
  }
}

KV_TEST(expired_edge, "a record is expired from its expiry millisecond on, and never without an expiry time") {
  kv_rec_t *r = rec("k", 1000);
  CHECK(!kv_rec_expired(r, 999));
  CHECK(kv_rec_expired(r, 1000));
  CHECK(kv_rec_expired(r, 1001));
  r->expires = 0;
  CHECK(!kv_rec_expired(r, UINT64_MAX));
  kv_rec_unref(r);
}

KV_TEST(wall_clock, "kv_ttl_now is the wall clock in Unix milliseconds") {
  uint64_t a = (uint64_t)time(NULL) * 1000, n = kv_ttl_now();
  CHECK(n + 2000 >= a && n <= a + 2000);
}
