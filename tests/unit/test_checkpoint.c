/* test_checkpoint.c - the LMDB checkpoint: directories, batches, snapshots.
 *
 * Raw LMDB calls build the foreign and half-made environments that kvd
 * must refuse or recover, and play the part of a writer that gets killed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv/checkpoint.h"
#include "kv/error.h"
/* full_disk_is_enospace is a durability test: under CI=true it may not skip
 * (see test.h). */
#define KV_CI_STRICT 1
#include "test.h"

typedef struct {
  const char *k;
  size_t kl;
  const char *v;
  size_t vl;
} rec_t;

/* sizeof, not strlen, so that literals may hold NUL bytes */
#define R(k, v) {k, sizeof(k) - 1, v, sizeof(v) - 1}

static char mounted[256]; /* a tmpfs to unmount at exit, if any */

static void unmount_at_exit(void) {
  if (mounted[0]) umount2(mounted, MNT_DETACH);
}

/* Mounts a 1 MiB tmpfs on dir.  Returns 0 and sets *err to errno if that
 * is not possible here (not root, no mount namespace): the test skips. */
static int mount_small_tmpfs(const char *dir, int *err) {
  if (mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700") != 0) {
    *err = errno;
    return 0;
  }
  snprintf(mounted, sizeof mounted, "%s", dir);
  atexit(unmount_at_exit);
  return 1;
}

static void unmount_small_tmpfs(void) {
  CHECK_INT(umount2(mounted, MNT_DETACH), 0);
  mounted[0] = '\0';
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/kvckpt.XXXXXX");
  CHECK(d != NULL && mkdtemp(d) != NULL);
  return d;
}

static void rmtree(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  CHECK_INT(system(cmd), 0);
}

static char *path_in(const char *d, const char *name) {
  static char buf[4][512];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/%s", d, name);
  return buf[i];
}

static int exists(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0;
}

static int cmpstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists a directory's entries, sorted, as "a,b,c" into buf. */
static const char *listdir(const char *d, char *buf, size_t size) {
  char *names[64];
  int n = 0;
  DIR *dir = opendir(d);
  struct dirent *e;
  CHECK(dir != NULL);
  while ((e = readdir(dir)) != NULL && n < 64) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    names[n++] = strdup(e->d_name);
  }
  closedir(dir);
  qsort(names, (size_t)n, sizeof names[0], cmpstr);
  buf[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (i) strncat(buf, ",", size - strlen(buf) - 1);
    strncat(buf, names[i], size - strlen(buf) - 1);
    free(names[i]);
  }
  return buf;
}

static kv_ckpt_t *open_ok(const char *d, int flags) {
  kv_ckpt_t *c = NULL;
  char err[256];
  int rc = kv_ckpt_open(d, flags, 0, &c, err, sizeof err);
  if (rc != 0) KV__FAIL("open %s: %d %s", d, rc, err);
  return c;
}

static void put(kv_ckpt_t *c, const char *k, const char *v) {
  kv_op_t op = {KV_OP_PUT, {k, strlen(k)}, {v, strlen(v)}, 1, 1, 0};
  CHECK_INT(kv_ckpt_commit(c, &op, 1), 0);
}

/* Checks that a snapshot under prefix yields exactly want, in order. */
static void expect(kv_ckpt_t *c, const char *prefix, const rec_t *want,
                   size_t n) {
  kv_ckpt_snap_t *s;
  kv_item_t it;
  size_t i = 0;
  int r;
  CHECK_INT(kv_ckpt_snap_open(c, prefix, strlen(prefix), &s), 0);
  while ((r = kv_ckpt_snap_next(s, &it)) == 1) {
    if (i >= n)
      KV__FAIL("unexpected extra key %.*s", (int)it.key.len, it.key.ptr);
    CHECK_MEM(it.key.ptr, it.key.len, want[i].k, want[i].kl);
    CHECK_MEM(it.val.ptr, it.val.len, want[i].v, want[i].vl);
    i++;
  }
  CHECK_INT(r, 0);
  CHECK_INT(i, n);
  CHECK_INT(kv_ckpt_snap_next(s, &it), 0); /* stays at the end */
  kv_ckpt_snap_close(s);
}

