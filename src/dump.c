/* dump.c - kvdump: prints a kvd data directory as JSON, offline.
 *
 * Modelled on LMDB's mdb_dump.  By default it reads a read-only LMDB
 * snapshot and encodes it exactly as the server encodes its image, so the
 * output is byte-identical to image.json for the same data.  --image
 * instead checks and prints the server's last image file as it is, and
 * --backup writes a backup file, as GET /_backup answers one.
 */
#include "kv/dump.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv/checkpoint.h"
#include "kv/error.h"
#include "kv/ttl.h"
#include "kv/image.h"
#include "kv/revlog.h"

#ifndef KV_VERSION
#define KV_VERSION "dev"
#endif

typedef struct {
  int fd;
  int err; /* errno of the write that failed */
} dump_out_t;

/* The signal that asked kvdump to stop, or 0.  As in mdb_dump, a signal
 * only sets this; the dump notices it, ends its read transaction and
 * closes the environment, so its LMDB reader slot is freed rather than
 * left behind for the server to reclaim. */
static volatile sig_atomic_t dump_sig;

static const int dump_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
#define DUMP_NSIGNALS (sizeof dump_signals / sizeof dump_signals[0])

static void on_dump_signal(int sig) { dump_sig = sig; }

/* Without SA_RESTART, so a write blocked on a pipe nobody reads returns
 * EINTR and the dump can stop. */
static void dump_trap(struct sigaction *old) {
  struct sigaction sa;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_dump_signal;
  sigemptyset(&sa.sa_mask);
  dump_sig = 0;
  for (size_t i = 0; i < DUMP_NSIGNALS; i++)
    sigaction(dump_signals[i], &sa, &old[i]);
}

/* Restores the old handlers.  After a signal, says so (not for SIGPIPE:
 * the reader left on purpose) and dies of it, so whoever ran kvdump sees
 * the usual status; everything LMDB holds is released by then. */
static void dump_untrap(const struct sigaction *old) {
  int sig = dump_sig;

  for (size_t i = 0; i < DUMP_NSIGNALS; i++)
    sigaction(dump_signals[i], &old[i], NULL);
  if (sig == 0) return;
  if (sig != SIGPIPE)
    fprintf(stderr, "kvdump: interrupted by %s\n", strsignal(sig));
  signal(sig, SIG_DFL);
  raise(sig);
}

static void dump_usage(FILE *f) {
  fputs("usage: kvdump [--prefix P] [--ndjson] DIR\n"
        "       kvdump --image DIR\n"
        "       kvdump --backup FILE DIR\n"
        "       kvdump --help | --version\n"
        "\n"
        "Prints the keys and values in the kvd data directory DIR as one\n"
        "JSON object, read from a consistent snapshot.  The output is\n"
        "byte-identical to the server's image of the same data.\n"
        "\n"
        "  -p, --prefix P  only the keys that start with P\n"
        "  -n, --ndjson    one {\"key\":...,\"value\":...,\"rev\":N} object a\n"
        "                  line, N the key's modification revision\n"
        "  -i, --image     check DIR/image.json, the server's last image,\n"
        "                  and print it as it is if it is valid; it cannot\n"
        "                  be combined with --prefix or --ndjson\n"
        "  -b, --backup FILE  write FILE, a compacted copy of DIR's LMDB\n"
        "                  with every acknowledged write in it, in the\n"
        "                  format of data.mdb (a backup, as GET /_backup\n"
        "                  answers); it cannot be combined with the others\n"
        "  -h, --help      print this help and exit\n"
        "  -V, --version   print the version and exit\n"
        "\n"
        "Exit status: 0 on success, 1 on an error, 2 on bad arguments.\n",
        f);
}

/* Writes all of buf, retrying short writes and EINTR.  Returns 0 or the
 * errno (EPIPE when the reader went away and SIGPIPE is ignored). */
static int dump_write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n;
    if (dump_sig) return EINTR;
    n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* kv_image_write_fn for stdout.  kv_image_encode hands over 64 KiB chunks,
 * so no further buffering is needed. */
