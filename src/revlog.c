/* revlog.c - the revision log: segments, records, replay and trimming.
 *
 * The format is described in revlog.h.  Appends come from the group
 * commit's worker, spare segments are made by another worker ahead of
 * need, and trimming runs after a checkpoint; the list of segments is the
 * only state they share, under one mutex.
 */
#include "kv/revlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "kv/error.h"
#include "kv/log.h"
#include "kv/map.h"

#define SEG_MAGIC "KVDLOG01"
#define SEG_HDR 32
#define REC_HDR 16
#define REC_FIXED 32
#define ZERO_CHUNK ((size_t)1 << 20)
#define SPARE_NAME "spare.tmp"
/* The first segment's size: each next one doubles, up to seg_size, so a
 * small store keeps a small log and starts fast. */
#define SEG_FIRST ((uint64_t)1 << 20)

typedef struct {
  uint64_t first; /* the first revision it may hold: its name */
  uint64_t last;  /* the last revision written to it; 0: none */
  uint64_t size;
  int pin;        /* read-only opens: the file, opened when listed */
} seg_t;

struct kv_revlog {
  char *dir; /* DIR/log */
  int dirfd;
  int readonly;
  kv_sync_t sync;
  uint64_t seg_size;
  pthread_mutex_t mu; /* guards segs, nsegs and the spare fields */
  seg_t *segs;        /* by first revision; the last is appended to */
  size_t nsegs, segcap;
  int spare_ready;    /* SPARE_NAME is zero-filled and synced */
  uint64_t spare_size;
  int preparing;
  int switching;      /* seg_switch runs: the list lacks the new segment */
  /* Owned by the appending thread: */
  int fd;        /* the last segment, or -1 before the first append */
  uint64_t off;  /* where the next record goes */
  char *buf;
  size_t bufcap;
  int failed;    /* a write or flush failed: no more appends */
};

static void put16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) {
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint64_t pad8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static int io_err(int e) {
  return e == ENOSPC || e == EDQUOT ? KV_ENOSPACE
         : e == ENOMEM              ? KV_ENOMEM
                                    : KV_EIO;
}

static void seg_name(char *buf, size_t cap, uint64_t first) {
  snprintf(buf, cap, "%016" PRIx64 ".seg", first);
}

/* ---- records ------------------------------------------------------------ */

uint64_t kv_revlog_size(const kv_op_t *ops, size_t n) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += REC_HDR + pad8(REC_FIXED + ops[i].key.len + ops[i].val.len);
  return total;
}

static size_t rec_encode(unsigned char *p, const kv_op_t *op) {
  uint32_t len = (uint32_t)(REC_FIXED + op->key.len + op->val.len);
  size_t total = REC_HDR + pad8(len);
  unsigned char *b = p + REC_HDR;

  memset(p, 0, total);
  put32(p, len);
  put64(b, op->rev);
  put64(b + 8, op->batch);
  put64(b + 16, op->expires);
  b[24] = (unsigned char)op->op;
  put16(b + 26, (uint16_t)op->key.len);
  put32(b + 28, (uint32_t)op->val.len);
  memcpy(b + REC_FIXED, op->key.ptr, op->key.len);
  if (op->val.len) memcpy(b + REC_FIXED + op->key.len, op->val.ptr,
                          op->val.len);
  put64(p + 8, XXH3_64bits_withSeed(b, len, len));
  return total;
}

/* Parses the record at p (avail bytes to the segment's end).  Returns the
 * bytes it takes, 0 for the zeros that end the data, or -1 for anything
 * that is not a whole, valid record. */
