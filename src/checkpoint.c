/* checkpoint.c - the durable copy of the map, in LMDB.
 *
 * The only file that includes lmdb.h: LMDB's codes are translated to KV_E*
 * codes here.  The environment is opened without MDB_WRITEMAP, so LMDB
 * writes pages with pwrite and a full disk is an error code, never a SIGBUS
 * on a store through the map.
 */
#include "kv/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "kv/error.h"
#include "kv/log.h"

#define CKPT_FORMAT_KEY "format"
#define CKPT_FORMAT "kvd-2"
#define CKPT_FORMAT_V1 "kvd-1" /* values without a header; migrated */
#define CKPT_REV_KEY "rev"     /* the last revision the checkpoint holds */

/* Each value in "data" starts with this header, little-endian: the
 * value's modification revision, and its expiry time in Unix
 * milliseconds (0: none). */
#define CKPT_HDR 16

/* Address space only: data.mdb grows as pages are written. */
#if SIZE_MAX > 0xffffffffu
#define CKPT_MAPSIZE ((size_t)64 << 30)
#else
#define CKPT_MAPSIZE ((size_t)1 << 30)
#endif

/* Tombstones, for the change feed's history past the log: "tomb" maps a
 * deleted key to its deletion (revision, Unix ms when checkpointed, op:
 * 17 bytes), "tombrev" the revision (8 bytes big-endian, so in order) to
 * the key.  A later PUT of the key removes both.  meta "forgot" is the
 * newest revision of a deletion forgotten. */
#define CKPT_FORGOT_KEY "forgot"
#define CKPT_TOMB 17
/* Tombstones forgotten per checkpoint at most: the rest wait for the
 * next, so one transaction stays small. */
#define CKPT_PRUNE_MAX 10000

struct kv_ckpt {
  MDB_env *env;
  MDB_dbi meta, data, tomb, tombrev;
  int has_tomb;   /* the tombstone databases exist (not in old copies) */
  uint64_t prune_keep, prune_before, now_ms; /* kv_ckpt_set_prune */
  kv_ckpt_tombs_t tombs;
  int readonly;
  int v1;         /* a kvd-1 directory read as it is (read-only opens) */
  int dirfd;      /* holds the directory's exclusive flock while open */
  int created;    /* this open made data.mdb */
  int made_dir;   /* this open made the directory itself */
  int no_reserve; /* the file system cannot preallocate */
  uint64_t reserved; /* data.mdb has disk blocks up to here */
};

struct kv_ckpt_snap {
  kv_ckpt_t *c;
  MDB_txn *txn;
  MDB_cursor *cur;
  MDB_cursor_op op; /* the next cursor move: FIRST/SET_RANGE, then NEXT */
  int done;
  size_t maxkey;
  const char *from; /* where SET_RANGE starts, when not the prefix */
  size_t flen;
  size_t plen;
  char prefix[];
};

/* Translates an LMDB or errno code from a transaction.  A full map, disk or
 * quota is KV_ENOSPACE and EIO is KV_EIO; the caller has nothing better to
 * do with anything else than report a storage error. */
static int ckpt_txn_err(int rc) {
  switch (rc) {
  case 0: return 0;
  case MDB_MAP_FULL: return KV_EMAPFULL; /* the caller grows the map */
  case ENOSPC:
  case EDQUOT: return KV_ENOSPACE;
  case EIO: return KV_EIO;
  case MDB_READERS_FULL: return KV_EREADERS;
  default: return KV_ESTORE;
  }
}

/* Translates a code from opening the environment, where a file that is not
 * LMDB's means "not ours" and a damaged one means corruption. */
static int ckpt_open_err(int rc) {
  switch (rc) {
  case ENOMEM: return KV_ENOMEM;
  case MDB_INVALID:
  case MDB_VERSION_MISMATCH: return KV_ENOTKVD;
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND: return KV_ECORRUPT;
  default: return ckpt_txn_err(rc);
  }
}

/* Returns 1 if dir holds no entry besides ".", "..", "lost+found" (the
 * root of a freshly made file system) and "lock.mdb" (left alone when a
 * first start died between creating the lock file and data.mdb), 0 if it
 * holds something else, or -errno. */
static int ckpt_dir_empty(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int empty = 1;
  if (d == NULL) return -errno;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    const char *n = e->d_name;
    if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 ||
        strcmp(n, "lost+found") == 0 || strcmp(n, "lock.mdb") == 0)
      continue;
    empty = 0;
    break;
  }
  if (empty && errno != 0) empty = -errno;
  closedir(d);
  return empty;
}

/* Checks dir before LMDB touches it: creates it if missing (unless
 * readonly), and refuses a directory that holds files but no data.mdb, so
 * kvd never scatters its files into somebody else's directory.  Sets *nolock
 * for a read-only open of a directory whose lock.mdb is gone, so that
 * nothing gets created.  Returns 0 or an error with errbuf filled. */