static int dump_write(void *ctx, const char *buf, size_t len) {
  dump_out_t *o = ctx;
  o->err = dump_write_all(o->fd, buf, len);
  return o->err ? KV_EIO : 0;
}

/* The log's writes past the checkpoint, for the keys under the prefix:
 * the last one of each key, sorted by key, merged over LMDB's. */
typedef struct {
  kv_op_t *ops;
  size_t n, cap, next;
  const char *prefix;
  size_t plen;
  kv_ckpt_snap_t *snap;
  kv_item_t lm; /* LMDB's next item */
  int lm_state; /* 1: lm holds one; 0: LMDB is done; -1: read the next */
  uint64_t now;  /* Unix ms: keys that expired by then are left out */
} dump_merge_t;

/* kv_revlog_fn: copies a logged write under the prefix. */
static int dump_collect(void *ctx, const kv_op_t *op) {
  dump_merge_t *m = ctx;
  kv_op_t *c;
  char *buf;

  if (op->key.len < m->plen || memcmp(op->key.ptr, m->prefix, m->plen))
    return 0;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 256;
    kv_op_t *ops = realloc(m->ops, cap * sizeof *ops);
    if (!ops) return KV_ENOMEM;
    m->ops = ops;
    m->cap = cap;
  }
  if (!(buf = malloc(op->key.len + op->val.len + 1))) return KV_ENOMEM;
  memcpy(buf, op->key.ptr, op->key.len);
  if (op->val.len) memcpy(buf + op->key.len, op->val.ptr, op->val.len);
  c = &m->ops[m->n++];
  *c = *op;
  c->key.ptr = buf;
  c->val.ptr = buf + op->key.len;
  return 0;
}

/* By key, then by revision, so the last of a key's writes sorts last. */
static int dump_op_cmp(const void *a, const void *b) {
  const kv_op_t *x = a, *y = b;
  int c = kv_slice_cmp(x->key.ptr, x->key.len, y->key.ptr, y->key.len);
  return c ? c : (x->rev > y->rev) - (x->rev < y->rev);
}

/* Sorts the log's writes and keeps each key's last. */
static void dump_settle(dump_merge_t *m) {
  size_t out = 0;

  if (m->n) qsort(m->ops, m->n, sizeof *m->ops, dump_op_cmp);
  for (size_t i = 0; i < m->n; i++) {
    if (i + 1 < m->n && kv_slice_cmp(m->ops[i].key.ptr, m->ops[i].key.len,
                                     m->ops[i + 1].key.ptr,
                                     m->ops[i + 1].key.len) == 0) {
      free((char *)m->ops[i].key.ptr);
      continue;
    }
    m->ops[out++] = m->ops[i];
  }
  m->n = out;
}

/* kv_image_next_fn: LMDB's items and the log's writes in key order, a
 * logged write replacing or removing LMDB's item of the same key.  Stops
 * once a signal came. */
static int dump_next(void *it, kv_item_t *item) {
  dump_merge_t *m = it;

  for (;;) {
    const kv_op_t *op = m->next < m->n ? &m->ops[m->next] : NULL;
    int c;
    if (dump_sig) return KV_EIO;
    if (m->lm_state < 0) {
      m->lm_state = kv_ckpt_snap_next(m->snap, &m->lm);
      if (m->lm_state < 0) return m->lm_state;
    }
    if (!op && !m->lm_state) return 0;
    c = !op ? -1
        : !m->lm_state
            ? 1
            : kv_slice_cmp(m->lm.key.ptr, m->lm.key.len, op->key.ptr,
                           op->key.len);
    if (c < 0) {
      m->lm_state = -1;
      /* An expired key is gone even before its removal is written. */
      if (m->lm.expires && m->lm.expires <= m->now) continue;
      *item = m->lm;
      return 1;
    }
    if (c == 0) m->lm_state = -1; /* the log's write wins */
    m->next++;
    if (op->op != KV_OP_PUT || (op->expires && op->expires <= m->now))
      continue;
    item->key = op->key;
    item->val = op->val;
    item->rev = op->rev;
    item->expires = op->expires;
    return 1;
  }
}