static int64_t rec_parse(const unsigned char *p, uint64_t avail, kv_op_t *op) {
  uint32_t len, klen, vlen;
  const unsigned char *b = p + REC_HDR;

  if (avail < REC_HDR) return avail == 0 || !get32(p) ? 0 : -1;
  len = get32(p);
  if (len == 0 && get32(p + 4) == 0 && get64(p + 8) == 0) return 0;
  if (len < REC_FIXED || get32(p + 4) != 0 || len > avail - REC_HDR) return -1;
  klen = get16(b + 26);
  vlen = get32(b + 28);
  if (REC_FIXED + (uint64_t)klen + vlen != len || klen == 0 ||
      klen > KV_KEY_MAX || b[24] < KV_OP_PUT || b[24] > KV_OP_EXPIRE ||
      b[25] != 0 || (b[24] != KV_OP_PUT && vlen != 0))
    return -1;
  if (get64(p + 8) != XXH3_64bits_withSeed(b, len, len)) return -1;
  op->rev = get64(b);
  op->batch = get64(b + 8);
  op->expires = get64(b + 16);
  if (op->rev == 0 || op->batch == 0 || op->batch > op->rev) return -1;
  op->op = b[24];
  op->key.ptr = (const char *)b + REC_FIXED;
  op->key.len = klen;
  op->val.ptr = (const char *)b + REC_FIXED + klen;
  op->val.len = vlen;
  return (int64_t)(REC_HDR + pad8(len));
}

/* ---- segments ------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t len, uint64_t off) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return 0;
}

/* Writes zeros a page at a time.  Linux sizes page-cache folios by the
 * writes that create them: a segment zero-filled in 64 KiB writes would
 * flush 64 KiB at every commit that dirties a few bytes of it (measured
 * with /proc/PID/io: 65 KB written per 64-byte record), against 4 KiB
 * after page-sized writes. */
static int zero_range(int fd, uint64_t off, uint64_t len) {
  static const char zeros[4096];
  while (len > 0) {
    size_t n = len < sizeof zeros ? (size_t)len : sizeof zeros;
    int e = write_all(fd, zeros, n, off);
    if (e) return e;
    off += n;
    len -= n;
  }
  return 0;
}

/* Creates name in the log directory at size bytes, all of them written
 * with zeros and synced, so later records overwrite allocated blocks.
 * Returns 0 or an errno; on failure the file is gone. */
static int seg_create(kv_revlog_t *l, const char *name, uint64_t size) {
  int fd = openat(l->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0600);
  int e;

  if (fd < 0) return errno;
  e = zero_range(fd, 0, size);
  if (!e && l->sync != KV_SYNC_NONE && fdatasync(fd) != 0) e = errno;
  close(fd);
  if (e) unlinkat(l->dirfd, name, 0);
  return e;
}

static int seg_header(int fd, uint64_t first) {
  unsigned char h[SEG_HDR] = {0};
  memcpy(h, SEG_MAGIC, 8);
  put64(h + 8, first);
  put64(h + 16, XXH3_64bits(h, 16));
  return write_all(fd, h, SEG_HDR, 0);
}

static int seg_header_ok(const unsigned char *h, uint64_t size,
                         uint64_t first) {
  return size >= SEG_HDR && memcmp(h, SEG_MAGIC, 8) == 0 &&
         get64(h + 8) == first && get64(h + 16) == XXH3_64bits(h, 16);
}

static int segs_push(kv_revlog_t *l, seg_t s) {
  if (l->nsegs == l->segcap) {
    size_t cap = l->segcap ? l->segcap * 2 : 16;
    seg_t *n = realloc(l->segs, cap * sizeof *n);
    if (!n) return ENOMEM;
    l->segs = n;
    l->segcap = cap;
  }
  l->segs[l->nsegs++] = s;
  return 0;
}

/* Starts a new segment for a batch that begins at first and takes need
 * bytes: the spare if it is ready and big enough, else a new file made
 * now.  Returns 0 or a KV_E code; on failure the old segment stays. */
/* The size of the segment after the current one.  Called with mu held. */
static uint64_t next_size(const kv_revlog_t *l) {
  uint64_t size = l->nsegs ? l->segs[l->nsegs - 1].size * 2 : SEG_FIRST;
  if (size < SEG_FIRST) size = SEG_FIRST;
  return size < l->seg_size ? size : l->seg_size;
}