static int ckpt_prepare_dir(kv_ckpt_t *c, const char *dir, int *nolock,
                            char *errbuf, size_t errlen) {
  int readonly = c->readonly;
  struct stat st;
  char path[4096];
  int r, e;

  *nolock = 0;
  if (stat(dir, &st) != 0) {
    e = errno;
    if (e != ENOENT || readonly) {
      kv_errf(errbuf, errlen, "cannot open: %s", strerror(e));
      return e == EIO ? KV_EIO : KV_ESTORE;
    }
    if (mkdir(dir, 0700) != 0) {
      e = errno;
      kv_errf(errbuf, errlen, "cannot create: %s", strerror(e));
      return e == EIO ? KV_EIO : KV_ESTORE;
    }
    c->made_dir = c->created = 1;
    return 0;
  }
  if (!S_ISDIR(st.st_mode)) {
    kv_errf(errbuf, errlen, "cannot open: %s", strerror(ENOTDIR));
    return KV_ESTORE;
  }
  if ((size_t)snprintf(path, sizeof path, "%s/data.mdb", dir) >= sizeof path) {
    kv_errf(errbuf, errlen, "cannot open: %s", strerror(ENAMETOOLONG));
    return KV_ESTORE;
  }
  if (lstat(path, &st) != 0) {
    e = errno;
    if (e != ENOENT) {
      kv_errf(errbuf, errlen, "cannot open data.mdb: %s", strerror(e));
      return e == EIO ? KV_EIO : KV_ESTORE;
    }
    r = ckpt_dir_empty(dir);
    if (r < 0) {
      kv_errf(errbuf, errlen, "cannot read: %s", strerror(-r));
      return -r == EIO ? KV_EIO : KV_ESTORE;
    }
    if (r == 0) {
      kv_errf(errbuf, errlen,
               "not a kvd data directory (it holds other files)");
      return KV_ENOTKVD;
    }
    if (readonly) {
      kv_errf(errbuf, errlen, "not a kvd data directory (it is empty)");
      return KV_ENOTKVD;
    }
    c->created = 1;
    return 0;
  }
  if (readonly) {
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    if (lstat(path, &st) != 0 && errno == ENOENT) *nolock = 1;
  }
  return 0;
}

/* A single data file must exist and be a regular file: LMDB would
 * otherwise create an empty one.  Returns 0 or an error with errbuf
 * filled. */
static int ckpt_prepare_file(const char *path, char *errbuf, size_t errlen) {
  struct stat st;
  int e;

  if (stat(path, &st) != 0) {
    e = errno;
    kv_errf(errbuf, errlen, "cannot open: %s", strerror(e));
    return e == EIO ? KV_EIO : KV_ESTORE;
  }
  if (!S_ISREG(st.st_mode)) {
    kv_errf(errbuf, errlen, "cannot open: not a regular file");
    return KV_ESTORE;
  }
  return 0;
}

/* Grows the map to CKPT_MAPSIZE unless the environment already records a
 * larger one (set by an earlier run), which is kept: shrinking it below the
 * data would fail.  Must run with no transaction open. */
static int ckpt_set_mapsize(MDB_env *env) {
  MDB_envinfo info;
  int rc = mdb_env_info(env, &info);
  if (rc != 0) return rc;
  if (info.me_mapsize >= CKPT_MAPSIZE) return 0;
  return mdb_env_set_mapsize(env, CKPT_MAPSIZE);
}

/* LMDB maps data.mdb and trusts its meta page: a file cut shorter than
 * the pages the meta page names would be read past its end, a SIGBUS.
 * Refuse it while that is still only a number. */
static int ckpt_check_size(kv_ckpt_t *c, char *errbuf, size_t errlen) {
  MDB_envinfo info;
  MDB_stat st;
  struct stat fs;
  int fd;
  unsigned long long need;

  if (mdb_env_info(c->env, &info) != 0 || mdb_env_stat(c->env, &st) != 0 ||
      mdb_env_get_fd(c->env, &fd) != 0 || fstat(fd, &fs) != 0) {
    kv_errf(errbuf, errlen, "%s", "cannot read data.mdb's size");
    return KV_ESTORE;
  }
  need = ((unsigned long long)info.me_last_pgno + 1) * st.ms_psize;
  if ((unsigned long long)fs.st_size < need) {
    kv_errf(errbuf, errlen,
             "data.mdb is truncated: %llu bytes, its pages need %llu; "
             "restore it from a backup",
             (unsigned long long)fs.st_size, need);
    return KV_ECORRUPT;
  }
  return 0;
}

void kv_ckpt_release_pages(kv_ckpt_t *c) {
  struct stat st;
  char line[512];
  FILE *f;
  int fd;

  /* LMDB reports its map address only for MDB_FIXEDMAP, so find the
   * mapping of data.mdb's inode.  It is read-only and shared (no
   * MDB_WRITEMAP): dropping its page-table entries loses nothing. */
  if (mdb_env_get_fd(c->env, &fd) != 0 || fstat(fd, &st) != 0) return;
  f = fopen("/proc/self/maps", "re");
  if (!f) return;
  while (fgets(line, sizeof(line), f)) {
    unsigned long lo, hi, off, ino;
    unsigned maj, mnr;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &lo, &hi, perms, &off,
               &maj, &mnr, &ino) == 7 &&
        ino == st.st_ino && makedev(maj, mnr) == st.st_dev &&
        perms[1] != 'w')
      madvise((void *)lo, hi - lo, MADV_DONTNEED);
  }
  fclose(f);
}

int kv_ckpt_set_mapsize(kv_ckpt_t *c, size_t bytes) {
  /* LMDB raises a size below the data's to the data's size. */
  return mdb_env_set_mapsize(c->env, bytes) == 0 ? 0 : KV_ESTORE;
}

