/* image.c - the JSON image of the map.
 *
 * The only file that talks to yajl's generator.  yajl writes through a
 * print callback: kv_image_encode stages its output in a 64 KiB buffer
 * before calling the caller's write function, and kv_image_build has the
 * callback copy straight into the file mapping, so every byte is copied
 * once.  Encoding a million records into memory that way took 0.25 s
 * against 0.28 s with yajl's own buffer drained by yajl_gen_get_buf and
 * yajl_gen_clear every 64 KiB, which costs a second copy.
 *
 * yajl escapes '"', '\\', and every byte below 0x20 (\b \f \n \r \t by name,
 * the rest as \u00XX, NUL included); '/' and DEL are left alone.  Its UTF-8
 * check is structural (it accepts overlong forms and surrogates), so the
 * strict check belongs where values enter the server.
 */
#include "kv/image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "kv/error.h"
#include "kv/log.h"

#define IMAGE_STAGE (64 * 1024)
#define IMAGE_MIN_CAP (64 * 1024)
#define IMAGE_TMP ".image.json.tmp"

struct kv_image {
  char *base;    /* read-only mapping of the file as built */
  size_t len;    /* bytes of JSON */
  size_t maplen; /* bytes mapped: len rounded up to a page */
  uint64_t rev;
  unsigned refs;
};

/* kv_image_encode's sink: yajl's pieces are gathered here and handed to
 * the caller's write function in large chunks. */
typedef struct {
  kv_image_write_fn write;
  void *ctx;
  int err; /* first error; yajl's print callback cannot return one */
  size_t used;
  char buf[IMAGE_STAGE];
} image_stage_t;

/* kv_image_build's sink: the mapping of the file being written. */
typedef struct {
  int fd;
  char *base;
  size_t used, cap;
  int err;
} image_map_t;

/* Maps an errno from file calls to the codes kv_image_build promises. */
static int image_errno(int e) {
  switch (e) {
  case ENOSPC:
  case EDQUOT: return KV_ENOSPACE;
  case ENOMEM: return KV_ENOMEM;
  default: return KV_EIO;
  }
}

static int image_gen_string(yajl_gen g, kv_slice_t s) {
  const unsigned char *p = (const unsigned char *)(s.ptr ? s.ptr : "");
  switch (yajl_gen_string(g, p, s.len)) {
  case yajl_gen_status_ok: return 0;
  case yajl_gen_invalid_string: return KV_EUTF8;
  default: return KV_EINVAL;
  }
}

static int image_gen_cstr(yajl_gen g, const char *s) {
  kv_slice_t sl = {s, strlen(s)};
  return image_gen_string(g, sl);
}

/* A growing buffer for one change's JSON. */
typedef struct {
  char *p;
  size_t len, cap;
  int err;
} image_buf_t;