/* Reads meta "format" with raw LMDB, as an outsider would. */
static void expect_marker(const char *d) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_val k = {6, "format"}, v;
  CHECK_INT(mdb_env_create(&env), 0);
  CHECK_INT(mdb_env_set_maxdbs(env, 2), 0);
  CHECK_INT(mdb_env_open(env, d, MDB_RDONLY, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  CHECK_INT(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
  CHECK_INT(mdb_get(txn, dbi, &k, &v), 0);
  CHECK_MEM(v.mv_data, v.mv_size, "kvd-2", 5);
  CHECK_INT(mdb_dbi_open(txn, "data", 0, &dbi), 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
}

/* Makes an LMDB environment in d with raw calls.  If dbname is set, that
 * named DB is created and holds key=val; otherwise key=val goes into the
 * main DB; with key NULL nothing is written at all. */
static void raw_env(const char *d, const char *dbname, const char *key,
                    const char *val) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  CHECK_INT(mdb_env_create(&env), 0);
  CHECK_INT(mdb_env_set_maxdbs(env, 4), 0);
  CHECK_INT(mdb_env_open(env, d, 0, 0600), 0);
  if (key != NULL) {
    MDB_val k = {strlen(key), (void *)key}, v = {strlen(val), (void *)val};
    CHECK_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_INT(mdb_dbi_open(txn, dbname, dbname ? MDB_CREATE : 0, &dbi), 0);
    CHECK_INT(mdb_put(txn, dbi, &k, &v, 0), 0);
    CHECK_INT(mdb_txn_commit(txn), 0);
  }
  mdb_env_close(env);
}

static void expect_refused(const char *d, int code, const char *msg) {
  kv_ckpt_t *c = (kv_ckpt_t *)1;
  char err[256];
  CHECK_INT(kv_ckpt_open(d, 0, 0, &c, err, sizeof err), code);
  CHECK(c == NULL);
  CHECK_STR(err, msg);
}

KV_TEST(fresh_dir_is_initialised, "a missing directory is created 0700 and marked kvd-2 at revision 0") {
  char *base = tmpdir(), *d = path_in(base, "data"), ls[256];
  struct stat st;
  kv_ckpt_t *c = open_ok(d, 0);
  uint64_t n = 99, rev = 99;
  CHECK_INT(stat(d, &st), 0);
  CHECK_INT(st.st_mode & 0777, 0700);
  CHECK_STR(listdir(d, ls, sizeof ls), "data.mdb,lock.mdb");
  CHECK_INT(kv_ckpt_stat(c, &n, &rev), 0);
  CHECK_INT(n, 0);
  CHECK_INT(rev, 0);
  expect(c, "", NULL, 0);
  kv_ckpt_close(c);
  expect_marker(d);
  rmtree(base);
  free(base);
}

KV_TEST(empty_dir_is_initialised, "an empty directory or one with only lost+found is initialised") {
  char *d = tmpdir();
  kv_ckpt_close(open_ok(d, 0));
  expect_marker(d);
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  CHECK_INT(mkdir(path_in(d, "lost+found"), 0700), 0);
  kv_ckpt_close(open_ok(d, 0));
  expect_marker(d);
  rmtree(d);
  free(d);
}

KV_TEST(interrupted_init_recovers, "an LMDB env left empty by a first start that died is initialised") {
  char *d = tmpdir();
  raw_env(d, NULL, NULL, NULL);
  CHECK(exists(path_in(d, "data.mdb")));
  kv_ckpt_close(open_ok(d, 0));
  expect_marker(d);
  rmtree(d);
  free(d);
}

KV_TEST(reopen_keeps_data, "data committed before a close is all there after reopening") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  static const rec_t want[] = {R("k1", "v1"), R("k2", "v2")};
  uint64_t n = 0, rev = 0;
  put(c, "k2", "v2");
  put(c, "k1", "v1");
  kv_ckpt_close(c);
  c = open_ok(d, 0);
  expect(c, "", want, 2);
  CHECK_INT(kv_ckpt_stat(c, &n, &rev), 0);
  CHECK_INT(n, 2);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(foreign_env_is_refused, "an LMDB env without a kvd-1 or kvd-2 marker is refused with KV_ENOTKVD") {
  char *d = tmpdir();
  raw_env(d, NULL, "hello", "world"); /* data in the main DB, no "meta" */
  expect_refused(d, KV_ENOTKVD,
                 "not a kvd data directory (no kvd format marker)");
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  raw_env(d, "meta", "owner", "someone else"); /* "meta", no "format" */
  expect_refused(d, KV_ENOTKVD,
                 "not a kvd data directory (no kvd format marker)");
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  raw_env(d, "meta", "format", "other-1");
  expect_refused(d, KV_ENOTKVD,
                 "not a kvd data directory (no kvd format marker)");
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  raw_env(d, "meta", "format", "kvd-9");
  expect_refused(d, KV_ENOTKVD, "unsupported kvd format (this build reads "
                 "kvd-1 and kvd-2)");
  rmtree(d);
  free(d);
}

KV_TEST(other_files_are_refused, "a non-empty directory without data.mdb is refused and left untouched") {
  char *d = tmpdir(), ls[256];
  FILE *f = fopen(path_in(d, "notes.txt"), "w");
  CHECK(f != NULL);
  fclose(f);
  expect_refused(d, KV_ENOTKVD,
                 "not a kvd data directory (it holds other files)");
  CHECK_STR(listdir(d, ls, sizeof ls), "notes.txt");
  rmtree(d);
  free(d);
}

KV_TEST(garbage_data_file_is_refused, "a data.mdb that is not an LMDB file is refused with KV_ENOTKVD") {
  char *d = tmpdir();
  char junk[8192];
  FILE *f = fopen(path_in(d, "data.mdb"), "w");
  kv_ckpt_t *c;
  char err[256];
  CHECK(f != NULL);
  memset(junk, 'x', sizeof junk);
  CHECK_INT(fwrite(junk, 1, sizeof junk, f), sizeof junk);
  fclose(f);
  CHECK_INT(kv_ckpt_open(d, 0, 0, &c, err, sizeof err),
            KV_ENOTKVD);
  CHECK(strncmp(err, "not a kvd data directory (data.mdb: ", 36) == 0);
  CHECK(strchr(err, '\n') == NULL && strstr(err, d) == NULL);
  rmtree(d);
  free(d);
}

KV_TEST(unusable_path_fails, "a path under a regular file fails with the system error in errbuf") {
  char *d = tmpdir(), *file = path_in(d, "file");
  char sub[600], err[256];
  kv_ckpt_t *c;
  FILE *f = fopen(file, "w");
  CHECK(f != NULL);
  fclose(f);
  CHECK_INT(kv_ckpt_open(file, 0, 0, &c, err, sizeof err),
            KV_ESTORE);
  CHECK_STR(err, "cannot open: Not a directory");
  snprintf(sub, sizeof sub, "%s/x", file);
  CHECK_INT(kv_ckpt_open(sub, 0, 0, &c, err, sizeof err),
            KV_ESTORE);
  CHECK_STR(err, "cannot open: Not a directory");
  rmtree(d);
  free(d);
}

KV_TEST(batch_applies_in_order, "a batch applies its ops in order and a snapshot sees exact bytes") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t ops[] = {
      {KV_OP_PUT, {"a", 1}, {"first", 5}, 2, 2, 0},
      {KV_OP_PUT, {"b", 1}, {"bee", 3}, 3, 3, 0},
      {KV_OP_PUT, {"a", 1}, {"second", 6}, 4, 4, 0},
      {KV_OP_DEL, {"b", 1}, {NULL, 0}, 5, 5, 0},
      {KV_OP_DEL, {"missing", 7}, {NULL, 0}, 6, 6, 0},
      {KV_OP_PUT, {"c\xc3\xa9", 3}, {"x\ny", 3}, 7, 7, 0},
      {KV_OP_PUT, {"B", 1}, {"upper", 5}, 8, 8, 0},
      {KV_OP_PUT, {"ab", 2}, {"longer", 6}, 9, 9, 0},
      {KV_OP_DEL, {"B", 1}, {NULL, 0}, 10, 10, 0},
      {KV_OP_PUT, {"B", 1}, {"again", 5}, 11, 11, 0},
  };
  static const rec_t want[] = {R("B", "again"), R("a", "second"),
                               R("ab", "longer"), R("c\xc3\xa9", "x\ny")};
  uint64_t n = 0, rev = 0;
  CHECK_INT(kv_ckpt_commit(c, ops, sizeof ops / sizeof ops[0]), 0);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect(c, "", want, 4);
  CHECK_INT(kv_ckpt_stat(c, &n, &rev), 0);
  CHECK_INT(n, 4);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(failed_batch_applies_nothing, "a batch with an oversized key fails and none of it is applied") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  static char big[512];
  kv_op_t ops[] = {
      {KV_OP_PUT, {"x", 1}, {"1", 1}, 12, 12, 0},
      {KV_OP_DEL, {"keep", 4}, {NULL, 0}, 13, 13, 0},
      {KV_OP_PUT, {big, sizeof big}, {"2", 1}, 14, 14, 0},
  };
  static const rec_t want[] = {R("keep", "me")};
  memset(big, 'k', sizeof big);
  put(c, "keep", "me");
  CHECK_INT(kv_ckpt_commit(c, ops, 3), KV_ESTORE);
  expect(c, "", want, 1);
  ops[2].key.len = 511; /* the largest key LMDB takes by default */
  CHECK_INT(kv_ckpt_commit(c, ops, 3), 0);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(prefix_snapshot, "a prefix snapshot yields exactly the keys that start with the prefix") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  static const char *keys[] = {"ap", "app", "apple", "apply", "apq",
                               "b", "a", "app\xff", "apo"};
  static const rec_t app[] = {R("app", "app"), R("apple", "apple"),
                              R("apply", "apply"), R("app\xff", "app\xff")};
  static const rec_t b[] = {R("b", "b")};
  char big[600];
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    put(c, keys[i], keys[i]);
  expect(c, "app", app, 4);
  expect(c, "b", b, 1);
  expect(c, "apples", NULL, 0);
  expect(c, "c", NULL, 0);
  expect(c, "0", NULL, 0);
  memset(big, 'a', sizeof big); /* longer than any key can be */
  big[sizeof big - 1] = '\0';
  expect(c, big, NULL, 0);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(snapshot_is_consistent, "a snapshot ignores later commits and its slices stay valid") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_ckpt_snap_t *s;
  kv_item_t i1, i2;
  char val[3000];
  memset(val, 'v', sizeof val - 1);
  val[sizeof val - 1] = '\0';
  put(c, "a", val); /* big enough for an overflow page */
  put(c, "b", "2");
  CHECK_INT(kv_ckpt_snap_open(c, NULL, 0, &s), 0);
  CHECK_INT(kv_ckpt_snap_next(s, &i1), 1);
  for (int i = 0; i < 50; i++) { /* churn pages a writer would reuse */
    val[0] = (char)('a' + i % 26);
    put(c, "a", val);
    put(c, "c", val);
  }
  CHECK_INT(kv_ckpt_snap_next(s, &i2), 1);
  CHECK_MEM(i2.key.ptr, i2.key.len, "b", 1);
  CHECK_INT(kv_ckpt_snap_next(s, &i2), 0); /* no "c" */
  CHECK_MEM(i1.key.ptr, i1.key.len, "a", 1);
  CHECK_INT(i1.val.len, sizeof val - 1);
  CHECK(i1.val.ptr[0] == 'v' && i1.val.ptr[i1.val.len - 1] == 'v');
  kv_ckpt_snap_close(s);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(empty_and_nul_values, "empty values and values with NUL bytes round-trip exactly") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t ops[] = {
      {KV_OP_PUT, {"e", 1}, {NULL, 0}, 15, 15, 0},
      {KV_OP_PUT, {"f", 1}, {"", 0}, 16, 16, 0},
      {KV_OP_PUT, {"n", 1}, {"\0a\0\0b\0", 6}, 17, 17, 0},
      {KV_OP_PUT, {"k\0z", 3}, {"\0", 1}, 18, 18, 0},
  };
  static const rec_t want[] = {R("e", ""), R("f", ""), R("k\0z", "\0"),
                               R("n", "\0a\0\0b\0")};
  CHECK_INT(kv_ckpt_commit(c, ops, 4), 0);
  expect(c, "", want, 4);
  kv_ckpt_close(c);
  c = open_ok(d, 0);
  expect(c, "", want, 4);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(readonly_without_lock_creates_nothing, "a read-only open of a dir without lock.mdb creates no file") {
  char *d = tmpdir(), before[256], after[256];
  kv_ckpt_t *c = open_ok(d, 0);
  static const rec_t want[] = {R("k", "v")};
  kv_op_t del = {KV_OP_DEL, {"k", 1}, {NULL, 0}, 19, 19, 0};
  struct stat st1, st2;
  put(c, "k", "v");
  kv_ckpt_close(c);
  CHECK_INT(unlink(path_in(d, "lock.mdb")), 0);
  listdir(d, before, sizeof before);
  CHECK_STR(before, "data.mdb");
  CHECK_INT(stat(path_in(d, "data.mdb"), &st1), 0);
  c = open_ok(d, KV_CKPT_READONLY);
  expect(c, "", want, 1);
  CHECK(kv_ckpt_commit(c, &del, 1) < 0);
  kv_ckpt_close(c);
  CHECK_STR(listdir(d, after, sizeof after), before);
  CHECK_INT(stat(path_in(d, "data.mdb"), &st2), 0);
  CHECK_INT(st2.st_size, st1.st_size);
  CHECK_INT(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
  CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
  rmtree(d);
  free(d);
}

KV_TEST(readonly_keeps_lock_file, "a read-only open reuses lock.mdb and keeps its inode and owner") {
  char *d = tmpdir(), *lock = path_in(d, "lock.mdb");
  kv_ckpt_t *c = open_ok(d, 0);
  static const rec_t want[] = {R("k", "v")};
  struct stat st1, st2;
  int chowned;
  put(c, "k", "v");
  kv_ckpt_close(c);
  chowned = chown(lock, 4242, 4242) == 0; /* only as root */
  CHECK_INT(stat(lock, &st1), 0);
  c = open_ok(d, KV_CKPT_READONLY);
  expect(c, "", want, 1);
  kv_ckpt_close(c);
  CHECK_INT(stat(lock, &st2), 0);
  CHECK_INT(st2.st_ino, st1.st_ino);
  CHECK_INT(st2.st_uid, st1.st_uid);
  if (chowned) CHECK_INT(st2.st_uid, 4242);
  rmtree(d);
  free(d);
}

KV_TEST(readonly_missing_dir, "a read-only open of a missing or empty dir fails and creates nothing") {
  char *base = tmpdir(), *d = path_in(base, "nope"), err[256], ls[64];
  kv_ckpt_t *c;
  CHECK_INT(kv_ckpt_open(d, KV_CKPT_READONLY, 0, &c, err,
                         sizeof err), KV_ESTORE);
  CHECK_STR(err, "cannot open: No such file or directory");
  CHECK(!exists(d));
  CHECK_INT(kv_ckpt_open(base, KV_CKPT_READONLY, 0, &c, err,
                         sizeof err), KV_ENOTKVD);
  CHECK_STR(err, "not a kvd data directory (it is empty)");
  CHECK_STR(listdir(base, ls, sizeof ls), "");
  rmtree(base);
  free(base);
}

/* The child takes a reader slot and the write lock with raw LMDB calls,
 * writes a key it never commits, and waits to be killed. */
static void killed_writer_child(const char *d, int fd) {
  MDB_env *env;
  MDB_txn *rtxn, *wtxn;
  MDB_dbi dbi;
  MDB_val k = {5, "ghost"}, v = {1, "x"};
  if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 2) ||
      mdb_env_open(env, d, MDB_NOTLS, 0600) ||
      mdb_txn_begin(env, NULL, MDB_RDONLY, &rtxn) ||
      mdb_txn_begin(env, NULL, 0, &wtxn) ||
      mdb_dbi_open(wtxn, "data", 0, &dbi) ||
      mdb_put(wtxn, dbi, &k, &v, 0))
    _exit(3);
  if (write(fd, "r", 1) != 1) _exit(4);
  for (;;) pause();
}

KV_TEST(killed_writer_recovers, "a writer SIGKILLed mid-transaction leaves a dir that takes commits") {
  char *d = tmpdir(), byte;
  kv_ckpt_t *c = open_ok(d, 0);
  static const rec_t want[] = {R("a", "1"), R("b", "2"), R("c", "3")};
  int fds[2], status;
  pid_t pid;
  put(c, "a", "1");
  CHECK_INT(pipe(fds), 0);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    killed_writer_child(d, fds[1]);
  }
  close(fds[1]);
  CHECK_INT(read(fds[0], &byte, 1), 1);
  close(fds[0]);
  CHECK_INT(kill(pid, SIGKILL), 0);
  CHECK_INT(waitpid(pid, &status, 0), pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  alarm(20); /* a dead owner's mutex that is not robust would hang here */
  put(c, "b", "2"); /* same process: recovers the write mutex */
  kv_ckpt_close(c);
  c = open_ok(d, 0); /* a new open: clears the stale reader */
  put(c, "c", "3");
  expect(c, "", want, 3);
  kv_ckpt_close(c);
  alarm(0);
  rmtree(d);
  free(d);
}

KV_TEST(full_disk_is_enospace, "a commit that overflows the disk fails with KV_ENOSPACE and loses nothing") {
  char *base = tmpdir(), *d = path_in(base, "data");
  kv_ckpt_t *c;
  static char val[64 * 1024];
  static const rec_t want[] = {R("keep", "me")};
  uint64_t n = 0, rev = 0;
  int rc = 0, i;
  int err = 0;
  if (!mount_small_tmpfs(base, &err)) {
    rmtree(base);
    free(base);
    KV_SKIP("cannot mount a tmpfs: %s", strerror(err));
  }
  c = open_ok(d, 0);
  put(c, "keep", "me");
  memset(val, 'v', sizeof val);
  for (i = 0; i < 64 && rc == 0; i++) {
    char key[16];
    kv_op_t op = {KV_OP_PUT, {key, 0}, {val, sizeof val}, 20, 20, 0};
    op.key.len = (size_t)snprintf(key, sizeof key, "big%02d", i);
    rc = kv_ckpt_commit(c, &op, 1);
  }
  CHECK_INT(rc, KV_ENOSPACE);
  CHECK(i > 1);
  CHECK_INT(kv_ckpt_stat(c, &n, &rev), 0);
  CHECK_INT(n, (uint64_t)i); /* keep + every big value but the last */
  kv_ckpt_close(c);
  c = open_ok(d, 0);
  expect(c, "keep", want, 1);
  kv_ckpt_close(c);
  unmount_small_tmpfs();
  rmtree(base);
  free(base);
}

/* Collects the keys a snapshot under prefix yields after seeking to from,
 * joined by spaces. */
static void seek_keys(kv_ckpt_t *c, const char *prefix, const char *from,
                      char *out, size_t cap) {
  kv_ckpt_snap_t *s;
  kv_item_t it;
  size_t n = 0;
  CHECK_INT(kv_ckpt_snap_open(c, prefix, strlen(prefix), &s), 0);
  kv_ckpt_snap_seek(s, from, strlen(from));
  out[0] = '\0';
  while (kv_ckpt_snap_next(s, &it) == 1) {
    CHECK(n + it.key.len + 2 < cap);
    if (n) out[n++] = ' ';
    memcpy(out + n, it.key.ptr, it.key.len);
    n += it.key.len;
    out[n] = '\0';
  }
  kv_ckpt_snap_close(s);
}

KV_TEST(snapshot_seek, "a seek starts a snapshot at the first key at or after the given one, within its prefix") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  char got[256];
  const char *keys[] = {"a", "a/1", "a/2", "a/3", "ab", "b"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    put(c, keys[i], "v");
  seek_keys(c, "a/", "a/2", got, sizeof got);
  CHECK_STR(got, "a/2 a/3");
  seek_keys(c, "a/", "a/22", got, sizeof got);
  CHECK_STR(got, "a/3");
  seek_keys(c, "a/", "a", got, sizeof got); /* before the prefix: no move */
  CHECK_STR(got, "a/1 a/2 a/3");
  seek_keys(c, "a/", "a/9", got, sizeof got);
  CHECK_STR(got, "");
  seek_keys(c, "", "ab", got, sizeof got);
  CHECK_STR(got, "ab b");
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(expiry_round_trip, "a value's expiry time is stored in its header and read back by a snapshot") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_ckpt_snap_t *s;
  kv_item_t it;
  kv_op_t ops[3] = {
      {KV_OP_PUT, {"k", 1}, {"v", 1}, 1, 1, UINT64_C(1893456000123)},
      {KV_OP_PUT, {"n", 1}, {"w", 1}, 2, 1, 0},
      {KV_OP_EXPIRE, {"gone", 4}, {NULL, 0}, 3, 1, 0},
  };
  put(c, "gone", "x");
  CHECK_INT(kv_ckpt_commit(c, ops, 3), 0);
  CHECK_INT(kv_ckpt_snap_open(c, NULL, 0, &s), 0);
  CHECK_INT(kv_ckpt_snap_next(s, &it), 1);
  CHECK_MEM(it.key.ptr, it.key.len, "k", 1);
  CHECK_INT(it.expires, UINT64_C(1893456000123));
  CHECK_INT(kv_ckpt_snap_next(s, &it), 1);
  CHECK_MEM(it.key.ptr, it.key.len, "n", 1);
  CHECK_INT(it.expires, 0);
  CHECK_INT(kv_ckpt_snap_next(s, &it), 0); /* the expiry removed "gone" */
  kv_ckpt_snap_close(s);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

/* ---- tombstones and the collapsed change feed ------------------------------ */

#define PUT(k, v, rev) {KV_OP_PUT, {k, sizeof(k) - 1}, {v, sizeof(v) - 1}, rev, rev, 0}
#define DEL(k, rev) {KV_OP_DEL, {k, sizeof(k) - 1}, {NULL, 0}, rev, rev, 0}
#define EXP(k, rev) {KV_OP_EXPIRE, {k, sizeof(k) - 1}, {NULL, 0}, rev, rev, 0}

/* Commits ops with tombstones dated now_ms and nothing forgotten. */
static void commit_at(kv_ckpt_t *c, uint64_t now_ms, const kv_op_t *ops,
                      size_t n) {
  kv_ckpt_set_prune(c, 0, 0, now_ms);
  CHECK_INT(kv_ckpt_commit(c, ops, n), 0);
}

static void expect_tombs(kv_ckpt_t *c, uint64_t forgot, uint64_t first_rev,
                         uint64_t first_ms) {
  kv_ckpt_tombs_t t = kv_ckpt_tombs(c);
  CHECK_INT(t.forgot, forgot);
  CHECK_INT(t.first_rev, first_rev);
  CHECK_INT(t.first_ms, first_ms);
}

static uint64_t ckpt_rev(kv_ckpt_t *c) {
  uint64_t keys, rev = 0;
  CHECK_INT(kv_ckpt_stat(c, &keys, &rev), 0);
  return rev;
}

/* snap_changes's calls, each as "REV OP KEY[=VALUE][@EXPIRES]". */
typedef struct {
  uint64_t rev;
  char text[256];
} change_t;

typedef struct {
  change_t v[64];
  size_t n;
  size_t fail_at; /* return fail at this call (1-based; 0: never) */
  int fail;
} changes_t;

static int on_change(void *ctx, const kv_op_t *op) {
  changes_t *cs = ctx;
  change_t *ch;
  static const char *const names[] = {"?", "put", "del", "expire"};
  int n;
  CHECK(cs->n < 64);
  if (cs->fail_at && cs->n + 1 == cs->fail_at) return cs->fail;
  ch = &cs->v[cs->n++];
  CHECK(op->op >= KV_OP_PUT && op->op <= KV_OP_EXPIRE);
  CHECK_INT(op->batch, op->rev);
  if (op->op != KV_OP_PUT) CHECK(op->val.len == 0 && op->expires == 0);
  ch->rev = op->rev;
  n = snprintf(ch->text, sizeof ch->text, "%llu %s %.*s",
               (unsigned long long)op->rev, names[op->op], (int)op->key.len,
               op->key.ptr);
  if (op->op == KV_OP_PUT)
    n += snprintf(ch->text + n, sizeof ch->text - (size_t)n, "=%.*s",
                  (int)op->val.len, op->val.ptr);
  if (op->expires)
    snprintf(ch->text + n, sizeof ch->text - (size_t)n, "@%llu",
             (unsigned long long)op->expires);
  return 0;
}

static int by_rev(const void *a, const void *b) {
  const change_t *x = a, *y = b;
  return (x->rev > y->rev) - (x->rev < y->rev);
}

/* The changes in (after, upto] under prefix, sorted by revision and
 * joined by "|" (the order of the calls is unspecified). */
static const char *snap_changes_in(kv_ckpt_snap_t *s, uint64_t after,
                                   uint64_t upto) {
  static char out[4096];
  changes_t cs = {.n = 0};
  CHECK_INT(kv_ckpt_snap_changes(s, after, upto, on_change, &cs), 0);
  qsort(cs.v, cs.n, sizeof cs.v[0], by_rev);
  out[0] = '\0';
  for (size_t i = 0; i < cs.n; i++) {
    if (i) strncat(out, "|", sizeof out - strlen(out) - 1);
    strncat(out, cs.v[i].text, sizeof out - strlen(out) - 1);
  }
  return out;
}

static const char *changes(kv_ckpt_t *c, const char *prefix, uint64_t after,
                           uint64_t upto) {
  static char first[4096];
  kv_ckpt_snap_t *s;
  const char *again;
  CHECK_INT(kv_ckpt_snap_open(c, prefix, strlen(prefix), &s), 0);
  snprintf(first, sizeof first, "%s", snap_changes_in(s, after, upto));
  /* It rewinds first: the same snapshot gives the same answer again. */
  again = snap_changes_in(s, after, upto);
  CHECK_STR(again, first);
  kv_ckpt_snap_close(s);
  return first;
}

static uint64_t le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* The "tomb" and "tombrev" databases and meta "forgot" as raw LMDB shows
 * them (kvd's handle closed): "tomb KEY=REV,MS,OP ...; tombrev REV=KEY
 * ...; forgot N" (forgot -: not stored). */
static const char *raw_tombs(const char *d) {
  static char out[4096];
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi tomb, tombrev, meta;
  MDB_cursor *cur;
  MDB_val k, v, fk = {6, "forgot"};
  char one[600];
  int rc;
  CHECK_INT(mdb_env_create(&env), 0);
  CHECK_INT(mdb_env_set_maxdbs(env, 4), 0);
  CHECK_INT(mdb_env_open(env, d, MDB_RDONLY, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  CHECK_INT(mdb_dbi_open(txn, "tomb", 0, &tomb), 0);
  CHECK_INT(mdb_dbi_open(txn, "tombrev", 0, &tombrev), 0);
  CHECK_INT(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  snprintf(out, sizeof out, "tomb");
  CHECK_INT(mdb_cursor_open(txn, tomb, &cur), 0);
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    const unsigned char *t = v.mv_data;
    CHECK_INT(v.mv_size, 17);
    snprintf(one, sizeof one, " %.*s=%llu,%llu,%d", (int)k.mv_size,
             (const char *)k.mv_data, (unsigned long long)le64(t),
             (unsigned long long)le64(t + 8), t[16]);
    strncat(out, one, sizeof out - strlen(out) - 1);
  }
  CHECK_INT(rc, MDB_NOTFOUND);
  mdb_cursor_close(cur);
  strncat(out, "; tombrev", sizeof out - strlen(out) - 1);
  CHECK_INT(mdb_cursor_open(txn, tombrev, &cur), 0);
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    uint64_t rev = 0;
    CHECK_INT(k.mv_size, 8); /* big-endian, so in revision order */
    for (int i = 0; i < 8; i++) rev = rev << 8 | ((const unsigned char *)k.mv_data)[i];
    snprintf(one, sizeof one, " %llu=%.*s", (unsigned long long)rev,
             (int)v.mv_size, (const char *)v.mv_data);
    strncat(out, one, sizeof out - strlen(out) - 1);
  }
  CHECK_INT(rc, MDB_NOTFOUND);
  mdb_cursor_close(cur);
  rc = mdb_get(txn, meta, &fk, &v);
  if (rc == 0) {
    CHECK_INT(v.mv_size, 8);
    snprintf(one, sizeof one, "; forgot %llu",
             (unsigned long long)le64(v.mv_data));
  } else {
    CHECK_INT(rc, MDB_NOTFOUND);
    snprintf(one, sizeof one, "; forgot -");
  }
  strncat(out, one, sizeof out - strlen(out) - 1);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return out;
}

KV_TEST(tombstones_from_deletions, "a DELETE and an EXPIRE leave tombstones that kv_ckpt_snap_changes reports as KV_OP_DEL and KV_OP_EXPIRE at their revisions") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t puts[] = {PUT("a", "1", 1), PUT("b", "2", 2), PUT("c", "3", 3)};
  kv_op_t dels[] = {DEL("a", 4), EXP("b", 5)};
  expect_tombs(c, 0, 0, 0);
  commit_at(c, 1000, puts, 3);
  expect_tombs(c, 0, 0, 0);
  CHECK_STR(changes(c, "", 0, 3), "1 put a=1|2 put b=2|3 put c=3");
  commit_at(c, 2000, dels, 2);
  expect_tombs(c, 0, 4, 2000);
  CHECK_INT(ckpt_rev(c), 5);
  CHECK_STR(changes(c, "", 0, 5), "3 put c=3|4 del a|5 expire b");
  CHECK_STR(changes(c, "", 3, 4), "4 del a");
  CHECK_STR(changes(c, "", 4, 5), "5 expire b");
  kv_ckpt_close(c);
  /* Stored as documented: the key to its revision, the checkpoint's time
   * and the op; the revision (big-endian) to the key. */
  CHECK_STR(raw_tombs(d), "tomb a=4,2000,2 b=5,2000,3; tombrev 4=a 5=b; forgot -");
  rmtree(d);
  free(d);
}

KV_TEST(put_clears_tombstone, "a later PUT of a deleted key removes its tombstone and its tombrev entry, in a later batch or the same one") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t b1[] = {DEL("a", 1), DEL("b", 2)};
  kv_op_t b2[] = {DEL("c", 3)};
  kv_op_t b3[] = {PUT("a", "again", 4)};
  kv_op_t b4[] = {PUT("b", "back", 5)};
  /* x: deleted then put in one batch; y: put then deleted; z: deleted
   * twice (the second replaces the first). */
  kv_op_t b5[] = {DEL("x", 6), PUT("x", "X", 7), PUT("y", "Y", 8),
                  DEL("y", 9), DEL("z", 10), EXP("z", 11)};
  commit_at(c, 100, b1, 2);
  commit_at(c, 200, b2, 1);
  expect_tombs(c, 0, 1, 100);
  commit_at(c, 300, b3, 1);
  expect_tombs(c, 0, 2, 100);
  CHECK_STR(changes(c, "", 0, 4), "2 del b|3 del c|4 put a=again");
  commit_at(c, 400, b4, 1);
  expect_tombs(c, 0, 3, 200);
  CHECK_STR(changes(c, "", 0, 5), "3 del c|4 put a=again|5 put b=back");
  commit_at(c, 500, b5, 6);
  expect_tombs(c, 0, 3, 200);
  CHECK_STR(changes(c, "", 0, 11),
            "3 del c|4 put a=again|5 put b=back|7 put x=X|9 del y|11 expire z");
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d),
            "tomb c=3,200,2 y=9,500,2 z=11,500,3; tombrev 3=c 9=y 11=z; forgot -");
  /* The last tombstone goes: none is left anywhere. */
  c = open_ok(d, 0);
  {
    kv_op_t b6[] = {PUT("c", "", 12), PUT("y", "", 13), PUT("z", "", 14)};
    commit_at(c, 600, b6, 3);
  }
  expect_tombs(c, 0, 0, 0);
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb; tombrev; forgot -");
  rmtree(d);
  free(d);
}