static int seg_switch_(kv_revlog_t *l, uint64_t first, uint64_t need) {
  char name[32];
  uint64_t size;
  int use_spare, discard, fd, e;

  seg_name(name, sizeof name, first);
  pthread_mutex_lock(&l->mu);
  size = next_size(l);
  if (need + SEG_HDR > size) size = (need + SEG_HDR + 4095) & ~(uint64_t)4095;
  use_spare = l->spare_ready && l->spare_size == size;
  /* A spare of another size (this batch needed a bigger segment) would
   * never be used, and no other made: drop it, so the next is made. */
  discard = l->spare_ready && !use_spare;
  l->spare_ready = 0;
  /* Until the new segment is listed, kv_revlog_wants_spare would see the
   * old one full and start a spare, whose O_TRUNC open of SPARE_NAME may
   * come before the rename below: it would zero-fill the new segment and
   * report a spare that is gone. */
  l->switching = 1;
  pthread_mutex_unlock(&l->mu);
  if (discard) unlinkat(l->dirfd, SPARE_NAME, 0);
  if (use_spare)
    e = renameat(l->dirfd, SPARE_NAME, l->dirfd, name) == 0 ? 0 : errno;
  else
    e = seg_create(l, name, size);
  if (e) return io_err(e);
  fd = openat(l->dirfd, name, O_RDWR | O_CLOEXEC);
  if (fd < 0) return io_err(errno);
  /* The header is synced with the batch's records; the new name must be
   * durable before anything in it is acknowledged. */
  e = seg_header(fd, first);
  if (!e && fsync(l->dirfd) != 0) e = errno;
  pthread_mutex_lock(&l->mu);
  if (!e) e = segs_push(l, (seg_t){first, 0, size, -1});
  pthread_mutex_unlock(&l->mu);
  if (e) {
    close(fd);
    unlinkat(l->dirfd, name, 0);
    return io_err(e);
  }
  if (l->fd >= 0) close(l->fd);
  l->fd = fd;
  l->off = SEG_HDR;
  return 0;
}

static int seg_switch(kv_revlog_t *l, uint64_t first, uint64_t need) {
  int rc = seg_switch_(l, first, need);
  pthread_mutex_lock(&l->mu);
  l->switching = 0;
  pthread_mutex_unlock(&l->mu);
  return rc;
}

/* ---- appending ----------------------------------------------------------- */

int kv_revlog_append(kv_revlog_t *l, const kv_op_t *ops, size_t n) {
  uint64_t total = kv_revlog_size(ops, n), cur_size;
  size_t off = 0;
  int e, rc;

  if (n == 0) return 0;
  if (l->failed || l->readonly) return KV_EIO;
  if (total > l->bufcap) {
    char *b = realloc(l->buf, total);
    if (!b) return KV_ENOMEM;
    l->buf = b;
    l->bufcap = total;
  }
  for (size_t i = 0; i < n; i++)
    off += rec_encode((unsigned char *)l->buf + off, &ops[i]);
  pthread_mutex_lock(&l->mu);
  cur_size = l->nsegs ? l->segs[l->nsegs - 1].size : 0;
  pthread_mutex_unlock(&l->mu);
  if (l->fd < 0 || l->off + total > cur_size) {
    rc = seg_switch(l, ops[0].rev, total);
    if (rc) return rc;
  }
  e = write_all(l->fd, l->buf, total, l->off);
  if (!e && l->sync != KV_SYNC_NONE && fdatasync(l->fd) != 0) e = errno;
  if (e) {
    /* The batch is answered 500 and must never be replayed.  After a
     * failed flush the page cache is what a restart without a crash
     * reads, so zeros written there are enough. */
    l->failed = 1;
    (void)zero_range(l->fd, l->off, total);
    kv_log_error("%s: log write failed: %s", l->dir, strerror(e));
    return KV_EIO;
  }
  pthread_mutex_lock(&l->mu);
  l->off += total; /* kv_revlog_wants_spare reads it */
  l->segs[l->nsegs - 1].last = ops[n - 1].rev;
  pthread_mutex_unlock(&l->mu);
  return 0;
}

