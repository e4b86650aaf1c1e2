/* out.c - a connection's queue of response bytes. */
#include "kv/out.h"

#include <stdlib.h>
#include <string.h>

#include "kv/error.h"
#include "out_int.h"

int kv__out_grow(void **p, size_t *cap, size_t need, size_t elem,
                 size_t min) {
  size_t ncap;
  void *np;

  if (need <= *cap) return 0;
  ncap = *cap != 0 ? *cap : min;
  while (ncap < need) ncap *= 2;
  np = realloc(*p, ncap * elem);
  if (np == NULL) return KV_ENOMEM;
  *p = np;
  *cap = ncap;
  return 0;
}

/* Room for one more segment. */
static int seg_room(kv_out_t *o) {
  return kv__out_grow((void **)&o->segs, &o->segcap, o->nseg + 1,
                      sizeof(*o->segs), 8);
}

int kv_out_append(kv_out_t *o, const void *data, size_t len) {
  kv_out_seg_t *last;

  if (len == 0) return 0;
  if (kv__out_grow((void **)&o->arena, &o->acap, o->alen + len, 1, 1024) != 0)
    return KV_ENOMEM;
  last = o->nseg != 0 ? &o->segs[o->nseg - 1] : NULL;
  if (last != NULL && last->ptr == NULL &&
      last->off + last->len == o->alen) {
    last->len += len;
  } else {
    if (seg_room(o) != 0) return KV_ENOMEM;
    o->segs[o->nseg++] = (kv_out_seg_t){NULL, o->alen, len};
  }
  memcpy(o->arena + o->alen, data, len);
  o->alen += len;
  o->bytes += len;
  return 0;
}

static int append_ref(kv_out_t *o, int is_image, void *p, const char *ptr,
                      size_t len) {
  if (seg_room(o) != 0 ||
      kv__out_grow((void **)&o->refs, &o->refcap, o->nref + 1,
                   sizeof(*o->refs), 4) != 0)
    return KV_ENOMEM;
  o->segs[o->nseg++] = (kv_out_seg_t){ptr, 0, len};
  o->refs[o->nref++] = (kv_out_ref_t){is_image, p};
  o->bytes += len;
  return 0;
}

int kv_out_append_rec(kv_out_t *o, kv_rec_t *rec, const char *ptr,
                      size_t len) {
  int rc;

  if (len <= KV_OUT_COPY_MAX) return kv_out_append(o, ptr, len);
  rc = append_ref(o, 0, rec, ptr, len);
  if (rc == 0) kv_rec_ref(rec);
  return rc;
}

int kv_out_append_image(kv_out_t *o, kv_image_t *img) {
  int rc = append_ref(o, 1, img, kv_image_data(img), kv_image_len(img));

  if (rc == 0) kv_image_ref(img);
  return rc;
}

size_t kv_out_iov(kv_out_t *o) {
  size_t n = 0;

  for (size_t i = 0; i < o->nseg; i++)
    n += (o->segs[i].len + KV_OUT_IOV_MAX - 1) / KV_OUT_IOV_MAX;
  o->niov = 0;
  if (kv__out_grow((void **)&o->iov, &o->iovcap, n, sizeof(*o->iov), 8) != 0)
    return 0;
  for (size_t i = 0; i < o->nseg; i++) {
    const kv_out_seg_t *sg = &o->segs[i];
    char *base = sg->ptr != NULL ? (char *)sg->ptr : o->arena + sg->off;
    for (size_t left = sg->len; left > 0;) {
      size_t k = left < KV_OUT_IOV_MAX ? left : KV_OUT_IOV_MAX;
      o->iov[o->niov++] = uv_buf_init(base, (unsigned)k);
      base += k;
      left -= k;
    }
  }
  return o->niov;
}

void kv_out_reset(kv_out_t *o) {
  for (size_t i = 0; i < o->nref; i++) {
    if (o->refs[i].is_image)
      kv_image_unref(o->refs[i].p);
    else
      kv_rec_unref(o->refs[i].p);
  }
  o->nref = 0;
  o->nseg = 0;
  o->niov = 0;
  o->iov_i = 0;
  o->alen = 0;
  o->bytes = 0;
  /* Let one huge pipeline's arena go rather than keep it per connection. */
  if (o->acap > 65536) {
    free(o->arena);
    o->arena = NULL;
    o->acap = 0;
  }
}

void kv_out_free(kv_out_t *o) {
  kv_out_reset(o);
  free(o->arena);
  free(o->segs);
  free(o->refs);
  free(o->iov);
  memset(o, 0, sizeof(*o));
}