KV_TEST(changes_window_and_prefix, "kv_ckpt_snap_changes reports each key's latest change once, PUTs with value and expiry, only with revisions above after and up to upto, and only under the snapshot's prefix") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_ckpt_snap_t *s;
  kv_op_t ops[] = {PUT("a/1", "x", 1), PUT("a/2", "y", 2), PUT("b/1", "z", 3),
                   PUT("a", "top", 4), PUT("a/3", "w", 5),  DEL("a/2", 6),
                   EXP("b/1", 7),      PUT("a/1", "x2", 8), PUT("a/4", "v", 9),
                   DEL("a/4", 10),     PUT("a0", "after", 11), PUT("a.", "p", 12),
                   DEL("a.", 13)};
  ops[4].expires = 1893456000123;
  commit_at(c, 1, ops, sizeof ops / sizeof ops[0]);
  CHECK_STR(changes(c, "", 0, 13),
            "4 put a=top|5 put a/3=w@1893456000123|6 del a/2|7 expire b/1|"
            "8 put a/1=x2|10 del a/4|11 put a0=after|13 del a.");
  /* "a." sorts just before "a/", "a0" just after. */
  CHECK_STR(changes(c, "a/", 0, 13),
            "5 put a/3=w@1893456000123|6 del a/2|8 put a/1=x2|10 del a/4");
  CHECK_STR(changes(c, "a/", 5, 8), "6 del a/2|8 put a/1=x2");
  CHECK_STR(changes(c, "a/", 6, 7), "");
  CHECK_STR(changes(c, "", 6, 7), "7 expire b/1");
  CHECK_STR(changes(c, "a/4", 0, 13), "10 del a/4");
  CHECK_STR(changes(c, "a/4", 0, 9), ""); /* its PUT at 9 is not its latest */
  CHECK_STR(changes(c, "a", 3, 4), "4 put a=top");
  CHECK_STR(changes(c, "b", 0, 13), "7 expire b/1");
  CHECK_STR(changes(c, "c", 0, 13), "");
  CHECK_STR(changes(c, "", 0, 4), "4 put a=top"); /* a/1's PUT at 1 was replaced */
  CHECK_STR(changes(c, "", 13, 100), "");
  CHECK_STR(changes(c, "", 8, 8), "");
  CHECK_STR(changes(c, "", 12, 13), "13 del a.");
  CHECK_STR(changes(c, "", 0, UINT64_MAX),
            "4 put a=top|5 put a/3=w@1893456000123|6 del a/2|7 expire b/1|"
            "8 put a/1=x2|10 del a/4|11 put a0=after|13 del a.");
  /* A snapshot's changes ignore later commits. */
  CHECK_INT(kv_ckpt_snap_open(c, "a/", 2, &s), 0);
  {
    kv_op_t later[] = {DEL("a/1", 14), PUT("a/2", "new", 15)};
    commit_at(c, 2, later, 2);
  }
  CHECK_STR(snap_changes_in(s, 0, 100),
            "5 put a/3=w@1893456000123|6 del a/2|8 put a/1=x2|10 del a/4");
  kv_ckpt_snap_close(s);
  CHECK_STR(changes(c, "a/", 0, 100),
            "5 put a/3=w@1893456000123|10 del a/4|14 del a/1|15 put a/2=new");
  /* An error of fn stops the walk and is returned, among the PUTs or the
   * tombstones. */
  CHECK_INT(kv_ckpt_snap_open(c, "a/", 2, &s), 0);
  {
    changes_t cs = {.n = 0, .fail_at = 1, .fail = KV_ENOMEM};
    CHECK_INT(kv_ckpt_snap_changes(s, 0, 100, on_change, &cs), KV_ENOMEM);
    CHECK_INT(cs.n, 0);
    cs = (changes_t){.n = 0, .fail_at = 3, .fail = KV_ESTOP};
    CHECK_INT(kv_ckpt_snap_changes(s, 0, 100, on_change, &cs), KV_ESTOP);
    CHECK_INT(cs.n, 2); /* the two PUTs; the first tombstone stopped it */
  }
  kv_ckpt_snap_close(s);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(prune_forgets_old_tombstones, "kv_ckpt_set_prune forgets tombstones at or below keep_rev checkpointed before before_ms, oldest first, and kv_ckpt_tombs reports forgot, first_rev and first_ms exactly") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t b1[] = {DEL("k1", 1), DEL("k2", 2)};
  kv_op_t b2[] = {DEL("k3", 3), EXP("k4", 4)};
  kv_op_t b3[] = {DEL("k5", 5)};
  commit_at(c, 1000, b1, 2);
  commit_at(c, 2000, b2, 2);
  commit_at(c, 3000, b3, 1);
  expect_tombs(c, 0, 1, 1000);
  /* keep_rev bounds it: only revision 1. */
  kv_ckpt_set_prune(c, 1, 5000, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 1, 2, 1000);
  /* before_ms bounds it, strictly: 2 (at 1000) goes, 3 (at 2000) stays. */
  kv_ckpt_set_prune(c, 10, 2000, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 2, 3, 2000);
  kv_ckpt_set_prune(c, 4, 2001, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 4, 5, 3000);
  CHECK_STR(changes(c, "", 0, 10), "5 del k5");
  /* Nothing that qualifies: nothing changes. */
  kv_ckpt_set_prune(c, 10, 3000, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 4, 5, 3000);
  kv_ckpt_set_prune(c, 4, 100000, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 4, 5, 3000);
  /* keep_rev 0 forgets nothing, however old. */
  kv_ckpt_set_prune(c, 0, 100000, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 4, 5, 3000);
  kv_ckpt_set_prune(c, 5, 3001, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 5, 0, 0);
  CHECK_STR(changes(c, "", 0, 10), "");
  CHECK_INT(ckpt_rev(c), 5);
  /* In revision order: 6 (at 9000) is too new, so 7 stays too, although
   * the clock had gone back when it was checkpointed. */
  {
    kv_op_t b4[] = {DEL("k6", 6)};
    kv_op_t b5[] = {DEL("k7", 7)};
    commit_at(c, 9000, b4, 1);
    commit_at(c, 100, b5, 1);
  }
  expect_tombs(c, 5, 6, 9000);
  kv_ckpt_set_prune(c, 7, 5000, 9999);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 5, 6, 9000);
  /* A commit with ops forgets in the same transaction, and dates its own
   * tombstones with now_ms.  A tombstone a PUT removed is not forgotten. */
  {
    kv_op_t b6[] = {DEL("k8", 8), PUT("k8", "v", 9), DEL("k9", 10)};
    kv_ckpt_set_prune(c, 9, 20000, 30000);
    CHECK_INT(kv_ckpt_commit(c, b6, 3), 0);
  }
  expect_tombs(c, 7, 10, 30000);
  CHECK_INT(ckpt_rev(c), 10);
  CHECK_STR(changes(c, "", 0, 10), "9 put k8=v|10 del k9");
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb k9=10,30000,2; tombrev 10=k9; forgot 7");
  rmtree(d);
  free(d);
}