static void image_buf_print(void *ctx, const char *s, size_t n) {
  image_buf_t *b = ctx;
  if (b->err) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 128;
    char *p;
    while (cap < b->len + n) cap *= 2;
    if (!(p = realloc(b->p, cap))) {
      b->err = KV_ENOMEM;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

int kv_image_change(uint64_t rev, int op, kv_slice_t key, kv_slice_t val,
                    size_t room, char **out, size_t *len) {
  static const char *const names[] = {"", "put", "delete", "expire"};
  image_buf_t b = {NULL, 0, 0, 0};
  yajl_gen g = yajl_gen_alloc(NULL);
  int err = 0;

  *out = NULL;
  if (g == NULL || op < 1 || op > 3) {
    if (g) yajl_gen_free(g);
    return g ? KV_EINVAL : KV_ENOMEM;
  }
  /* The caller's header goes first: one allocation for both. */
  if (room) {
    char zero[64] = {0};
    for (size_t left = room; left; ) {
      size_t n = left < sizeof zero ? left : sizeof zero;
      image_buf_print(&b, zero, n);
      left -= n;
    }
  }
  if (!yajl_gen_config(g, yajl_gen_print_callback, image_buf_print, &b) ||
      !yajl_gen_config(g, yajl_gen_validate_utf8, 1) ||
      yajl_gen_map_open(g) != 0)
    err = KV_ENOMEM;
  if (err == 0) err = image_gen_cstr(g, "rev");
  if (err == 0 && yajl_gen_integer(g, (long long)rev) != 0) err = KV_EINVAL;
  if (err == 0) err = image_gen_cstr(g, "op");
  if (err == 0) err = image_gen_cstr(g, names[op]);
  if (err == 0) err = image_gen_cstr(g, "key");
  if (err == 0) err = image_gen_string(g, key);
  if (err == 0 && op == 1) err = image_gen_cstr(g, "value");
  if (err == 0 && op == 1) err = image_gen_string(g, val);
  if (err == 0 && yajl_gen_map_close(g) != 0) err = KV_EINVAL;
  if (err == 0) err = b.err;
  yajl_gen_free(g);
  if (err != 0) {
    free(b.p);
    return err;
  }
  *out = b.p;
  *len = b.len - room;
  return 0;
}

/* Runs the generator over every record from next, printing through print
 * (whose context is pctx).  *sink_err is the sink's latched error, checked
 * after each record so a failed write stops the walk early.  Returns 0,
 * the first error of next or the sink, KV_EUTF8 or KV_ENOMEM. */
static int image_encode_to(int format, kv_image_next_fn next, void *it,
                           yajl_print_t print, void *pctx,
                           const int *sink_err) {
  yajl_gen g = yajl_gen_alloc(NULL);
  kv_item_t item;
  int err = 0;
  int r;

  if (g == NULL) return KV_ENOMEM;
  if (!yajl_gen_config(g, yajl_gen_print_callback, print, pctx) ||
      !yajl_gen_config(g, yajl_gen_validate_utf8, 1)) {
    err = KV_ENOMEM;
    goto out;
  }
  if ((format == KV_IMAGE_OBJECT && yajl_gen_map_open(g) != 0) ||
      (format == KV_IMAGE_KEYS && yajl_gen_array_open(g) != 0)) {
    err = KV_ENOMEM;
    goto out;
  }
  while ((r = next(it, &item)) > 0) {
    if (format == KV_IMAGE_NDJSON) {
      if (yajl_gen_map_open(g) != 0) err = KV_EINVAL;
      if (err == 0) err = image_gen_cstr(g, "key");
      if (err == 0) err = image_gen_string(g, item.key);
      if (err == 0) err = image_gen_cstr(g, "value");
      if (err == 0) err = image_gen_string(g, item.val);
      if (err == 0) err = image_gen_cstr(g, "rev");
      if (err == 0 && yajl_gen_integer(g, (long long)item.rev) != 0)
        err = KV_EINVAL;
      if (err == 0 && yajl_gen_map_close(g) != 0) err = KV_EINVAL;
      if (err != 0) goto out;
      print(pctx, "\n", 1);
      yajl_gen_reset(g, NULL); /* allow the next top-level object */
    } else {
      err = image_gen_string(g, item.key);
      if (err == 0 && format == KV_IMAGE_OBJECT)
        err = image_gen_string(g, item.val);
      if (err != 0) goto out;
    }
    if (*sink_err) {
      err = *sink_err;
      goto out;
    }
  }
  if (r < 0) {
    err = r;
    goto out;
  }
  if (format != KV_IMAGE_NDJSON) {
    if ((format == KV_IMAGE_OBJECT ? yajl_gen_map_close(g)
                                   : yajl_gen_array_close(g)) != 0) {
      err = KV_EINVAL;
      goto out;
    }
    print(pctx, "\n", 1);
  }
  err = *sink_err;
out:
  yajl_gen_free(g);
  return err;
}

static int image_stage_flush(image_stage_t *s) {
  int err = 0;
  if (s->used > 0) err = s->write(s->ctx, s->buf, s->used);
  s->used = 0;
  return err;
}

static void image_stage_print(void *ctx, const char *str, size_t len) {
  image_stage_t *s = ctx;
  if (s->err != 0) return;
  if (len > sizeof(s->buf) - s->used) {
    s->err = image_stage_flush(s);
    if (s->err != 0) return;
    if (len >= sizeof(s->buf)) { /* a long unescaped run: pass it through */
      s->err = s->write(s->ctx, str, len);
      return;
    }
  }
  memcpy(s->buf + s->used, str, len);
  s->used += len;
}

int kv_image_encode(int format, kv_image_next_fn next, void *it,
                    kv_image_write_fn write, void *ctx) {
  image_stage_t *s;
  int err;

  if (format != KV_IMAGE_OBJECT && format != KV_IMAGE_NDJSON &&
      format != KV_IMAGE_KEYS)
    return KV_EINVAL;
  s = malloc(sizeof(*s));
  if (s == NULL) return KV_ENOMEM;
  s->write = write;
  s->ctx = ctx;
  s->err = 0;
  s->used = 0;
  err = image_encode_to(format, next, it, image_stage_print, s, &s->err);
  if (err == 0) err = image_stage_flush(s);
  free(s);
  return err;
}

/* Makes room for need more bytes by doubling.  A file-backed buffer is
 * extended with posix_fallocate before the mapping covers it, so the disk
 * blocks exist before we store into them: a full disk is ENOSPC here
 * rather than a SIGBUS later.  An anonymous one (fd < 0) simply moves.
 * Returns 0 or an error; the old mapping stays valid. */
static int image_map_grow(image_map_t *m, size_t need) {
  size_t ncap = m->cap;
  void *p;
  int rc;

  while (ncap - m->used < need) {
    if (ncap > SIZE_MAX / 2) return KV_ENOMEM;
    ncap *= 2;
  }
  if (m->fd >= 0) {
    rc = posix_fallocate(m->fd, (off_t)m->cap, (off_t)(ncap - m->cap));
    if (rc != 0) return image_errno(rc);
  }
  /* The same pages are remapped (from the page cache, or the anonymous
   * ones themselves): nothing is copied even when the mapping moves. */
  p = mremap(m->base, m->cap, ncap, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) return KV_ENOMEM;
  m->base = p;
  m->cap = ncap;
  return 0;
}

static void image_map_print(void *ctx, const char *str, size_t len) {
  image_map_t *m = ctx;
  if (m->err != 0) return;
  if (len > m->cap - m->used) {
    m->err = image_map_grow(m, len);
    if (m->err != 0) return;
  }
  memcpy(m->base + m->used, str, len);
  m->used += len;
}

static int image_path(char *buf, size_t size, const char *dir,
                      const char *name) {
  int n = snprintf(buf, size, "%s/%s", dir, name);
  return n < 0 || (size_t)n >= size ? KV_EIO : 0;
}

/* Creates the buffer: DIR/.image.json.tmp, allocated on disk and mapped
 * shared, or with tmp NULL an anonymous mapping.  cap is page-aligned. */
static int image_map_open(image_map_t *m, const char *tmp, size_t cap) {
  int rc;

  m->cap = cap;
  if (tmp == NULL) {
    m->base = mmap(NULL, cap, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m->base == MAP_FAILED ? KV_ENOMEM : 0;
  }
  m->fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (m->fd < 0) return image_errno(errno);
  rc = posix_fallocate(m->fd, 0, (off_t)cap);
  if (rc != 0) return image_errno(rc);
  m->base = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
  return m->base == MAP_FAILED ? KV_ENOMEM : 0;
}

/* Gives back the unused tail of the last doubling and makes the buffer
 * read-only.  A file is truncated to the JSON first, then the mapping to
 * the pages that still have a file under them (touching a page past the
 * end would fault). */
static int image_map_finish(image_map_t *m, size_t page) {
  size_t maplen = (m->used + page - 1) / page * page;

  if (maplen == 0) maplen = page;
  if (m->fd >= 0 && ftruncate(m->fd, (off_t)m->used) != 0)
    return image_errno(errno);
  if (maplen < m->cap) {
    if (mremap(m->base, m->cap, maplen, 0) == MAP_FAILED) return KV_ENOMEM;
    m->cap = maplen;
  }
  if (mprotect(m->base, m->cap, PROT_READ) != 0) return KV_ENOMEM;
  /* Writing the image touched every page of a file mapping, which would
   * count in kvd's RSS until unmapped.  The bytes live on in the page
   * cache; sending the image faults them back in cheaply. */
  if (m->fd >= 0) madvise(m->base, m->cap, MADV_DONTNEED);
  return 0;
}

/* Puts the finished file in place of DIR/image.json and makes the rename
 * durable.  The mapping is the image clients are served; the file is a
 * copy for other tools.  If it cannot take its place (the path is a
 * directory, say), the image is served anyway and the log says why the
 * file is stale.  Its data is not fsynced: it is derived, validated by
 * whoever reads it, and rebuilt from LMDB at every start. */
static void image_publish(const char *dir, const char *tmp,
                          const char *path) {
  int dfd;

  if (rename(tmp, path) != 0) {
    kv_log_warn("%s: cannot replace the image file: %s", path,
                strerror(errno));
    unlink(tmp);
    return;
  }
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync(dfd) != 0)
    kv_log_warn("%s: cannot sync the directory after the image: %s", dir,
                strerror(errno));
  if (dfd >= 0) close(dfd);
}

/* Builds a generation in DIR/.image.json.tmp and renames it over
 * DIR/image.json, so readers of the file see the old image or the new one,
 * never a partial one; with dir NULL it builds in anonymous memory and
 * writes no file (the fallback when the disk cannot take the file).  On
 * failure the temporary file is removed and the old image is untouched. */
int kv_image_build(const char *dir, uint64_t rev, size_t size_hint,
                   kv_image_next_fn next, void *it, kv_image_t **out) {
  return kv_image_build_as(KV_IMAGE_OBJECT, dir, rev, size_hint, next, it,
                           out);
}

int kv_image_build_as(int format, const char *dir, uint64_t rev,
                      size_t size_hint, kv_image_next_fn next, void *it,
                      kv_image_t **out) {
  char tmp[4096], path[4096];
  image_map_t m = {.fd = -1, .base = MAP_FAILED};
  kv_image_t *img = NULL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), cap;
  int err = 0;

  *out = NULL;
  if (dir != NULL) {
    err = image_path(tmp, sizeof(tmp), dir, IMAGE_TMP);
    if (err == 0) err = image_path(path, sizeof(path), dir, KV_IMAGE_FILE);
    if (err != 0) return err;
  }
  img = calloc(1, sizeof(*img));
  if (img == NULL) return KV_ENOMEM;
  cap = size_hint > IMAGE_MIN_CAP ? size_hint : IMAGE_MIN_CAP;
  if (cap > SIZE_MAX / 2) {
    err = KV_ENOMEM;
    goto out;
  }
  err = image_map_open(&m, dir != NULL ? tmp : NULL,
                       (cap + page - 1) / page * page);
  if (err == 0)
    err = image_encode_to(format, next, it, image_map_print, &m, &m.err);
  if (err == 0) err = image_map_finish(&m, page);
  if (err != 0) goto out;
  if (dir != NULL) image_publish(dir, tmp, path);
  img->base = m.base;
  img->len = m.used;
  img->maplen = m.cap;
  img->rev = rev;
  img->refs = 1;
  m.base = MAP_FAILED; /* the image owns the mapping now */
  *out = img;
  img = NULL;

out:
  if (m.base != MAP_FAILED) munmap(m.base, m.cap);
  if (m.fd >= 0) close(m.fd); /* the mapping outlives the descriptor */
  if (err != 0 && dir != NULL) unlink(tmp);
  free(img);
  return err;
}

int kv_image_from_fd(int fd, size_t len, uint64_t rev, kv_image_t **out) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  struct stat st;
  kv_image_t *img;
  void *p;

  *out = NULL;
  /* Bytes mapped past the file's end would be a SIGBUS when sent. */
  if (len == 0 || fstat(fd, &st) != 0 || (uint64_t)st.st_size < len)
    return KV_EINVAL;
  if (!(img = calloc(1, sizeof(*img)))) return KV_ENOMEM;
  p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    free(img);
    return KV_ENOMEM;
  }
  /* It is sent front to back, once: read ahead, and drop what was sent. */
  madvise(p, len, MADV_SEQUENTIAL);
  img->base = p;
  img->len = len;
  img->maplen = (len + page - 1) / page * page;
  img->rev = rev;
  img->refs = 1;
  *out = img;
  return 0;
}