int kv_ckpt_grow(kv_ckpt_t *c, size_t *now) {
  MDB_envinfo info;
  size_t next;

  if (mdb_env_info(c->env, &info) != 0) return KV_ESTORE;
  next = info.me_mapsize < ((size_t)1 << 30) ? info.me_mapsize * 2
                                              : info.me_mapsize +
                                                    ((size_t)1 << 30);
  if (next < info.me_mapsize || mdb_env_set_mapsize(c->env, next) != 0)
    return KV_ENOSPACE;
  *now = next;
  return 0;
}

static void ckpt_put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t ckpt_get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Stores the value behind its header, written in place (MDB_RESERVE). */
static int ckpt_put_value(MDB_txn *txn, MDB_dbi dbi, MDB_val *k,
                          const char *val, size_t vlen, uint64_t rev,
                          uint64_t expires) {
  MDB_val v = {CKPT_HDR + vlen, NULL};
  int rc = mdb_put(txn, dbi, k, &v, MDB_RESERVE);

  if (rc != 0) return rc;
  ckpt_put_u64(v.mv_data, rev);
  ckpt_put_u64((unsigned char *)v.mv_data + 8, expires);
  if (vlen) memcpy((char *)v.mv_data + CKPT_HDR, val, vlen);
  return 0;
}

static int ckpt_put_rev(MDB_txn *txn, MDB_dbi meta, uint64_t rev) {
  unsigned char buf[8];
  MDB_val k = {sizeof CKPT_REV_KEY - 1, (void *)CKPT_REV_KEY};
  MDB_val v = {8, buf};

  ckpt_put_u64(buf, rev);
  return mdb_put(txn, meta, &k, &v, 0);
}

static int ckpt_get_rev(MDB_txn *txn, MDB_dbi meta, uint64_t *rev) {
  MDB_val k = {sizeof CKPT_REV_KEY - 1, (void *)CKPT_REV_KEY}, v;
  int rc = mdb_get(txn, meta, &k, &v);

  *rev = 0;
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return rc;
  if (v.mv_size != 8) return MDB_CORRUPTED;
  *rev = ckpt_get_u64(v.mv_data);
  return 0;
}