KV_TEST(prune_only_commit, "a commit of no op with prune set only forgets: the data and the checkpoint's revision stay as they were") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t b1[] = {PUT("keep", "me", 1), PUT("gone", "x", 2), DEL("gone", 3),
                  PUT("also", "y", 4)};
  static const rec_t want[] = {R("also", "y"), R("keep", "me")};
  uint64_t keys = 0, rev = 0;
  commit_at(c, 50, b1, 4);
  expect_tombs(c, 0, 3, 50);
  kv_ckpt_set_prune(c, 100, 100, 200);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 3, 0, 0);
  CHECK_INT(kv_ckpt_stat(c, &keys, &rev), 0);
  CHECK_INT(keys, 2);
  CHECK_INT(rev, 4);
  expect(c, "", want, 2);
  CHECK_STR(changes(c, "", 0, 4), "1 put keep=me|4 put also=y");
  /* Again, with nothing left to forget. */
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 3, 0, 0);
  CHECK_INT(ckpt_rev(c), 4);
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb; tombrev; forgot 3");
  c = open_ok(d, 0);
  CHECK_INT(ckpt_rev(c), 4);
  expect(c, "", want, 2);
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(prune_at_most_10000, "one commit forgets at most 10000 tombstones, oldest first, and the next commit the rest") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  enum { N = 10005 };
  kv_op_t *ops = calloc(N, sizeof *ops);
  char(*keys)[8] = calloc(N, sizeof *keys);
  CHECK(ops != NULL && keys != NULL);
  for (size_t i = 0; i < N; i++) {
    int kl = snprintf(keys[i], sizeof keys[i], "t%05zu", i);
    ops[i] = (kv_op_t){KV_OP_DEL, {keys[i], (size_t)kl}, {NULL, 0}, i + 1, 1, 0};
  }
  commit_at(c, 10, ops, N);
  expect_tombs(c, 0, 1, 10);
  kv_ckpt_set_prune(c, N, 11, 20);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 10000, 10001, 10);
  CHECK_STR(changes(c, "t1000", 0, N),
            "10001 del t10000|10002 del t10001|10003 del t10002|10004 del t10003|"
            "10005 del t10004");
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, N, 0, 0);
  CHECK_INT(ckpt_rev(c), N);
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb; tombrev; forgot 10005");
  free(ops);
  free(keys);
  rmtree(d);
  free(d);
}

