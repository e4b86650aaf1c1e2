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