const char *kv_image_data(const kv_image_t *img) { return img->base; }

size_t kv_image_len(const kv_image_t *img) { return img->len; }

uint64_t kv_image_rev(const kv_image_t *img) { return img->rev; }

kv_image_t *kv_image_ref(kv_image_t *img) {
  img->refs++;
  return img;
}

void kv_image_unref(kv_image_t *img) {
  if (img == NULL || --img->refs > 0) return;
  munmap(img->base, img->maplen);
  free(img);
}

/* State of kv_image_validate's walk over the parser's events. */
typedef struct {
  int depth;  /* 0 before the object, 1 inside it, 2 after it */
  char *prev; /* the previous key, decoded */
  size_t plen, pcap;
  int have_prev;
  int oom;
  const char *why; /* reason a callback stopped the parse */
} image_check_t;

static int image_check_fail(image_check_t *c, const char *why) {
  c->why = why;
  return 0; /* a zero return cancels the parse */
}

static int image_check_scalar(image_check_t *c) {
  return image_check_fail(c, c->depth == 1 ? "a value is not a string"
                                           : "the image is not a JSON object");
}

static int image_check_null(void *ctx) { return image_check_scalar(ctx); }

static int image_check_bool(void *ctx, int b) {
  (void)b;
  return image_check_scalar(ctx);
}

