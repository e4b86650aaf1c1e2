/* out.h - a connection's queue of response bytes.
 *
 * Headers and small bodies are copied into an arena; large bodies (a
 * value, the image) are referenced in place and kept alive by a reference
 * until the queue is reset, so a value being written to a slow socket
 * stays valid after its key is overwritten.  A whole queue goes out in one
 * writev: kv_out_iov makes its buffers.
 *
 * Every append returns 0 or KV_ENOMEM.  A failed append leaves what was
 * queued before it intact, but an answer cut short by one must not be
 * sent: the caller drops the connection.
 */
#ifndef KV_OUT_H
#define KV_OUT_H

#include <stddef.h>
#include <uv.h>

#include "kv/image.h"
#include "kv/map.h"

typedef struct {
  const char *ptr; /* NULL: the bytes are in the arena at off */
  size_t off;
  size_t len;
} kv_out_seg_t;

typedef struct {
  int is_image;
  void *p;
} kv_out_ref_t;

typedef struct {
  char *arena;
  size_t alen, acap;
  kv_out_seg_t *segs;
  size_t nseg, segcap;
  kv_out_ref_t *refs;
  size_t nref, refcap;
  uv_buf_t *iov;
  size_t niov, iovcap;
  size_t iov_i; /* the first buffer not yet fully written */
  size_t bytes; /* everything queued */
} kv_out_t;

/* Bodies up to this size are copied rather than referenced: one copy is
 * cheaper than an extra iovec and a reference. */
#define KV_OUT_COPY_MAX 1024

/* The largest iovec kv_out_iov makes: uv_buf_init takes an unsigned
 * length, so a longer segment (an image of 4 GiB or more) is split. */
#define KV_OUT_IOV_MAX ((size_t)1 << 30)

/* Copies len bytes. */
int kv_out_append(kv_out_t *o, const void *data, size_t len);
/* Queues len bytes at ptr, kept alive by a reference on rec. */
int kv_out_append_rec(kv_out_t *o, kv_rec_t *rec, const char *ptr,
                      size_t len);
/* Queues the whole image, kept alive by a reference. */
int kv_out_append_image(kv_out_t *o, kv_image_t *img);
/* Fills o->iov (segments over KV_OUT_IOV_MAX take several buffers) and
 * returns how many buffers there are (o->niov), or 0 without memory. */
size_t kv_out_iov(kv_out_t *o);
/* Drops the queued bytes and their references. */
void kv_out_reset(kv_out_t *o);
void kv_out_free(kv_out_t *o);

#endif