int kv_revlog_wants_spare(kv_revlog_t *l) {
  int want;
  pthread_mutex_lock(&l->mu);
  want = !l->readonly && !l->spare_ready && !l->preparing && !l->switching &&
         l->fd >= 0 &&
         l->nsegs && l->off > l->segs[l->nsegs - 1].size / 2;
  if (want) {
    l->preparing = 1;
    l->spare_size = next_size(l);
  }
  pthread_mutex_unlock(&l->mu);
  return want;
}

int kv_revlog_prepare(kv_revlog_t *l) {
  int e = seg_create(l, SPARE_NAME, l->spare_size);

  pthread_mutex_lock(&l->mu);
  l->preparing = 0;
  if (!e) l->spare_ready = 1;
  pthread_mutex_unlock(&l->mu);
  return e ? io_err(e) : 0;
}

int kv_revlog_trim(kv_revlog_t *l, uint64_t rev) {
  char name[32];
  uint64_t *gone = NULL;
  size_t ngone = 0, keep = 0;
  int rc = 0;

  pthread_mutex_lock(&l->mu);
  /* Segment i holds revisions below segs[i + 1].first. */
  while (keep + 1 < l->nsegs && l->segs[keep + 1].first - 1 <= rev) keep++;
  if (keep > 0 && (gone = malloc(keep * sizeof *gone)) != NULL) {
    for (size_t i = 0; i < keep; i++) gone[i] = l->segs[i].first;
    memmove(l->segs, l->segs + keep, (l->nsegs - keep) * sizeof *l->segs);
    l->nsegs -= keep;
    ngone = keep;
  }
  pthread_mutex_unlock(&l->mu);
  for (size_t i = 0; i < ngone; i++) {
    seg_name(name, sizeof name, gone[i]);
    if (unlinkat(l->dirfd, name, 0) != 0 && errno != ENOENT) rc = KV_EIO;
  }
  if (ngone && fsync(l->dirfd) != 0) rc = KV_EIO;
  free(gone);
  return rc;
}

uint64_t kv_revlog_first(kv_revlog_t *l) {
  uint64_t first;
  pthread_mutex_lock(&l->mu);
  first = l->nsegs ? l->segs[0].first : 0;
  pthread_mutex_unlock(&l->mu);
  return first;
}

/* Opens the segments that may hold revisions from..to while the list is
 * locked: trim takes a segment off the list before it unlinks the file,
 * so every listed file still exists. */
static int scan_open(kv_revlog_t *l, uint64_t from, uint64_t to, int **fds,
                     seg_t **segs, size_t *n) {
  size_t i, j, k = 0;
  char name[32];
  int rc = 0;

  *fds = NULL;
  *segs = NULL;
  *n = 0;
  pthread_mutex_lock(&l->mu);
  if (l->nsegs == 0 || from < l->segs[0].first) {
    pthread_mutex_unlock(&l->mu);
    return KV_ENOTFOUND;
  }
  for (i = 0; i + 1 < l->nsegs && l->segs[i + 1].first <= from; i++) {
  }
  for (j = i; j < l->nsegs && l->segs[j].first <= to; j++) {
  }
  if (j > i && ((*fds = malloc((j - i) * sizeof **fds)) == NULL ||
                (*segs = malloc((j - i) * sizeof **segs)) == NULL))
    rc = KV_ENOMEM;
  for (; rc == 0 && i < j; i++) {
    seg_name(name, sizeof name, l->segs[i].first);
    (*fds)[k] = openat(l->dirfd, name, O_RDONLY | O_CLOEXEC);
    if ((*fds)[k] < 0) {
      rc = KV_EIO;
      break;
    }
    (*segs)[k++] = l->segs[i];
  }
  pthread_mutex_unlock(&l->mu);
  *n = k;
  return rc;
}