KV_TEST(failed_batch_keeps_tombstones, "a failed batch changes no tombstone and forgets none, and kv_ckpt_tombs stays as it was") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  static char big[600];
  kv_op_t b1[] = {DEL("a", 1)};
  kv_op_t bad[] = {DEL("b", 2), PUT("a", "back", 3),
                   {KV_OP_PUT, {big, sizeof big}, {"v", 1}, 4, 4, 0}};
  memset(big, 'k', sizeof big);
  commit_at(c, 100, b1, 1);
  expect_tombs(c, 0, 1, 100);
  kv_ckpt_set_prune(c, 1, 1000, 2000);
  CHECK_INT(kv_ckpt_commit(c, bad, 3), KV_ESTORE);
  expect_tombs(c, 0, 1, 100);
  CHECK_INT(ckpt_rev(c), 1);
  CHECK_STR(changes(c, "", 0, 10), "1 del a");
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb a=1,100,2; tombrev 1=a; forgot -");
  rmtree(d);
  free(d);
}

KV_TEST(tombstones_survive_reopen, "tombstones, the forgotten revision and kv_ckpt_tombs survive a close and a reopen, writable or read-only") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t b1[] = {PUT("p/a", "1", 1), DEL("p/old", 2)};
  kv_op_t b2[] = {EXP("p/b", 3), DEL("q", 4)};
  const char *all = "1 put p/a=1|3 expire p/b|4 del q";
  commit_at(c, 1000, b1, 2);
  commit_at(c, 2000, b2, 2);
  kv_ckpt_set_prune(c, 2, 1500, 3000);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 2, 3, 2000);
  CHECK_STR(changes(c, "", 0, 4), all);
  kv_ckpt_close(c);
  for (int ro = 0; ro <= 1; ro++) {
    c = open_ok(d, ro ? KV_CKPT_READONLY : 0);
    expect_tombs(c, 2, 3, 2000);
    CHECK_STR(changes(c, "", 0, 4), all);
    CHECK_STR(changes(c, "p/", 1, 4), "3 expire p/b");
    CHECK_INT(ckpt_rev(c), 4);
    kv_ckpt_close(c);
  }
  /* Forgetting goes on from there after a reopen. */
  c = open_ok(d, 0);
  kv_ckpt_set_prune(c, 4, 2001, 5000);
  CHECK_INT(kv_ckpt_commit(c, NULL, 0), 0);
  expect_tombs(c, 4, 0, 0);
  kv_ckpt_close(c);
  c = open_ok(d, KV_CKPT_READONLY);
  expect_tombs(c, 4, 0, 0);
  CHECK_STR(changes(c, "", 0, 4), "1 put p/a=1");
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