static int image_check_number(void *ctx, const char *s, size_t len) {
  (void)s;
  (void)len;
  return image_check_scalar(ctx);
}

static int image_check_string(void *ctx, const unsigned char *s,
                              size_t len) {
  image_check_t *c = ctx;
  (void)s;
  (void)len;
  return c->depth == 1 ? 1 : image_check_scalar(c);
}

static int image_check_start_map(void *ctx) {
  image_check_t *c = ctx;
  if (c->depth != 0) return image_check_scalar(c);
  c->depth = 1;
  return 1;
}

/* Keys must increase strictly in LMDB's order.  Equal keys are
 * duplicates. */
static int image_check_key(void *ctx, const unsigned char *key, size_t len) {
  image_check_t *c = ctx;
  if (c->have_prev) {
    int cmp = kv_slice_cmp(c->prev, c->plen, (const char *)key, len);
    if (cmp == 0) return image_check_fail(c, "duplicate key");
    if (cmp > 0)
      return image_check_fail(c, "keys are not in increasing byte order");
  }
  if (len > c->pcap) {
    size_t ncap = len > 2 * c->pcap ? len : 2 * c->pcap;
    char *p = realloc(c->prev, ncap);
    if (p == NULL) {
      c->oom = 1;
      return image_check_fail(c, "out of memory");
    }
    c->prev = p;
    c->pcap = ncap;
  }
  if (len > 0) memcpy(c->prev, key, len);
  c->plen = len;
  c->have_prev = 1;
  return 1;
}