int kv_revlog_scan(kv_revlog_t *l, uint64_t from, uint64_t to,
                   kv_revlog_fn fn, void *ctx) {
  int *fds;
  seg_t *segs;
  size_t n, i;
  uint64_t want = from;
  int rc;

  if (from > to) return 0;
  rc = scan_open(l, from, to, &fds, &segs, &n);
  for (i = 0; rc == 0 && i < n && want <= to; i++) {
    const unsigned char *m =
        mmap(NULL, segs[i].size, PROT_READ, MAP_SHARED, fds[i], 0);
    uint64_t off = SEG_HDR;
    if (m == MAP_FAILED) {
      rc = KV_EIO;
      break;
    }
    if (!seg_header_ok(m, segs[i].size, segs[i].first)) rc = KV_ECORRUPT;
    while (rc == 0 && off < segs[i].size && want <= to) {
      kv_op_t op;
      int64_t len = rec_parse(m + off, segs[i].size - off, &op);
      /* Records up to `to` are durable, so the data cannot end or break
       * before it in this segment unless the next one takes over. */
      if (len <= 0) break;
      off += (uint64_t)len;
      if (op.rev < want) continue;
      if (op.rev != want) {
        rc = KV_ECORRUPT;
        break;
      }
      want++;
      rc = fn(ctx, &op);
    }
    munmap((void *)m, segs[i].size);
  }
  if (rc == KV_ESTOP) rc = 0;
  else if (rc == 0 && want <= to) rc = KV_ECORRUPT;
  for (i = 0; i < n; i++) close(fds[i]);
  free(fds);
  free(segs);
  return rc;
}

size_t kv_revlog_segments(kv_revlog_t *l) {
  size_t n;
  pthread_mutex_lock(&l->mu);
  n = l->nsegs;
  pthread_mutex_unlock(&l->mu);
  return n;
}

/* ---- opening and replay -------------------------------------------------- */

static int cmp_seg(const void *a, const void *b) {
  const seg_t *x = a, *y = b;
  return (x->first > y->first) - (x->first < y->first);
}

/* Lists DIR/log/<hex>.seg into l->segs, sorted; removes a spare left by
 * an earlier run (not read-only). */
static int list_segments(kv_revlog_t *l, char *err, size_t errlen) {
  DIR *d;
  struct dirent *e;
  int dfd = dup(l->dirfd);

  if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
    if (dfd >= 0) close(dfd);
    kv_errf(err, errlen, "cannot read %s: %s", l->dir, strerror(errno));
    return KV_EIO;
  }
  while ((e = readdir(d)) != NULL) {
    char *end;
    uint64_t first;
    struct stat st;
    int pin;

    if (strcmp(e->d_name, SPARE_NAME) == 0) {
      if (!l->readonly) unlinkat(l->dirfd, e->d_name, 0);
      continue;
    }
    if (strlen(e->d_name) != 20 || strcmp(e->d_name + 16, ".seg") != 0)
      continue;
    errno = 0;
    first = strtoull(e->d_name, &end, 16);
    if (end != e->d_name + 16 || errno || first == 0) continue;
    /* A reader opens every segment now: one that a checkpoint removes
     * later stays readable, and the LMDB snapshot taken after this covers
     * any that is already gone. */
    pin = l->readonly ? openat(l->dirfd, e->d_name, O_RDONLY | O_CLOEXEC)
                      : -1;
    if (l->readonly && pin < 0 && errno == ENOENT) continue;
    if ((l->readonly && pin < 0) ||
        (pin >= 0 ? fstat(pin, &st) : fstatat(l->dirfd, e->d_name, &st, 0))
            != 0 ||
        segs_push(l, (seg_t){first, 0, (uint64_t)st.st_size, pin}) != 0) {
      if (pin >= 0) close(pin);
      closedir(d);
      kv_errf(err, errlen, "cannot read %s/%s", l->dir, e->d_name);
      return KV_EIO;
    }
  }
  closedir(d);
  if (l->nsegs) qsort(l->segs, l->nsegs, sizeof *l->segs, cmp_seg);
  return 0;
}