/* Opens dir's LMDB environment and its log for reading, never disturbing
 * a live server.  Says why on stderr and returns non-zero on failure. */
static int dump_open(const char *dir, kv_ckpt_t **c, kv_revlog_t **log) {
  char errbuf[256];
  int err;

  errbuf[0] = '\0';
  err = kv_ckpt_open(dir, KV_CKPT_READONLY, 0, c, errbuf, sizeof errbuf);
  if (!err)
    err = kv_revlog_open(dir, KV_SYNC_NONE, 0, 1, log, errbuf,
                         sizeof errbuf);
  if (err)
    fprintf(stderr, "kvdump: %s: %s\n", dir,
            errbuf[0] ? errbuf : kv_strerror(err));
  return err;
}

/* Dumps the records under prefix: a read-only LMDB snapshot, plus the
 * log's writes past it.  The log's segments are opened first, so one that
 * a checkpoint removes meanwhile is still read, and the snapshot, taken
 * after, covers any that was already gone.  Returns the exit status. */
static int dump_store(const char *dir, const char *prefix, int format) {
  kv_ckpt_t *c = NULL;
  kv_revlog_t *log = NULL;
  dump_merge_t m = {.prefix = prefix, .plen = strlen(prefix), .lm_state = -1,
                    .now = kv_ttl_now()};
  dump_out_t o = {STDOUT_FILENO, 0};
  uint64_t ckpt_rev = 0, last;
  char errbuf[256];
  int err, ret = 1;

  errbuf[0] = '\0';
  if (dump_open(dir, &c, &log) != 0) goto out;
  err = kv_ckpt_snap_open(c, prefix, strlen(prefix), &m.snap);
  if (!err) err = kv_ckpt_snap_rev(m.snap, &ckpt_rev);
  if (err) {
    fprintf(stderr, "kvdump: %s: cannot open a snapshot: %s\n", dir,
            kv_strerror(err));
    goto out;
  }
  err = kv_revlog_replay(log, ckpt_rev, dump_collect, &m, &last, errbuf,
                         sizeof errbuf);
  if (err) {
    fprintf(stderr, "kvdump: %s\n", errbuf[0] ? errbuf : kv_strerror(err));
    goto out;
  }
  dump_settle(&m);
  err = kv_image_encode(format, dump_next, &m, dump_write, &o);
  if (dump_sig) goto out;
  if (o.err) {
    fprintf(stderr, "kvdump: write error: %s\n", strerror(o.err));
    goto out;
  }
  if (err == KV_EUTF8) {
    fprintf(stderr, "kvdump: %s: a stored key or value is not valid "
            "UTF-8\n", dir);
    goto out;
  }
  if (err) {
    fprintf(stderr, "kvdump: %s: cannot read: %s\n", dir, kv_strerror(err));
    goto out;
  }
  ret = 0;
out:
  for (size_t i = 0; i < m.n; i++) free((char *)m.ops[i].key.ptr);
  free(m.ops);
  kv_ckpt_snap_close(m.snap);
  kv_revlog_close(log);
  kv_ckpt_close(c);
  return ret;
}

/* Validates DIR/image.json and copies it to stdout.  The server never
 * changes an image file in place (it renames a new one over it), so the
 * mapping cannot be truncated under us.  Returns the exit status. */