/* ---- copies (backups) ------------------------------------------------- */

/* Copies c into the new file path with kv_ckpt_copy.  Returns its
 * result. */
static int copy_to(kv_ckpt_t *c, const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600), rc;
  CHECK(fd >= 0);
  rc = kv_ckpt_copy(c, fd);
  CHECK_INT(close(fd), 0);
  return rc;
}

static off_t file_size(const char *p) {
  struct stat st;
  CHECK_INT(stat(p, &st), 0);
  return st.st_size;
}

/* Checks that two environments hold the same records, headers included,
 * and the same revision. */
static void expect_same(kv_ckpt_t *a, kv_ckpt_t *b) {
  kv_ckpt_snap_t *sa, *sb;
  kv_item_t x, y;
  uint64_t ka, kb, ra, rb;
  int r;
  CHECK_INT(kv_ckpt_stat(a, &ka, &ra), 0);
  CHECK_INT(kv_ckpt_stat(b, &kb, &rb), 0);
  CHECK_INT(ka, kb);
  CHECK_INT(ra, rb);
  CHECK_INT(kv_ckpt_snap_open(a, NULL, 0, &sa), 0);
  CHECK_INT(kv_ckpt_snap_open(b, NULL, 0, &sb), 0);
  while ((r = kv_ckpt_snap_next(sa, &x)) == 1) {
    CHECK_INT(kv_ckpt_snap_next(sb, &y), 1);
    CHECK_MEM(x.key.ptr, x.key.len, y.key.ptr, y.key.len);
    CHECK_MEM(x.val.ptr, x.val.len, y.val.ptr, y.val.len);
    CHECK_INT(x.rev, y.rev);
    CHECK_INT(x.expires, y.expires);
  }
  CHECK_INT(r, 0);
  CHECK_INT(kv_ckpt_snap_next(sb, &y), 0);
  kv_ckpt_snap_close(sa);
  kv_ckpt_snap_close(sb);
}