int kv_revlog_open(const char *dir, kv_sync_t sync, uint64_t seg_size,
                   int readonly, kv_revlog_t **out, char *err,
                   size_t errlen) {
  kv_revlog_t *l = calloc(1, sizeof *l);
  size_t n = strlen(dir) + sizeof "/" KV_REVLOG_DIR;
  int rc, made = 0;

  *out = NULL;
  if (!l || !(l->dir = malloc(n))) {
    free(l);
    kv_errf(err, errlen, "%s", strerror(ENOMEM));
    return KV_ENOMEM;
  }
  snprintf(l->dir, n, "%s/" KV_REVLOG_DIR, dir);
  pthread_mutex_init(&l->mu, NULL);
  l->fd = -1;
  l->dirfd = -1;
  l->readonly = readonly;
  l->sync = sync;
  l->seg_size = seg_size ? seg_size : KV_REVLOG_SEGMENT;
  if (!readonly && mkdir(l->dir, 0700) == 0) made = 1;
  l->dirfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (l->dirfd < 0) {
    /* A directory from before the log, read by kvdump: nothing to replay. */
    if (readonly && errno == ENOENT) {
      *out = l;
      return 0;
    }
    kv_errf(err, errlen, "cannot open %s: %s", l->dir, strerror(errno));
    kv_revlog_close(l);
    return KV_EIO;
  }
  if (made) {
    int pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int e = pfd < 0 || fsync(pfd) != 0 ? errno : 0;
    if (pfd >= 0) close(pfd);
    if (e) {
      kv_errf(err, errlen, "cannot sync %s: %s", dir, strerror(e));
      kv_revlog_close(l);
      return KV_EIO;
    }
  }
  rc = list_segments(l, err, errlen);
  if (rc) {
    kv_revlog_close(l);
    return rc;
  }
  *out = l;
  return 0;
}

void kv_revlog_close(kv_revlog_t *l) {
  if (!l) return;
  for (size_t i = 0; i < l->nsegs; i++)
    if (l->segs[i].pin >= 0) close(l->segs[i].pin);
  if (l->fd >= 0) close(l->fd);
  if (l->dirfd >= 0) close(l->dirfd);
  pthread_mutex_destroy(&l->mu);
  free(l->segs);
  free(l->buf);
  free(l->dir);
  free(l);
}

/* Replay state across segments. */
typedef struct {
  kv_revlog_t *l;
  uint64_t after, prev; /* prev: the last valid revision seen, or 0 */
  kv_revlog_fn fn;
  void *ctx;
  char *err;
  size_t errlen;
} replay_t;

/* Looks past a bad record at off for a valid one that proves a later
 * batch was written (its batch starts after want).  Returns its offset,
 * or 0. */
static uint64_t later_batch(const unsigned char *m, uint64_t size,
                            uint64_t off, uint64_t want, uint64_t *rev) {
  for (uint64_t o = off + 8; o + REC_HDR <= size; o += 8) {
    kv_op_t op;
    if (get64(m + o) == 0) continue; /* the common case: zeros */
    if (rec_parse(m + o, size - o, &op) > 0 && op.batch > want) {
      *rev = op.rev;
      return o;
    }
  }
  return 0;
}

/* Zeroes a torn tail from off to the end of the segment's non-zero
 * bytes, so a later append cannot leave old garbage behind its records. */
static int zero_tail(kv_revlog_t *l, int fd, const unsigned char *m,
                     uint64_t size, uint64_t off) {
  uint64_t end = size;
  while (end > off && m[end - 1] == 0) end--;
  if (end <= off) return 0;
  if (zero_range(fd, off, end - off) != 0 || fdatasync(fd) != 0) return errno;
  kv_log_warn("%s: zeroed a torn tail of %" PRIu64 " bytes at offset %"
              PRIu64 ": a batch that was never acknowledged", l->dir,
              end - off, off);
  return 0;
}