static int image_check_end_map(void *ctx) {
  image_check_t *c = ctx;
  c->depth = 2;
  return 1;
}

static int image_check_start_array(void *ctx) {
  return image_check_scalar(ctx);
}

static const yajl_callbacks image_check_cbs = {
    .yajl_null = image_check_null,
    .yajl_boolean = image_check_bool,
    .yajl_number = image_check_number,
    .yajl_string = image_check_string,
    .yajl_start_map = image_check_start_map,
    .yajl_map_key = image_check_key,
    .yajl_end_map = image_check_end_map,
    .yajl_start_array = image_check_start_array,
};

/* Parses buf with yajl, minus the final newline, which must be there and
 * right after the closing brace.  The parser itself rejects bad JSON,
 * invalid UTF-8 and anything after the value; the callbacks reject other
 * shapes.  The offset reported is where the parser stopped. */
int kv_image_validate(const char *buf, size_t len, char *err, size_t errlen) {
  image_check_t c = {0};
  yajl_handle h = NULL;
  yajl_status st;
  size_t at;
  int ret = KV_ECORRUPT;

  if (err != NULL && errlen > 0) err[0] = '\0';
  if (len == 0) {
    kv_errf(err, errlen, "the image is empty");
    return KV_ECORRUPT;
  }
  if (buf[0] != '{') {
    kv_errf(err, errlen, "the image is not a JSON object (at byte 0)");
    return KV_ECORRUPT;
  }
  if (buf[len - 1] != '\n') {
    kv_errf(err, errlen, "the image does not end with a newline "
            "(truncated?) at byte %zu", len);
    return KV_ECORRUPT;
  }
  h = yajl_alloc(&image_check_cbs, NULL, &c);
  if (h == NULL) {
    kv_errf(err, errlen, "out of memory");
    return KV_ENOMEM;
  }
  st = yajl_parse(h, (const unsigned char *)buf, len - 1);
  at = yajl_get_bytes_consumed(h);
  if (st == yajl_status_ok) {
    st = yajl_complete_parse(h);
    at = len - 1;
  }
  if (st == yajl_status_client_canceled) {
    kv_errf(err, errlen, "%s at byte %zu", c.why, at);
    if (c.oom) ret = KV_ENOMEM;
    goto out;
  }
  if (st != yajl_status_ok) {
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    char m[128];
    size_t n;
    /* "parse error: premature EOF\n" -> "premature EOF" */
    snprintf(m, sizeof(m), "%s",
             msg != NULL ? (const char *)msg : "invalid JSON");
    if (msg != NULL) yajl_free_error(h, msg);
    for (n = strlen(m); n > 0 && strchr("\n .", m[n - 1]) != NULL;)
      m[--n] = '\0';
    n = strncmp(m, "parse error: ", 13) == 0 ? 13 : 0;
    kv_errf(err, errlen, "%s at byte %zu", m + n, at);
    goto out;
  }
  if (buf[len - 2] != '}') { /* only whitespace can get here */
    for (at = len - 2; at > 0 && buf[at - 1] != '}';) at--;
    kv_errf(err, errlen, "unexpected bytes after the object at byte %zu", at);
    goto out;
  }
  ret = 0;
out:
  yajl_free(h);
  free(c.prev);
  return ret;
}