/* n keys k00000.. of 100 bytes each, at revisions from..from+n-1, every
 * third with an expiry time. */
static void fill(kv_ckpt_t *c, int n, uint64_t from) {
  static char val[100];
  kv_op_t *ops = calloc((size_t)n, sizeof *ops);
  char *keys = malloc((size_t)n * 16);
  CHECK(ops != NULL && keys != NULL && n <= 100000);
  memset(val, 'v', sizeof val);
  for (int i = 0; i < n; i++) {
    snprintf(keys + 16 * i, 16, "k%05d", i);
    ops[i] = (kv_op_t){KV_OP_PUT, {keys + 16 * i, 6}, {val, sizeof val},
                       from + (uint64_t)i, from,
                       i % 3 ? 0 : UINT64_C(1893456000000) + (uint64_t)i};
  }
  CHECK_INT(kv_ckpt_commit(c, ops, (size_t)n), 0);
  free(keys);
  free(ops);
}

KV_TEST(copy_opens_as_file, "a copy holds the same keys, values, revisions, expiry times and revision, and opens as a file of its own") {
  char *d = tmpdir(), *file = strdup(path_in(d, "copy.mdb")), ls[256];
  kv_ckpt_t *c = open_ok(d, 0), *b;
  kv_op_t more = {KV_OP_PUT, {"new", 3}, {"later", 5}, 501, 501, 0};
  uint64_t n, rev;
  fill(c, 500, 1);
  CHECK_INT(copy_to(c, file), 0);
  b = open_ok(file, KV_CKPT_FILE | KV_CKPT_READONLY);
  expect_same(c, b);
  kv_ckpt_close(b);
  /* Writable, as kvdump --backup applies the log to it: no lock file. */
  b = open_ok(file, KV_CKPT_FILE);
  CHECK_INT(kv_ckpt_commit(b, &more, 1), 0);
  CHECK_INT(kv_ckpt_stat(b, &n, &rev), 0);
  CHECK_INT(n, 501);
  CHECK_INT(rev, 501);
  kv_ckpt_close(b);
  CHECK_STR(listdir(d, ls, sizeof ls), "copy.mdb,data.mdb,lock.mdb");
  kv_ckpt_close(c);
  rmtree(d);
  free(file);
  free(d);
}