/* Replays the records of segment i (header already checked).  Sets *bad
 * to the offset of a bad record (0: none) and *end to where the data
 * ends. */
static int replay_seg(replay_t *r, size_t i, const unsigned char *m,
                      uint64_t *bad, uint64_t *end) {
  kv_revlog_t *l = r->l;
  seg_t *s = &l->segs[i];
  uint64_t off = SEG_HDR;
  char name[32];
  int rc;

  *bad = 0;
  seg_name(name, sizeof name, s->first);
  while (off < s->size) {
    kv_op_t op;
    int64_t n = rec_parse(m + off, s->size - off, &op);
    if (n == 0) break;
    if (n < 0) {
      *bad = off;
      break;
    }
    /* Revisions the checkpoint holds may be missing: a reader can list
     * the log while a checkpoint removes segments (see list_segments). */
    if ((off == SEG_HDR && op.rev != s->first) ||
        (r->prev && op.rev <= r->prev) ||
        op.rev > (r->prev > r->after ? r->prev : r->after) + 1) {
      kv_errf(r->err, r->errlen,
           "%s/%s: revision %" PRIu64 " at offset %" PRIu64 " follows %"
           PRIu64 " (the checkpoint holds %" PRIu64 "): the log has a gap",
           l->dir, name, op.rev, off, r->prev, r->after);
      return KV_ECORRUPT;
    }
    if (op.rev > r->after && (rc = r->fn(r->ctx, &op)) != 0) return rc;
    r->prev = op.rev;
    s->last = op.rev;
    off += (uint64_t)n;
  }
  *end = off;
  return 0;
}

