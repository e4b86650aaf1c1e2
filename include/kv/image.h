/* image.h - the JSON image of the map.
 *
 * This is the only module that talks to yajl's generator.  An image is one
 * JSON object of every key and its value, in the order the iterator yields
 * them (key-byte order from a checkpoint snapshot), so two images of the
 * same data are byte-identical.
 *
 * kv_image_build streams the encoding into a memory-mapped, file-backed
 * buffer in the data directory.  The buffer grows by extending the file with
 * posix_fallocate before it is remapped, so a full disk is an error rather
 * than a SIGBUS.  The finished file is renamed to DIR/image.json.  A built
 * image is read-only and reference-counted: a client still being sent an
 * older generation keeps that mapping alive, and it never changes.
 */
#ifndef KV_IMAGE_H
#define KV_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "kv/slice.h"

#define KV_IMAGE_FILE "image.json"

/* Yields the next item: returns 1 for a record, 0 at the end, or a
 * negative error that aborts the encoding. */
typedef int (*kv_image_next_fn)(void *it, kv_item_t *item);

/* Receives encoded bytes; returns 0, or a negative error to abort. */
typedef int (*kv_image_write_fn)(void *ctx, const char *buf, size_t len);

enum {
  KV_IMAGE_OBJECT = 0, /* {"k":"v",...} with a trailing newline */
  KV_IMAGE_NDJSON = 1, /* {"key":"k","value":"v","rev":N} one per line */
  KV_IMAGE_KEYS = 2    /* ["k",...] with a trailing newline: keys only */
};

/* Encodes every record from next into write.  Returns 0, the first error of
 * next or write, or KV_EUTF8 if a key or value is not valid UTF-8. */
int kv_image_encode(int format, kv_image_next_fn next, void *it,
                    kv_image_write_fn write, void *ctx);

typedef struct kv_image kv_image_t;

/* Builds a new generation in dir from next; size_hint is a guess of the
 * encoded size (0 if unknown).  With dir NULL the image is built in
 * anonymous memory and no file is written: the fallback when the disk
 * cannot take the file.  Safe on a worker thread.  The result has one
 * reference.  Returns 0, KV_ENOSPACE, KV_EIO, KV_ENOMEM or an error of
 * next. */
int kv_image_build(const char *dir, uint64_t rev, size_t size_hint,
                   kv_image_next_fn next, void *it, kv_image_t **out);

/* The same in another format: a listing's body (KV_IMAGE_OBJECT or
 * KV_IMAGE_KEYS). */
int kv_image_build_as(int format, const char *dir, uint64_t rev,
                      size_t size_hint, kv_image_next_fn next, void *it,
                      kv_image_t **out);

/* Encodes one change of the change feed as a JSON object:
 * {"rev":N,"op":"put","key":K,"value":V}, or without "value" for op
 * "delete" (KV_OP_DEL) and "expire" (KV_OP_EXPIRE).  The malloc'd result
 * starts with room zero bytes for the caller's use; the JSON (len bytes,
 * no newline) follows.  Returns 0, KV_ENOMEM or KV_EUTF8. */
int kv_image_change(uint64_t rev, int op, kv_slice_t key, kv_slice_t val,
                    size_t room, char **out, size_t *len);
/* Makes an image of the first len bytes of the file open at fd, mapped
 * read-only, so that any file (a backup) is served as the image is:
 * without a copy, and kept alive by references.  The mapping holds the
 * file, so the caller may close fd at once; nothing may shorten the file
 * while the image lives (an unlinked one is safe).  Returns 0 with one
 * reference, KV_EINVAL for len 0 or past the file's end, or KV_ENOMEM. */
int kv_image_from_fd(int fd, size_t len, uint64_t rev, kv_image_t **out);

const char *kv_image_data(const kv_image_t *img);
size_t kv_image_len(const kv_image_t *img);
uint64_t kv_image_rev(const kv_image_t *img); /* as passed to build */

/* References are not atomic: take and drop them on one thread. */
kv_image_t *kv_image_ref(kv_image_t *img);
void kv_image_unref(kv_image_t *img); /* accepts NULL */

/* Checks that buf is one JSON object of string values with strictly
 * increasing keys (by bytes), as kv_image_encode writes it.  On failure
 * writes a one-line reason to err.  Returns 0, KV_ECORRUPT, or KV_ENOMEM
 * if the check itself ran out of memory. */
int kv_image_validate(const char *buf, size_t len, char *err, size_t errlen);

#endif