static void ckpt_put_be64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static uint64_t ckpt_get_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* Reads meta "forgot" and the oldest tombstone into c->tombs. */
static int ckpt_tomb_state(kv_ckpt_t *c, MDB_txn *txn) {
  MDB_val k = {sizeof CKPT_FORGOT_KEY - 1, (void *)CKPT_FORGOT_KEY}, v;
  MDB_cursor *cur;
  int rc = mdb_get(txn, c->meta, &k, &v);

  memset(&c->tombs, 0, sizeof c->tombs);
  if (rc == 0 && v.mv_size == 8) c->tombs.forgot = ckpt_get_u64(v.mv_data);
  else if (rc != MDB_NOTFOUND && rc != 0) return rc;
  rc = mdb_cursor_open(txn, c->tombrev, &cur);
  if (rc != 0) return rc;
  rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  if (rc == 0 && k.mv_size == 8) {
    MDB_val tv;
    c->tombs.first_rev = ckpt_get_be64(k.mv_data);
    if (mdb_get(txn, c->tomb, &v, &tv) == 0 && tv.mv_size == CKPT_TOMB)
      c->tombs.first_ms = ckpt_get_u64((const unsigned char *)tv.mv_data + 8);
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Removes key's tombstone, if it has one. */
static int ckpt_tomb_clear(kv_ckpt_t *c, MDB_txn *txn, MDB_val *key) {
  MDB_val v, rk;
  unsigned char be[8];
  int rc = mdb_get(txn, c->tomb, key, &v);

  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return rc;
  if (v.mv_size == CKPT_TOMB) {
    ckpt_put_be64(be, ckpt_get_u64(v.mv_data));
    rk.mv_size = 8;
    rk.mv_data = be;
    rc = mdb_del(txn, c->tombrev, &rk, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) return rc;
  }
  return mdb_del(txn, c->tomb, key, NULL);
}

static int ckpt_tomb_set(kv_ckpt_t *c, MDB_txn *txn, MDB_val *key,
                         const kv_op_t *op) {
  unsigned char t[CKPT_TOMB], be[8];
  MDB_val v = {CKPT_TOMB, t}, rk = {8, be};
  int rc = ckpt_tomb_clear(c, txn, key);

  ckpt_put_u64(t, op->rev);
  ckpt_put_u64(t + 8, c->now_ms);
  t[16] = (unsigned char)op->op;
  ckpt_put_be64(be, op->rev);
  if (rc == 0) rc = mdb_put(txn, c->tomb, key, &v, 0);
  if (rc == 0) rc = mdb_put(txn, c->tombrev, &rk, key, 0);
  return rc;
}

/* Forgets deletions that are both at or below prune_keep (outside the
 * change feed's exact history) and checkpointed before prune_before, in
 * revision order, at most CKPT_PRUNE_MAX; records the newest forgotten. */
static int ckpt_tomb_prune(kv_ckpt_t *c, MDB_txn *txn) {
  MDB_cursor *cur;
  MDB_val k, v, tv;
  uint64_t forgot = 0;
  int rc, n = 0;

  if (!c->prune_keep) return 0;
  rc = mdb_cursor_open(txn, c->tombrev, &cur);
  if (rc != 0) return rc;
  while (n < CKPT_PRUNE_MAX &&
         (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
    uint64_t rev = k.mv_size == 8 ? ckpt_get_be64(k.mv_data) : 0;
    if (rev > c->prune_keep) break;
    rc = mdb_get(txn, c->tomb, &v, &tv);
    if (rc == 0 && tv.mv_size == CKPT_TOMB) {
      if (ckpt_get_u64((const unsigned char *)tv.mv_data + 8) >=
          c->prune_before)
        break;
      if (ckpt_get_u64(tv.mv_data) == rev) rc = mdb_del(txn, c->tomb, &v, NULL);
    } else if (rc == MDB_NOTFOUND) {
      rc = 0;
    }
    if (rc == 0) rc = mdb_cursor_del(cur, 0);
    if (rc != 0) break;
    forgot = rev;
    n++;
  }
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) rc = 0;
  if (rc == 0 && forgot > c->tombs.forgot) {
    unsigned char buf[8];
    MDB_val fk = {sizeof CKPT_FORGOT_KEY - 1, (void *)CKPT_FORGOT_KEY};
    MDB_val fv = {8, buf};
    ckpt_put_u64(buf, forgot);
    rc = mdb_put(txn, c->meta, &fk, &fv, 0);
  }
  return rc;
}

/* Rewrites a kvd-1 directory as kvd-2 inside txn: every value gets its
 * header, with revisions 1..N in key order, as if the keys had been
 * written in that order, and the store's revision becomes N.  The values
 * are copied out first: LMDB's pages may move once the tree changes. */
static int ckpt_migrate_v1(kv_ckpt_t *c, MDB_txn *txn) {
  MDB_cursor *cur = NULL;
  MDB_val k, v, fk = {sizeof CKPT_FORMAT_KEY - 1, (void *)CKPT_FORMAT_KEY};
  MDB_val fv = {sizeof CKPT_FORMAT - 1, (void *)CKPT_FORMAT};
  char **copy = NULL;
  size_t n = 0, cap = 0;
  int rc;

  rc = mdb_cursor_open(txn, c->data, &cur);
  for (MDB_cursor_op op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
    char *e;
    rc = mdb_cursor_get(cur, &k, &v, op);
    if (rc != 0) break;
    if (n == cap) {
      char **nc = realloc(copy, (cap = cap ? cap * 2 : 1024) * sizeof *nc);
      if (nc == NULL) {
        rc = ENOMEM;
        break;
      }
      copy = nc;
    }
    /* klen (2 bytes), key, vlen (size_t), value */
    e = malloc(2 + k.mv_size + sizeof(size_t) + v.mv_size);
    if (e == NULL) {
      rc = ENOMEM;
      break;
    }
    e[0] = (char)(k.mv_size & 0xff);
    e[1] = (char)(k.mv_size >> 8);
    memcpy(e + 2, k.mv_data, k.mv_size);
    memcpy(e + 2 + k.mv_size, &v.mv_size, sizeof(size_t));
    memcpy(e + 2 + k.mv_size + sizeof(size_t), v.mv_data, v.mv_size);
    copy[n++] = e;
  }
  if (cur) mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    unsigned char *e = (unsigned char *)copy[i];
    size_t klen = (size_t)e[0] | (size_t)e[1] << 8, vlen;
    memcpy(&vlen, e + 2 + klen, sizeof(size_t));
    k.mv_size = klen;
    k.mv_data = e + 2;
    rc = ckpt_put_value(txn, c->data, &k,
                        (const char *)e + 2 + klen + sizeof(size_t), vlen,
                        i + 1, 0);
  }
  if (rc == 0) rc = ckpt_put_rev(txn, c->meta, n);
  if (rc == 0) rc = mdb_put(txn, c->meta, &fk, &fv, 0);
  for (size_t i = 0; i < n; i++) free(copy[i]);
  free(copy);
  if (rc == 0)
    kv_log_info("migrated %zu keys from format %s to %s", n, CKPT_FORMAT_V1,
                CKPT_FORMAT);
  return rc;
}

static int ckpt_format_is(const MDB_val *v, const char *f) {
  return v->mv_size == strlen(f) && memcmp(v->mv_data, f, v->mv_size) == 0;
}

/* Opens "meta" and "data" and checks the format marker.  An environment
 * with nothing at all in it (a first start that died before its first
 * commit) is initialised like a new one when writable: it cannot hold
 * anybody's data.  A kvd-1 directory is migrated when writable, and read
 * as it is otherwise.  Returns 0 or an error with errbuf filled. */
static int ckpt_check_format(kv_ckpt_t *c, char *errbuf, size_t errlen) {
  MDB_txn *txn = NULL;
  MDB_dbi main_dbi;
  MDB_stat ms;
  MDB_val k = {sizeof CKPT_FORMAT_KEY - 1, (void *)CKPT_FORMAT_KEY};
  MDB_val v;
  int rc, err;

  rc = mdb_txn_begin(c->env, NULL, c->readonly ? MDB_RDONLY : 0, &txn);
  if (rc != 0) goto lmdb_fail;
  rc = mdb_dbi_open(txn, "meta", 0, &c->meta);
  if (rc == MDB_NOTFOUND && !c->readonly) {
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0) rc = mdb_stat(txn, main_dbi, &ms);
    if (rc != 0) goto lmdb_fail;
    if (ms.ms_entries != 0) goto not_kvd;
    v.mv_size = sizeof CKPT_FORMAT - 1;
    v.mv_data = (void *)CKPT_FORMAT;
    rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta);
    if (rc == 0) rc = mdb_dbi_open(txn, "data", MDB_CREATE, &c->data);
    if (rc == 0) rc = mdb_put(txn, c->meta, &k, &v, 0);
    if (rc == 0) rc = ckpt_put_rev(txn, c->meta, 0);
    if (rc != 0) goto lmdb_fail;
  } else {
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) goto not_kvd;
    if (rc != 0) goto lmdb_fail;
    rc = mdb_get(txn, c->meta, &k, &v);
    if (rc == MDB_NOTFOUND) goto not_kvd;
    if (rc != 0) goto lmdb_fail;
    if (!ckpt_format_is(&v, CKPT_FORMAT) &&
        !ckpt_format_is(&v, CKPT_FORMAT_V1)) {
      if (v.mv_size > 4 && memcmp(v.mv_data, "kvd-", 4) == 0) {
        kv_errf(errbuf, errlen,
                 "unsupported kvd format (this build reads %s and %s)",
                 CKPT_FORMAT_V1, CKPT_FORMAT);
        err = KV_ENOTKVD;
        goto fail;
      }
      goto not_kvd;
    }
    c->v1 = ckpt_format_is(&v, CKPT_FORMAT_V1);
    rc = mdb_dbi_open(txn, "data", 0, &c->data);
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
      kv_errf(errbuf, errlen, "the kvd data database is missing");
      err = KV_ECORRUPT;
      goto fail;
    }
    if (rc != 0) goto lmdb_fail;
    if (c->v1 && !c->readonly) {
      rc = ckpt_migrate_v1(c, txn);
      if (rc != 0) goto lmdb_fail;
      c->v1 = 0;
    }
  }
  rc = mdb_dbi_open(txn, "tomb", c->readonly ? 0 : MDB_CREATE, &c->tomb);
  if (rc == 0)
    rc = mdb_dbi_open(txn, "tombrev", c->readonly ? 0 : MDB_CREATE,
                      &c->tombrev);
  if (rc == 0) {
    c->has_tomb = 1;
    rc = ckpt_tomb_state(c, txn);
  }
  if (rc == MDB_NOTFOUND && c->readonly) rc = 0; /* none written yet */
  if (rc != 0) goto lmdb_fail;
  /* Committing (even a read-only txn) keeps the DBI handles for the env. */
  rc = mdb_txn_commit(txn);
  txn = NULL;
  if (rc != 0) goto lmdb_fail;
  return 0;

