/* fuzz_image.c - the image encoder against a JSON parser round trip.
 *
 * The input is split at 0xFF bytes (never part of UTF-8) into alternating
 * keys and values.  Pairs with invalid UTF-8 or an empty key are dropped,
 * the rest are sorted by key bytes and deduplicated, as a snapshot would
 * yield them.  Both output formats are encoded; the object must pass
 * kv_image_validate, and yajl's tree parser must give back every key and
 * value byte for byte, in order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "kv/codec.h"
#include "kv/error.h"
#include "kv/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PAIRS 64

typedef struct {
  kv_slice_t k, v;
} pair_t;

typedef struct {
  const pair_t *p;
  size_t n, i;
} iter_t;

typedef struct {
  char *buf;
  size_t len, cap;
} sink_t;

static int next_pair(void *it, kv_item_t *item) {
  iter_t *t = it;
  if (t->i == t->n) return 0;
  item->key = t->p[t->i].k;
  item->val = t->p[t->i].v;
  item->rev = t->i + 1;
  t->i++;
  return 1;
}

static int sink_write(void *ctx, const char *buf, size_t len) {
  sink_t *s = ctx;
  if (s->len + len + 1 > s->cap) {
    s->cap = (s->len + len + 1) * 2;
    if (!(s->buf = realloc(s->buf, s->cap))) abort();
  }
  memcpy(s->buf + s->len, buf, len);
  s->len += len;
  s->buf[s->len] = '\0';
  return 0;
}

static int cmp(const void *a, const void *b) {
  const pair_t *x = a, *y = b;
  size_t n = x->k.len < y->k.len ? x->k.len : y->k.len;
  int c = memcmp(x->k.ptr, y->k.ptr, n);
  return c ? c : (x->k.len > y->k.len) - (x->k.len < y->k.len);
}

/* Strings with NUL cannot be compared through yajl_tree's C strings. */
static int has_nul(kv_slice_t s) { return memchr(s.ptr, 0, s.len) != NULL; }

static void round_trip(const pair_t *p, size_t n, const sink_t *obj) {
  char err[256];
  yajl_val tree = yajl_tree_parse(obj->buf, err, sizeof(err));

  if (!tree || !YAJL_IS_OBJECT(tree) || tree->u.object.len != n) abort();
  for (size_t i = 0; i < n; i++) {
    const char *k = tree->u.object.keys[i];
    yajl_val v = tree->u.object.values[i];
    if (!YAJL_IS_STRING(v)) abort();
    if (has_nul(p[i].k) || has_nul(p[i].v)) continue;
    if (strlen(k) != p[i].k.len || memcmp(k, p[i].k.ptr, p[i].k.len) ||
        strlen(v->u.string) != p[i].v.len ||
        memcmp(v->u.string, p[i].v.ptr, p[i].v.len))
      abort();
  }
  yajl_tree_free(tree);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pair_t pairs[MAX_PAIRS];
  kv_slice_t parts[2 * MAX_PAIRS];
  size_t nparts = 0, n = 0, start = 0;
  sink_t obj = {0}, nd = {0};
  iter_t it;
  char err[256];
  int rc;

  for (size_t i = 0; i <= size && nparts < 2 * MAX_PAIRS; i++) {
    if (i == size || data[i] == 0xFF) {
      parts[nparts].ptr = (const char *)data + start;
      parts[nparts].len = i - start;
      nparts++;
      start = i + 1;
    }
  }
  for (size_t i = 0; i + 1 < nparts; i += 2) {
    if (parts[i].len == 0 || !kv_utf8_valid(parts[i].ptr, parts[i].len) ||
        !kv_utf8_valid(parts[i + 1].ptr, parts[i + 1].len))
      continue;
    pairs[n].k = parts[i];
    pairs[n].v = parts[i + 1];
    n++;
  }
  qsort(pairs, n, sizeof(*pairs), cmp);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) /* one record per key, as in LMDB */
    if (o == 0 || cmp(&pairs[i], &pairs[o - 1]) != 0) pairs[o++] = pairs[i];
  n = o;

  it = (iter_t){pairs, n, 0};
  rc = kv_image_encode(KV_IMAGE_OBJECT, next_pair, &it, sink_write, &obj);
  if (rc != 0) abort();
  if (kv_image_validate(obj.buf, obj.len, err, sizeof(err)) != 0) abort();
  round_trip(pairs, n, &obj);

  it = (iter_t){pairs, n, 0};
  rc = kv_image_encode(KV_IMAGE_NDJSON, next_pair, &it, sink_write, &nd);
  if (rc != 0) abort();
  size_t lines = 0;
  for (size_t i = 0; i < nd.len; i++) lines += nd.buf[i] == '\n';
  if (lines != n) abort(); /* escaping must leave no raw newline */
  free(obj.buf);
  free(nd.buf);
  return 0;
}