static int map_seg(kv_revlog_t *l, seg_t *s, int *fd,
                   const unsigned char **m) {
  char name[32];

  seg_name(name, sizeof name, s->first);
  *fd = s->pin >= 0 ? dup(s->pin)
                    : openat(l->dirfd, name,
                             (l->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (*fd < 0) return errno;
  *m = s->size ? mmap(NULL, s->size, PROT_READ, MAP_SHARED, *fd, 0) : NULL;
  if (*m == MAP_FAILED) {
    int e = errno;
    close(*fd);
    return e;
  }
  return 0;
}

/* The first revision segment j holds, or 0 if it holds none. */
static uint64_t seg_first_rev(kv_revlog_t *l, size_t j) {
  const unsigned char *m;
  uint64_t rev = 0;
  kv_op_t op;
  int fd;

  if (map_seg(l, &l->segs[j], &fd, &m) != 0) return 0;
  if (m && seg_header_ok(m, l->segs[j].size, l->segs[j].first) &&
      rec_parse(m + SEG_HDR, l->segs[j].size - SEG_HDR, &op) > 0)
    rev = op.rev;
  if (m) munmap((void *)m, l->segs[j].size);
  close(fd);
  return rev;
}

/* Drops segments from i on: files whose creation or whose only batch
 * never finished. */
static void drop_from(kv_revlog_t *l, size_t i) {
  char name[32];
  for (size_t j = i; j < l->nsegs; j++) {
    seg_name(name, sizeof name, l->segs[j].first);
    unlinkat(l->dirfd, name, 0);
  }
  if (i < l->nsegs) fsync(l->dirfd);
  l->nsegs = i;
}

int kv_revlog_replay(kv_revlog_t *l, uint64_t after, kv_revlog_fn fn,
                     void *ctx, uint64_t *last, char *err, size_t errlen) {
  replay_t r = {l, after, 0, fn, ctx, err, errlen};
  int rc = 0;

  *last = after;
  for (size_t i = 0; i < l->nsegs && rc == 0; i++) {
    const unsigned char *m = NULL;
    uint64_t bad = 0, end = SEG_HDR, lrev = 0, later = 0, want;
    kv_op_t lop;
    char name[32];
    int fd, e, hdr_ok;

    seg_name(name, sizeof name, l->segs[i].first);
    e = map_seg(l, &l->segs[i], &fd, &m);
    if (e) {
      kv_errf(err, errlen, "cannot read %s/%s: %s", l->dir, name, strerror(e));
      return KV_EIO;
    }
    hdr_ok = m && seg_header_ok(m, l->segs[i].size, l->segs[i].first);
    if (hdr_ok) rc = replay_seg(&r, i, m, &bad, &end);
    if (rc == 0 && hdr_ok && !bad && m) {
      /* The data ends at zeros.  A later batch past them means
       * acknowledged records were zeroed: damage.  Anything else past
       * them in the last segment is what a torn batch left behind. */
      later = later_batch(m, l->segs[i].size, end, r.prev + 1, &lrev);
      if (later && l->readonly &&
          rec_parse(m + end, l->segs[i].size - end, &lop) > 0)
        later = 0; /* written while this reader looked */
      if (later) {
        kv_errf(err, errlen,
             "%s/%s: zeroed record at offset %" PRIu64 " (revision %" PRIu64
             " expected) with revision %" PRIu64 " written after it; "
             "restore the data directory from a backup",
             l->dir, name, end, r.prev + 1, lrev);
        rc = KV_ECORRUPT;
      } else if (!l->readonly && i + 1 == l->nsegs &&
                 (e = zero_tail(l, fd, m, l->segs[i].size, end)) != 0) {
        kv_errf(err, errlen, "cannot repair %s/%s: %s", l->dir, name,
             strerror(e));
        rc = KV_EIO;
      }
    }
    if (rc == 0 && (!hdr_ok || bad)) {
      /* Torn, or damaged?  Damaged if a later batch was written after
       * it: a batch is written only once the one before was flushed.  A
       * segment's first record, like its header, belongs to the batch
       * that made the segment, whose first revision names it. */
      want = hdr_ok && bad != SEG_HDR ? r.prev + 1 : l->segs[i].first;
      if (m) later = later_batch(m, l->segs[i].size,
                                 hdr_ok ? bad : SEG_HDR - 8, want, &lrev);
      for (size_t j = i + 1; !later && j < l->nsegs; j++)
        if ((lrev = seg_first_rev(l, j)) != 0) later = SEG_HDR;
      /* A reader may have looked while kvd was writing the record or the
       * header, and found the later batch written since.  If it is whole
       * now, it was never damaged: this reader's view ends before it. */
      if (later && l->readonly && m &&
          (hdr_ok ? rec_parse(m + bad, l->segs[i].size - bad, &lop) > 0
                  : seg_header_ok(m, l->segs[i].size, l->segs[i].first)))
        later = 0;
      if (later) {
        kv_errf(err, errlen,
             "%s/%s: damaged %s at offset %" PRIu64 " (revision %" PRIu64
             " expected) with revision %" PRIu64 " written after it; "
             "restore the data directory from a backup",
             l->dir, name, hdr_ok ? "record" : "segment header",
             hdr_ok ? bad : 0, want, lrev);
        rc = KV_ECORRUPT;
      } else if (!l->readonly && hdr_ok) {
        e = zero_tail(l, fd, m, l->segs[i].size, bad);
        if (e) {
          kv_errf(err, errlen, "cannot repair %s/%s: %s", l->dir, name,
               strerror(e));
          rc = KV_EIO;
        }
      }
    }
    if (m) munmap((void *)m, l->segs[i].size);
    if (rc == 0 && !l->readonly && hdr_ok &&
        (bad || i + 1 == l->nsegs)) {
      l->fd = fd; /* appends go on from here */
      l->off = bad ? bad : end;
      fd = -1;
    }
    if (fd >= 0) close(fd);
    if (rc == 0 && (!hdr_ok || bad)) {
      if (!l->readonly) drop_from(l, hdr_ok ? i + 1 : i);
      break;
    }
  }
  if (rc == 0 && r.prev > after) *last = r.prev;
  return rc;
}