not_kvd:
  kv_errf(errbuf, errlen, "not a kvd data directory (no kvd format marker)");
  err = KV_ENOTKVD;
  goto fail;
lmdb_fail:
  kv_errf(errbuf, errlen, "cannot initialise: %s", mdb_strerror(rc));
  err = ckpt_open_err(rc);
fail:
  if (txn != NULL) mdb_txn_abort(txn);
  return err;
}

/* fsyncs the directory at path: a new entry in it (data.mdb, or the
 * data directory itself) is durable only once its directory is. */
static int ckpt_sync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

  if (fd < 0 || fsync(fd) != 0) rc = errno;
  if (fd >= 0) close(fd);
  return rc;
}

/* Makes a new directory's entries durable: data.mdb and lock.mdb in dir,
 * and dir in its parent when this open created it. */
static int ckpt_sync_new(kv_ckpt_t *c, const char *dir, char *errbuf,
                         size_t errlen) {
  char parent[4096];
  const char *slash;
  int e = fsync(c->dirfd) != 0 ? errno : 0;

  if (e == 0 && c->made_dir) {
    slash = strrchr(dir, '/');
    if (slash == NULL)
      snprintf(parent, sizeof parent, ".");
    else if (slash == dir)
      snprintf(parent, sizeof parent, "/");
    else
      snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
    e = ckpt_sync_dir(parent);
  }
  if (e == 0) return 0;
  kv_errf(errbuf, errlen, "cannot sync the new directory: %s", strerror(e));
  return e == EIO ? KV_EIO : KV_ESTORE;
}