static int dump_image(const char *dir) {
  char path[4096], why[256];
  struct stat st;
  const char *data = NULL;
  size_t len = 0;
  int fd = -1, ret = 1, e, n;

  n = snprintf(path, sizeof path, "%s/%s", dir, KV_IMAGE_FILE);
  if (n < 0 || (size_t)n >= sizeof path) {
    fprintf(stderr, "kvdump: %s: %s\n", dir, strerror(ENAMETOOLONG));
    goto out;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    e = errno;
    fprintf(stderr, "kvdump: %s: cannot open: %s%s\n", path, strerror(e),
            e == ENOENT ? " (the server has not written an image)" : "");
    goto out;
  }
  if (fstat(fd, &st) != 0) {
    fprintf(stderr, "kvdump: %s: %s\n", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    fprintf(stderr, "kvdump: %s: not a regular file\n", path);
    goto out;
  }
  len = (size_t)st.st_size;
  if (len > 0) {
    data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      data = NULL;
      fprintf(stderr, "kvdump: %s: cannot map: %s\n", path, strerror(errno));
      goto out;
    }
  }
  if (kv_image_validate(data, len, why, sizeof why) != 0) {
    fprintf(stderr, "kvdump: %s: %s\n", path, why);
    goto out;
  }
  e = dump_write_all(STDOUT_FILENO, data, len);
  if (dump_sig) goto out;
  if (e) {
    fprintf(stderr, "kvdump: write error: %s\n", strerror(e));
    goto out;
  }
  ret = 0;
out:
  if (data != NULL) munmap((void *)data, len);
  if (fd >= 0) close(fd);
  return ret;
}

/* fsyncs the directory that holds path, so a rename into it is durable.
 * Returns 0 or an errno. */
static int dump_sync_parent(const char *path) {
  char buf[4096];
  int fd, e = 0;

  snprintf(buf, sizeof buf, "%s", path);
  fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) e = errno;
  if (fd >= 0) close(fd);
  return e;
}

/* True when path would land in the directory dir: a backup written there
 * could replace the live data.mdb, and is no backup if the disk dies. */
static int dump_inside(const char *path, const char *dir) {
  char buf[4096];
  struct stat a, b;

  snprintf(buf, sizeof buf, "%s", path);
  return stat(dirname(buf), &a) == 0 && stat(dir, &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Applies the log's writes after the copy's revision to the copy, in
 * revision order, in one transaction that also records the last one's
 * revision, growing the map as a checkpoint would. */
static int dump_apply(kv_ckpt_t *copy, const dump_merge_t *m) {
  size_t size;
  int err;

  while ((err = kv_ckpt_commit(copy, m->ops, m->n)) == KV_EMAPFULL)
    if ((err = kv_ckpt_grow(copy, &size)) != 0) break;
  return err;
}

/* Writes FILE: a compacted copy of DIR's LMDB (kv_ckpt_copy), opened as a
 * data file of its own, with the log's writes after its revision applied,
 * so it holds every write acknowledged before kvdump started.  The log's
 * segments are opened before the copy, as dump_store does, so none that
 * the copy lacks can be removed meanwhile; a server that checkpoints
 * during the copy only moves the revision the copy holds, which the copy
 * records.  DIR is opened read-only and takes only a reader slot.  FILE
 * is written under a temporary name beside it, synced, and renamed.
 * Returns the exit status. */
static int dump_backup(const char *file, const char *dir) {
  kv_ckpt_t *c = NULL, *copy = NULL;
  kv_revlog_t *log = NULL;
  dump_merge_t m = {.prefix = "", .lm_state = -1};
  char tmp[4096], errbuf[256];
  uint64_t rev = 0, keys = 0, last;
  struct stat st;
  int fd = -1, err, e, ret = 1, n;

  tmp[0] = errbuf[0] = '\0';
  if (dump_inside(file, dir)) {
    fprintf(stderr, "kvdump: %s: a backup must not be written into the "
            "data directory %s\n", file, dir);
    return 1;
  }
  if (dump_open(dir, &c, &log) != 0) goto out;
  n = snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", file);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    tmp[0] = '\0';
    fprintf(stderr, "kvdump: %s: %s\n", file, strerror(ENAMETOOLONG));
    goto out;
  }
  if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
    e = errno;
    tmp[0] = '\0';
    fprintf(stderr, "kvdump: %s: cannot create: %s\n", file, strerror(e));
    goto out;
  }
  err = kv_ckpt_copy(c, fd);
  kv_ckpt_close(c); /* its reader slot goes now */
  c = NULL;
  if (dump_sig) goto out;
  if (err) {
    fprintf(stderr, "kvdump: %s: cannot copy %s: %s\n", file, dir,
            kv_strerror(err));
    goto out;
  }
  err = kv_ckpt_open(tmp, KV_CKPT_FILE, 0, &copy, errbuf, sizeof errbuf);
  if (!err) err = kv_ckpt_stat(copy, &keys, &rev);
  if (err) {
    fprintf(stderr, "kvdump: %s: cannot open the copy: %s\n", tmp,
            errbuf[0] ? errbuf : kv_strerror(err));
    goto out;
  }
  err = kv_revlog_replay(log, rev, dump_collect, &m, &last, errbuf,
                         sizeof errbuf);
  if (err) {
    fprintf(stderr, "kvdump: %s\n", errbuf[0] ? errbuf : kv_strerror(err));
    goto out;
  }
  if (m.n && !dump_sig) {
    err = dump_apply(copy, &m);
    if (!err) err = kv_ckpt_stat(copy, &keys, &rev);
    if (err) {
      fprintf(stderr, "kvdump: %s: cannot apply the log to the copy: %s\n",
              file, kv_strerror(err));
      goto out;
    }
  }
  kv_ckpt_close(copy);
  copy = NULL;
  if (dump_sig) goto out;
  e = fsync(fd) != 0 || fstat(fd, &st) != 0 || rename(tmp, file) != 0
          ? errno : 0;
  if (!e) {
    tmp[0] = '\0'; /* renamed: nothing to remove */
    e = dump_sync_parent(file);
  }
  if (e) {
    fprintf(stderr, "kvdump: %s: cannot write: %s\n", file, strerror(e));
    goto out;
  }
  fprintf(stderr, "kvdump: %s: revision %llu, %llu keys, %lld bytes, from "
          "%s\n", file, (unsigned long long)rev, (unsigned long long)keys,
          (long long)st.st_size, dir);
  ret = 0;
out:
  for (size_t i = 0; i < m.n; i++) free((char *)m.ops[i].key.ptr);
  free(m.ops);
  kv_ckpt_close(copy);
  kv_ckpt_close(c);
  kv_revlog_close(log);
  if (fd >= 0) close(fd);
  if (tmp[0]) unlink(tmp);
  return ret;
}