KV_TEST(copy_is_compact, "a copy leaves out free pages: after most keys are deleted it is a fraction of data.mdb") {
  char *d = tmpdir(), *file = strdup(path_in(d, "copy.mdb"));
  kv_ckpt_t *c = open_ok(d, 0), *b;
  kv_op_t *dels = calloc(1900, sizeof *dels);
  char keys[1900][16];
  CHECK(dels != NULL);
  fill(c, 2000, 1);
  for (int i = 0; i < 1900; i++) {
    snprintf(keys[i], sizeof keys[i], "k%05d", i);
    dels[i] = (kv_op_t){KV_OP_DEL, {keys[i], 6}, {NULL, 0},
                        2001 + (uint64_t)i, 2001, 0};
  }
  CHECK_INT(kv_ckpt_commit(c, dels, 1900), 0);
  CHECK_INT(copy_to(c, file), 0);
  CHECK(file_size(file) * 4 < file_size(path_in(d, "data.mdb")));
  b = open_ok(file, KV_CKPT_FILE | KV_CKPT_READONLY);
  expect_same(c, b);
  kv_ckpt_close(b);
  kv_ckpt_close(c);
  free(dels);
  rmtree(d);
  free(file);
  free(d);
}

KV_TEST(copy_restores_as_dir, "a copy moved as data.mdb into an empty directory opens at its revision, makes lock.mdb and takes commits") {
  char *base = tmpdir(), *d = strdup(path_in(base, "data"));
  char *r = strdup(path_in(base, "restored")), ls[256];
  kv_ckpt_t *c, *b;
  kv_op_t more = {KV_OP_PUT, {"new", 3}, {"later", 5}, 301, 301, 0};
  uint64_t n, rev;
  c = open_ok(d, 0);
  fill(c, 300, 1);
  CHECK_INT(mkdir(r, 0700), 0);
  CHECK_INT(copy_to(c, path_in(r, "data.mdb")), 0);
  b = open_ok(r, 0);
  expect_same(c, b);
  CHECK_STR(listdir(r, ls, sizeof ls), "data.mdb,lock.mdb");
  CHECK_INT(kv_ckpt_commit(b, &more, 1), 0);
  kv_ckpt_close(b);
  b = open_ok(r, KV_CKPT_READONLY);
  CHECK_INT(kv_ckpt_stat(b, &n, &rev), 0);
  CHECK_INT(n, 301);
  CHECK_INT(rev, 301);
  kv_ckpt_close(b);
  kv_ckpt_close(c);
  rmtree(base);
  free(r);
  free(d);
  free(base);
}

KV_TEST(copy_file_must_exist, "opening a missing data file fails and creates nothing") {
  char *d = tmpdir(), ls[256], err[256];
  kv_ckpt_t *c = (kv_ckpt_t *)1;
  CHECK_INT(kv_ckpt_open(path_in(d, "nope.mdb"), KV_CKPT_FILE, 0, &c, err,
                         sizeof err),
            KV_ESTORE);
  CHECK(c == NULL);
  CHECK_STR(err, "cannot open: No such file or directory");
  CHECK_STR(listdir(d, ls, sizeof ls), "");
  rmtree(d);
  free(d);
}

KV_TEST(readonly_fresh_dir_no_tombstones, "a read-only open of a fresh directory reports no tombstones and no changes") {
  char *d = tmpdir();
  kv_ckpt_t *c = open_ok(d, 0);
  kv_op_t del = DEL("k", 1);
  kv_ckpt_close(c);
  c = open_ok(d, KV_CKPT_READONLY);
  expect_tombs(c, 0, 0, 0);
  CHECK_STR(changes(c, "", 0, UINT64_MAX), "");
  CHECK(kv_ckpt_commit(c, &del, 1) < 0);
  expect_tombs(c, 0, 0, 0);
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb; tombrev; forgot -");
  rmtree(d);
  free(d);
}

/* A kvd-2 directory from before tombstones: "meta" and "data" only,
 * written with raw LMDB; a at revision 1 and b at 3. */
static void raw_pre_tomb_env(const char *d) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi meta, data;
  unsigned char rev[8] = {3}, va[17] = {1}, vb[17] = {3};
  MDB_val fk = {6, "format"}, fv = {5, "kvd-2"}, rk = {3, "rev"}, rv = {8, rev};
  MDB_val ka = {1, "a"}, kb = {1, "b"}, a = {17, va}, b = {17, vb};
  va[16] = '1';
  vb[16] = '2';
  CHECK_INT(mdb_env_create(&env), 0);
  CHECK_INT(mdb_env_set_maxdbs(env, 4), 0);
  CHECK_INT(mdb_env_open(env, d, 0, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CHECK_INT(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
  CHECK_INT(mdb_dbi_open(txn, "data", MDB_CREATE, &data), 0);
  CHECK_INT(mdb_put(txn, meta, &fk, &fv, 0), 0);
  CHECK_INT(mdb_put(txn, meta, &rk, &rv, 0), 0);
  CHECK_INT(mdb_put(txn, data, &ka, &a, 0), 0);
  CHECK_INT(mdb_put(txn, data, &kb, &b, 0), 0);
  CHECK_INT(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

KV_TEST(pre_tombstone_dir, "a directory written before tombstones existed opens read-only with no tombstones and its PUTs as changes, and a writable open adds them") {
  char *d = tmpdir();
  kv_ckpt_t *c;
  kv_op_t del = DEL("a", 4);
  raw_pre_tomb_env(d);
  c = open_ok(d, KV_CKPT_READONLY);
  expect_tombs(c, 0, 0, 0);
  CHECK_INT(ckpt_rev(c), 3);
  CHECK_STR(changes(c, "", 0, 3), "1 put a=1|3 put b=2");
  CHECK_STR(changes(c, "", 1, 3), "3 put b=2");
  CHECK_STR(changes(c, "b", 0, 3), "3 put b=2");
  kv_ckpt_close(c);
  c = open_ok(d, 0);
  expect_tombs(c, 0, 0, 0);
  commit_at(c, 700, &del, 1);
  expect_tombs(c, 0, 4, 700);
  CHECK_STR(changes(c, "", 0, 4), "3 put b=2|4 del a");
  kv_ckpt_close(c);
  CHECK_STR(raw_tombs(d), "tomb a=4,700,2; tombrev 4=a; forgot -");
  c = open_ok(d, KV_CKPT_READONLY);
  expect_tombs(c, 0, 4, 700);
  CHECK_STR(changes(c, "", 0, 4), "3 put b=2|4 del a");
  kv_ckpt_close(c);
  rmtree(d);
  free(d);
}

KV_TEST(copy_full_disk_is_enospace, "a copy onto a full disk fails with KV_ENOSPACE and leaves the source intact") {
  char *d = tmpdir(), *base = tmpdir(), *file = strdup(path_in(base, "c"));
  kv_ckpt_t *c = open_ok(d, 0), *b;
  int err = 0;
  fill(c, 20000, 1); /* about 3 MB: more than the 1 MiB disk */
  if (!mount_small_tmpfs(base, &err)) {
    kv_ckpt_close(c);
    rmtree(d);
    rmtree(base);
    free(file);
    free(d);
    free(base);
    KV_SKIP("cannot mount a tmpfs: %s", strerror(err));
  }
  CHECK_INT(copy_to(c, file), KV_ENOSPACE);
  unmount_small_tmpfs();
  b = open_ok(d, KV_CKPT_READONLY);
  expect_same(c, b);
  kv_ckpt_close(b);
  kv_ckpt_close(c);
  rmtree(d);
  rmtree(base);
  free(file);
  free(d);
  free(base);
}