int kv_ckpt_open(const char *dir, int flags, unsigned max_readers,
                 kv_ckpt_t **out, char *errbuf, size_t errlen) {
  kv_ckpt_t *c = NULL;
  unsigned int envflags = MDB_NOTLS | MDB_NORDAHEAD;
  int nolock, rc, err, dead;

  *out = NULL;
  kv_errf(errbuf, errlen, "%s", "");
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    kv_errf(errbuf, errlen, "%s", strerror(ENOMEM));
    return KV_ENOMEM;
  }
  c->readonly = (flags & KV_CKPT_READONLY) != 0;
  c->dirfd = -1;
  if (flags & KV_CKPT_FILE) {
    err = ckpt_prepare_file(dir, errbuf, errlen);
    nolock = 1;
    envflags |= MDB_NOSUBDIR;
    /* A backup file gets no spare blocks past its pages: it is read more
     * than it is written, and whoever writes it sees ENOSPC anyway. */
    c->no_reserve = 1;
  } else {
    err = ckpt_prepare_dir(c, dir, &nolock, errbuf, errlen);
  }
  if (err != 0) goto fail;
  /* LMDB lets several processes write one environment; two servers would
   * each keep their own diverging map.  One writer per directory. */
  if (!c->readonly && !(flags & KV_CKPT_FILE)) {
    c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dirfd < 0 || flock(c->dirfd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      err = e == EWOULDBLOCK ? KV_EBUSY : KV_ESTORE;
      kv_errf(errbuf, errlen, "%s",
               e == EWOULDBLOCK ? kv_strerror(KV_EBUSY) : strerror(e));
      goto fail;
    }
  }
  if (c->readonly) envflags |= MDB_RDONLY;
  /* A read-only open would create lock.mdb, owned by whoever runs kvdump,
   * and the server could not open it later: go without locking.  Only
   * safe because no server runs on a directory without its lock file. */
  if (nolock) envflags |= MDB_NOLOCK;

  rc = mdb_env_create(&c->env);
  if (rc == 0) rc = mdb_env_set_maxdbs(c->env, 4);
  /* The first process to open the environment sizes lock.mdb's reader
   * table; later ones use the size it has. */
  if (rc == 0)
    rc = mdb_env_set_maxreaders(c->env,
                                max_readers ? max_readers : KV_CKPT_READERS);
  if (rc != 0) goto lmdb_fail;
  rc = mdb_env_open(c->env, dir, envflags, 0600);
  if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH) {
    kv_errf(errbuf, errlen, "not a kvd data directory (data.mdb: %s)",
             mdb_strerror(rc));
    err = KV_ENOTKVD;
    goto fail;
  }
  if (rc != 0) goto lmdb_fail;
  /* Readers of a killed process keep pages from being reused until their
   * slots are cleared; the write mutex itself is robust. */
  if (!c->readonly && !nolock) {
    rc = mdb_reader_check(c->env, &dead);
    if (rc != 0) goto lmdb_fail;
  }
  err = ckpt_check_size(c, errbuf, errlen);
  if (err != 0) goto fail;
  rc = ckpt_set_mapsize(c->env);
  if (rc != 0) goto lmdb_fail;
  err = ckpt_check_format(c, errbuf, errlen);
  if (err == 0 && c->created && !c->readonly)
    err = ckpt_sync_new(c, dir, errbuf, errlen);
  if (err != 0) goto fail;
  *out = c;
  return 0;

lmdb_fail:
  kv_errf(errbuf, errlen, "cannot open: %s", mdb_strerror(rc));
  err = ckpt_open_err(rc);
fail:
  if (c->env != NULL) mdb_env_close(c->env);
  if (c->dirfd >= 0) close(c->dirfd);
  free(c);
  return err;
}

void kv_ckpt_close(kv_ckpt_t *c) {
  if (c == NULL) return;
  mdb_env_close(c->env);
  if (c->dirfd >= 0) close(c->dirfd);
  free(c);
}

/* Gives data.mdb disk blocks, past the pages LMDB has used, for every page
 * the batch could write: each op's path from root to leaf copied and split
 * once, the value's overflow pages, and the free list and roots.  LMDB
 * then only overwrites allocated blocks, so its pwrites cannot fail with
 * ENOSPC, and any error at commit is a failed flush.  Blocks are given in
 * steps of 1/16 of the file (at least 1 MiB) to keep this to a syscall now
 * and then; near a full disk, exactly what is needed.  Returns 0 or
 * KV_ENOSPACE with nothing of the batch written. */
static int ckpt_reserve(kv_ckpt_t *c, MDB_txn *txn, const kv_op_t *ops,
                        size_t n) {
  MDB_envinfo info;
  MDB_stat st;
  uint64_t touched = 0, small = 0, pages = 16, base, need, step;
  int fd, e;

  if (c->no_reserve || mdb_stat(txn, c->data, &st) != 0 ||
      mdb_env_info(c->env, &info) != 0 || mdb_env_get_fd(c->env, &fd) != 0)
    return 0;
  /* A transaction copies each page it touches once: at most a path per
   * op, and never more than the tree has.  New entries fill new pages at
   * least half full; large values take overflow pages of their own. */
  for (size_t i = 0; i < n; i++) {
    uint64_t bytes = ops[i].key.len + ops[i].val.len + CKPT_HDR + 16;
    touched += 2 * ((uint64_t)st.ms_depth + 1);
    if (ops[i].val.len + CKPT_HDR > st.ms_psize / 2)
      pages += (bytes + 64 + st.ms_psize - 1) / st.ms_psize;
    else
      small += bytes;
  }
  if (touched > (uint64_t)info.me_last_pgno + 1)
    touched = (uint64_t)info.me_last_pgno + 1;
  /* The free list records each copied page in 8 bytes. */
  pages += touched + touched / 256 + 2 * (small / st.ms_psize + 1) +
           2 * st.ms_depth;
  base = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
  need = base + pages * st.ms_psize;
  if (need <= c->reserved) return 0;
  step = need / 16 > (1u << 20) ? need / 16 : (1u << 20);
  /* The file is extended too, not only given blocks: LMDB counts pages a
   * transaction allocated and freed again (loose pages) up to its last
   * page without writing them, and a file shorter than that last page
   * would look truncated to the next open. */
  if (fallocate(fd, 0, (off_t)base, (off_t)(need + step - base)) == 0) {
    c->reserved = need + step;
    return 0;
  }
  e = errno;
  if (e == ENOSPC || e == EDQUOT) {
    if (fallocate(fd, 0, (off_t)base, (off_t)(need - base)) == 0) {
      c->reserved = need;
      return 0;
    }
    e = errno;
  }
  if (e == ENOSPC || e == EDQUOT) return KV_ENOSPACE;
  if (e == EOPNOTSUPP) c->no_reserve = 1; /* pwrite may then see ENOSPC */
  return 0;
}