int kv_dump_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"image", no_argument, NULL, 'i'},
      {"backup", required_argument, NULL, 'b'},
      {"prefix", required_argument, NULL, 'p'},
      {"ndjson", no_argument, NULL, 'n'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  struct sigaction old[DUMP_NSIGNALS];
  const char *prefix = NULL, *backup = NULL;
  int image = 0, format = KV_IMAGE_OBJECT, opt, ret;

  optind = 0; /* glibc: full re-initialisation, so tests may call twice */
  while ((opt = getopt_long(argc, argv, "ib:p:nhV", opts, NULL)) != -1) {
    switch (opt) {
    case 'i': image = 1; break;
    case 'b': backup = optarg; break;
    case 'p': prefix = optarg; break;
    case 'n': format = KV_IMAGE_NDJSON; break;
    case 'h': dump_usage(stdout); return 0;
    case 'V': printf("kvdump %s\n", KV_VERSION); return 0;
    default: dump_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "kvdump: %s\n",
            optind == argc ? "missing DIR" : "more than one DIR");
    dump_usage(stderr);
    return 2;
  }
  if (image && (prefix != NULL || format != KV_IMAGE_OBJECT)) {
    fprintf(stderr, "kvdump: --image cannot be combined with --prefix "
            "or --ndjson\n");
    dump_usage(stderr);
    return 2;
  }
  if (backup && (image || prefix != NULL || format != KV_IMAGE_OBJECT)) {
    fprintf(stderr, "kvdump: --backup cannot be combined with --image, "
            "--prefix or --ndjson\n");
    dump_usage(stderr);
    return 2;
  }
  dump_trap(old);
  if (backup)
    ret = dump_backup(backup, argv[optind]);
  else if (image)
    ret = dump_image(argv[optind]);
  else
    ret = dump_store(argv[optind], prefix ? prefix : "", format);
  dump_untrap(old);
  return ret;
}