/* One write transaction for the whole batch: LMDB commits it atomically,
 * so on any failure the abort leaves none of it applied.  Failures before
 * mdb_txn_commit wrote nothing the next open would see, and keep their
 * meaning (a full map or disk), as does a full map found when the commit
 * saves the free list.  Any other failure of mdb_txn_commit is a failed
 * flush: its pages or meta page may be half on disk, and after a
 * failed fsync the kernel may have dropped them, so it is KV_EIO. */
int kv_ckpt_commit(kv_ckpt_t *c, const kv_op_t *ops, size_t n) {
  MDB_txn *txn = NULL;
  MDB_val k;
  uint64_t last = 0;
  int rc, dead;

  /* With no op, a checkpoint only forgets old tombstones. */
  if (n == 0 && (!c->has_tomb || !c->prune_keep)) return 0;
  /* A reader slot left by a killed process (kvdump) pins every page its
   * snapshot could see, and the file grows with each commit until the
   * slot is freed.  Checking costs a scan of the reader table. */
  if (mdb_reader_check(c->env, &dead) == 0 && dead > 0)
    kv_log_info("freed %d stale LMDB reader slot%s", dead,
                dead == 1 ? "" : "s");
  rc = mdb_txn_begin(c->env, NULL, 0, &txn);
  if (rc == MDB_PANIC) return KV_EIO; /* an earlier flush failed */
  if (rc != 0) return ckpt_txn_err(rc);
  rc = ckpt_reserve(c, txn, ops, n);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    k.mv_size = ops[i].key.len;
    k.mv_data = (void *)ops[i].key.ptr;
    if (ops[i].rev > last) last = ops[i].rev;
    if (ops[i].op == KV_OP_PUT) {
      rc = ckpt_put_value(txn, c->data, &k, ops[i].val.ptr, ops[i].val.len,
                          ops[i].rev, ops[i].expires);
      if (rc == 0 && c->has_tomb) rc = ckpt_tomb_clear(c, txn, &k);
    } else if (ops[i].op == KV_OP_DEL || ops[i].op == KV_OP_EXPIRE) {
      rc = mdb_del(txn, c->data, &k, NULL);
      if (rc == MDB_NOTFOUND) rc = 0;
      if (rc == 0 && c->has_tomb) rc = ckpt_tomb_set(c, txn, &k, &ops[i]);
    } else {
      rc = EINVAL;
    }
    if (rc != 0) {
      mdb_txn_abort(txn);
      return ckpt_txn_err(rc);
    }
  }
  rc = n ? ckpt_put_rev(txn, c->meta, last) : 0;
  if (rc == 0 && c->has_tomb) rc = ckpt_tomb_prune(c, txn);
  if (rc == 0 && c->has_tomb) rc = ckpt_tomb_state(c, txn);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return ckpt_txn_err(rc);
  }
  rc = mdb_txn_commit(txn); /* frees txn whatever the outcome */
  /* Saving the free list can still need a page, before anything is
   * written. */
  if (rc == MDB_MAP_FULL) return KV_EMAPFULL;
  return rc == 0 ? 0 : KV_EIO;
}

int kv_ckpt_stat(kv_ckpt_t *c, uint64_t *keys, uint64_t *rev) {
  MDB_txn *txn;
  MDB_stat ms;
  int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
  if (rc != 0) return ckpt_txn_err(rc);
  rc = mdb_stat(txn, c->data, &ms);
  if (rc == 0) rc = ckpt_get_rev(txn, c->meta, rev);
  mdb_txn_abort(txn);
  if (rc != 0) return rc == MDB_CORRUPTED ? KV_ECORRUPT : ckpt_txn_err(rc);
  *keys = ms.ms_entries;
  return 0;
}

/* LMDB's compacting copy walks one read snapshot's trees and writes only
 * the pages in use, renumbered, so the copy is as small as the data and
 * its free list is empty.  Its writes are plain write() calls on fd from
 * a thread of LMDB's own, whose errno comes back here. */
int kv_ckpt_copy(kv_ckpt_t *c, int fd) {
  int rc = mdb_env_copyfd2(c->env, fd, MDB_CP_COMPACT);

  switch (rc) {
  case 0: return 0;
  case ENOMEM: return KV_ENOMEM;
  case MDB_PANIC: return KV_EIO; /* an earlier commit's flush failed */
  default: return ckpt_txn_err(rc);
  }
}

/* The first cursor move is deferred to the first kv_ckpt_snap_next, so
 * opening costs one reader slot and nothing else.  A prefix longer than
 * any key can be matches nothing. */
int kv_ckpt_snap_open(kv_ckpt_t *c, const char *prefix, size_t plen,
                      kv_ckpt_snap_t **out) {
  kv_ckpt_snap_t *s;
  int rc;

  *out = NULL;
  s = calloc(1, sizeof *s + plen + 1);
  if (s == NULL) return KV_ENOMEM;
  s->c = c;
  if (plen > 0) memcpy(s->prefix, prefix, plen);
  s->plen = plen;
  s->maxkey = (size_t)mdb_env_get_maxkeysize(c->env);
  kv_ckpt_snap_rewind(s);
  rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &s->txn);
  if (rc != 0) goto fail;
  rc = mdb_cursor_open(s->txn, c->data, &s->cur);
  if (rc != 0) goto fail;
  *out = s;
  return 0;

fail:
  if (s->txn != NULL) mdb_txn_abort(s->txn);
  free(s);
  return rc == ENOMEM ? KV_ENOMEM : ckpt_txn_err(rc);
}

int kv_ckpt_snap_next(kv_ckpt_snap_t *s, kv_item_t *item) {
  MDB_val k, v;
  int rc;

  if (s->done) return 0;
  k.mv_size = s->from ? s->flen : s->plen;
  k.mv_data = s->from ? (void *)s->from : s->prefix;
  rc = mdb_cursor_get(s->cur, &k, &v, s->op);
  s->op = MDB_NEXT;
  if (rc == MDB_NOTFOUND) {
    s->done = 1;
    return 0;
  }
  if (rc != 0) return rc == MDB_CORRUPTED ? KV_ECORRUPT : ckpt_txn_err(rc);
  if (k.mv_size < s->plen || memcmp(k.mv_data, s->prefix, s->plen) != 0) {
    s->done = 1;
    return 0;
  }
  item->key.ptr = k.mv_data;
  item->key.len = k.mv_size;
  item->expires = 0;
  if (s->c->v1) {
    item->rev = 0;
    item->val.ptr = v.mv_data;
    item->val.len = v.mv_size;
    return 1;
  }
  if (v.mv_size < CKPT_HDR) return KV_ECORRUPT;
  item->rev = ckpt_get_u64(v.mv_data);
  item->expires = ckpt_get_u64((const unsigned char *)v.mv_data + 8);
  item->val.ptr = (const char *)v.mv_data + CKPT_HDR;
  item->val.len = v.mv_size - CKPT_HDR;
  return 1;
}

void kv_ckpt_set_prune(kv_ckpt_t *c, uint64_t keep_rev, uint64_t before_ms,
                       uint64_t now_ms) {
  c->prune_keep = keep_rev;
  c->prune_before = before_ms;
  c->now_ms = now_ms;
}

kv_ckpt_tombs_t kv_ckpt_tombs(const kv_ckpt_t *c) { return c->tombs; }

int kv_ckpt_snap_changes(kv_ckpt_snap_t *s, uint64_t after, uint64_t upto,
                         int (*fn)(void *ctx, const kv_op_t *op), void *ctx) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  kv_item_t it;
  kv_op_t op;
  int rc;

  kv_ckpt_snap_rewind(s);
  while ((rc = kv_ckpt_snap_next(s, &it)) == 1) {
    if (it.rev <= after || it.rev > upto) continue;
    op = (kv_op_t){KV_OP_PUT, it.key, it.val, it.rev, it.rev, it.expires};
    if ((rc = fn(ctx, &op)) != 0) return rc;
  }
  if (rc != 0 || !s->c->has_tomb || s->plen > s->maxkey) return rc;
  rc = mdb_cursor_open(s->txn, s->c->tomb, &cur);
  k.mv_size = s->plen;
  k.mv_data = s->prefix;
  if (rc == 0)
    rc = mdb_cursor_get(cur, &k, &v, s->plen ? MDB_SET_RANGE : MDB_FIRST);
  while (rc == 0) {
    uint64_t rev;
    if (k.mv_size < s->plen || memcmp(k.mv_data, s->prefix, s->plen) != 0)
      break;
    if (v.mv_size != CKPT_TOMB) {
      rc = MDB_CORRUPTED;
      break;
    }
    rev = ckpt_get_u64(v.mv_data);
    if (rev > after && rev <= upto) {
      const unsigned char *t = v.mv_data;
      op = (kv_op_t){t[16] == KV_OP_EXPIRE ? KV_OP_EXPIRE : KV_OP_DEL,
                     {k.mv_data, k.mv_size}, {NULL, 0}, rev, rev, 0};
      if ((rc = fn(ctx, &op)) != 0) break;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  if (cur) mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) rc = 0;
  if (rc > 0) rc = rc == MDB_CORRUPTED ? KV_ECORRUPT : ckpt_txn_err(rc);
  return rc;
}

int kv_ckpt_snap_rev(kv_ckpt_snap_t *s, uint64_t *rev) {
  int rc = ckpt_get_rev(s->txn, s->c->meta, rev);
  return rc == 0 ? 0 : rc == MDB_CORRUPTED ? KV_ECORRUPT : ckpt_txn_err(rc);
}

void kv_ckpt_snap_rewind(kv_ckpt_snap_t *s) {
  s->op = s->plen > 0 ? MDB_SET_RANGE : MDB_FIRST;
  s->done = s->plen > s->maxkey;
  s->from = NULL;
}

void kv_ckpt_snap_seek(kv_ckpt_snap_t *s, const char *key, size_t klen) {
  if (s->done || kv_slice_cmp(key, klen, s->prefix, s->plen) <= 0) return;
  /* A key longer than LMDB takes cannot be stored; its first bytes start
   * the range no later than it, and the caller skips what sorts before. */
  s->from = key;
  s->flen = klen < s->maxkey ? klen : s->maxkey;
  s->op = MDB_SET_RANGE;
}

void kv_ckpt_snap_close(kv_ckpt_snap_t *s) {
  if (s == NULL) return;
  mdb_cursor_close(s->cur);
  mdb_txn_abort(s->txn);
  free(s);
}
