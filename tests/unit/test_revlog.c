/* test_revlog.c - the revision log: records, segments, trimming, spares,
 * and replay with torn-tail repair, damage refusal and gap detection.
 *
 * The log is driven directly, with 64 KiB segments and KV_SYNC_NONE where
 * flushing does not matter.  Every write a test makes is also kept in a
 * model (revision -> op, batch, expiry, key and value), so a replay is
 * checked byte for byte, and the model gives each record's exact offset
 * in its segment.  Damage and torn tails are made by editing the segment
 * files the way a crash or a bad disk would.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "kv/error.h"
#include "kv/map.h"
#include "kv/revlog.h"
#include "test.h"

#define K64 ((uint64_t)64 << 10)
#define MIB ((uint64_t)1 << 20)
#define SEG_HDR 32
#define MAXREV 4096

/* ---- files ---------------------------------------------------------------- */

static char *tmpdir(void) {
  char *d = strdup("/tmp/kvrevlog.XXXXXX");
  CHECK(d != NULL && mkdtemp(d) != NULL);
  return d;
}

static void rmtree(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  CHECK_INT(system(cmd), 0);
}

/* DIR/log/<first as 16 hex digits>.seg (a few rotating buffers). */
static char *seg_path(const char *d, uint64_t first) {
  static char buf[4][512];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/log/%016" PRIx64 ".seg", d, first);
  return buf[i];
}

static char *log_path(const char *d, const char *name) {
  static char buf[4][512];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/log/%s", d, name);
  return buf[i];
}

static int exists(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0;
}

static uint64_t fsize(const char *p) {
  struct stat st;
  CHECK_INT(stat(p, &st), 0);
  return (uint64_t)st.st_size;
}

static uint64_t inode(const char *p) {
  struct stat st;
  CHECK_INT(stat(p, &st), 0);
  return (uint64_t)st.st_ino;
}

static int cmpstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* DIR/log's entries, sorted, as "a,b,c". */
static const char *ls_log(const char *d) {
  static char buf[4096];
  char path[512], *names[128];
  int n = 0;
  DIR *dir;
  struct dirent *e;
  snprintf(path, sizeof path, "%s/log", d);
  CHECK((dir = opendir(path)) != NULL);
  while ((e = readdir(dir)) != NULL && n < 128) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    names[n++] = strdup(e->d_name);
  }
  closedir(dir);
  qsort(names, (size_t)n, sizeof names[0], cmpstr);
  buf[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (i) strncat(buf, ",", sizeof buf - strlen(buf) - 1);
    strncat(buf, names[i], sizeof buf - strlen(buf) - 1);
    free(names[i]);
  }
  return buf;
}

/* The names of the segments starting at the given revisions, as ls_log
 * shows them: segs_named(3, 1, 20, 37). */
static const char *segs_named(int n, ...) {
  static char buf[4096];
  va_list ap;
  buf[0] = '\0';
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    char one[32];
    snprintf(one, sizeof one, "%s%016" PRIx64 ".seg", i ? "," : "",
             va_arg(ap, uint64_t));
    strncat(buf, one, sizeof buf - strlen(buf) - 1);
  }
  va_end(ap);
  return buf;
}

static unsigned char *slurp(const char *p, uint64_t *len) {
  int fd = open(p, O_RDONLY);
  uint64_t n = fsize(p);
  unsigned char *b = malloc(n ? n : 1);
  CHECK(fd >= 0 && b != NULL);
  CHECK_INT(pread(fd, b, n, 0), n);
  close(fd);
  *len = n;
  return b;
}

static void poke(const char *p, uint64_t off, const void *buf, size_t n) {
  int fd = open(p, O_WRONLY);
  CHECK(fd >= 0);
  CHECK_INT(pwrite(fd, buf, n, (off_t)off), n);
  close(fd);
}

/* Flips every bit of one byte. */
static void flip(const char *p, uint64_t off) {
  unsigned char c;
  int fd = open(p, O_RDWR);
  CHECK(fd >= 0);
  CHECK_INT(pread(fd, &c, 1, (off_t)off), 1);
  c ^= 0xff;
  CHECK_INT(pwrite(fd, &c, 1, (off_t)off), 1);
  close(fd);
}

/* True when the file's bytes from..to are all zero. */
static int zero_between(const char *p, uint64_t from, uint64_t to) {
  uint64_t n;
  unsigned char *b = slurp(p, &n);
  int ok = 1;
  CHECK(to <= n);
  for (uint64_t i = from; i < to && ok; i++) ok = b[i] == 0;
  free(b);
  return ok;
}

static void make_file(const char *p, uint64_t size) {
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  CHECK_INT(ftruncate(fd, (off_t)size), 0);
  close(fd);
}

/* ---- stderr ---------------------------------------------------------------- */

static int saved_stderr = -1;
static char cap_path[64];

/* A test that fails while capturing shows what was captured. */
static void capture_restore(void) {
  uint64_t n;
  unsigned char *b;
  if (saved_stderr < 0) return;
  dup2(saved_stderr, 2);
  close(saved_stderr);
  saved_stderr = -1;
  b = slurp(cap_path, &n);
  fprintf(stderr, "(captured: %.*s)\n", (int)n, (const char *)b);
  free(b);
  unlink(cap_path);
}

/* Sends fd 2 (kvd's log) to a file until captured() returns its text. */
static void capture(void) {
  static int registered;
  int fd;
  if (!registered++) atexit(capture_restore);
  snprintf(cap_path, sizeof cap_path, "/tmp/kvrevlog-err.XXXXXX");
  CHECK((fd = mkstemp(cap_path)) >= 0);
  fflush(stderr);
  saved_stderr = dup(2);
  CHECK(saved_stderr >= 0 && dup2(fd, 2) == 2);
  close(fd);
}

static const char *captured(void) {
  static char text[4096];
  uint64_t n;
  unsigned char *b;
  if (saved_stderr < 0) return text; /* a macro may evaluate it twice */
  fflush(stderr);
  CHECK(dup2(saved_stderr, 2) == 2);
  close(saved_stderr);
  saved_stderr = -1;
  b = slurp(cap_path, &n);
  CHECK(n < sizeof text);
  memcpy(text, b, n);
  text[n] = '\0';
  free(b);
  unlink(cap_path);
  return text;
}

/* ---- the model -------------------------------------------------------------- */

/* What the log must hold at each revision. */
static struct {
  int op;
  uint64_t batch, expires;
  char key[KV_KEY_MAX + 1];
  size_t klen;
  unsigned char *val;
  size_t vlen;
} M[MAXREV];

static void model_reset(void) {
  for (size_t i = 0; i < MAXREV; i++) {
    free(M[i].val);
    memset(&M[i], 0, sizeof M[i]);
  }
}

/* Bytes the record of revision rev takes in a segment. */
static uint64_t rec_size(uint64_t rev) {
  return 16 + ((32 + M[rev].klen + M[rev].vlen + 7) & ~(uint64_t)7);
}

/* Where revision rev's record starts in the segment that starts at first. */
static uint64_t rec_off(uint64_t first, uint64_t rev) {
  uint64_t off = SEG_HDR;
  for (uint64_t r = first; r < rev; r++) off += rec_size(r);
  return off;
}

/* Where the data of a segment holding first..last ends. */
static uint64_t data_end(uint64_t first, uint64_t last) {
  return rec_off(first, last + 1);
}

static kv_op_t model_op(uint64_t rev) {
  kv_op_t op = {M[rev].op, {M[rev].key, M[rev].klen},
                {(const char *)M[rev].val, M[rev].vlen}, rev, M[rev].batch,
                M[rev].expires};
  return op;
}

/* Appends n PUTs of vlen-byte values as one batch starting at first. */
static int append_puts(kv_revlog_t *l, uint64_t first, size_t n, size_t vlen) {
  kv_op_t ops[64];
  CHECK(n <= 64 && first + n < MAXREV);
  for (size_t i = 0; i < n; i++) {
    uint64_t rev = first + i;
    free(M[rev].val);
    M[rev].op = KV_OP_PUT;
    M[rev].batch = first;
    M[rev].expires = rev % 3 ? 0 : 1700000000000 + rev;
    M[rev].klen = (size_t)snprintf(M[rev].key, sizeof M[rev].key, "key-%" PRIu64, rev);
    M[rev].val = malloc(vlen ? vlen : 1);
    CHECK(M[rev].val != NULL);
    for (size_t j = 0; j < vlen; j++)
      M[rev].val[j] = (unsigned char)('a' + (rev * 7 + j) % 26);
    M[rev].vlen = vlen;
    ops[i] = model_op(rev);
  }
  return kv_revlog_append(l, ops, n);
}

/* ---- replay ------------------------------------------------------------------ */

typedef struct {
  int op;
  uint64_t rev, batch, expires;
  char *key, *val;
  size_t klen, vlen;
} got_t;

typedef struct {
  got_t v[MAXREV];
  size_t n;
} seen_t;

static seen_t seen;

static void seen_reset(void) {
  for (size_t i = 0; i < seen.n; i++) {
    free(seen.v[i].key);
    free(seen.v[i].val);
  }
  seen.n = 0;
}

static int collect(void *ctx, const kv_op_t *op) {
  seen_t *s = ctx;
  got_t *g;
  CHECK(s->n < MAXREV);
  g = &s->v[s->n++];
  g->op = op->op;
  g->rev = op->rev;
  g->batch = op->batch;
  g->expires = op->expires;
  g->klen = op->key.len;
  g->vlen = op->val.len;
  CHECK((g->key = malloc(g->klen + 1)) != NULL);
  CHECK((g->val = malloc(g->vlen + 1)) != NULL);
  memcpy(g->key, op->key.ptr, g->klen);
  if (g->vlen) memcpy(g->val, op->val.ptr, g->vlen);
  return 0;
}

static kv_revlog_t *open_log(const char *d, uint64_t seg, int readonly) {
  kv_revlog_t *l = NULL;
  char err[512] = "";
  int rc = kv_revlog_open(d, KV_SYNC_NONE, seg, readonly, &l, err, sizeof err);
  if (rc != 0) KV__FAIL("kv_revlog_open %s: %d %s", d, rc, err);
  CHECK(l != NULL);
  return l;
}

/* Replays after a revision into seen; returns the result, err filled. */
static int replay(kv_revlog_t *l, uint64_t after, uint64_t *last, char *err,
                  size_t errlen) {
  seen_reset();
  err[0] = '\0';
  *last = 12345678;
  return kv_revlog_replay(l, after, collect, &seen, last, err, errlen);
}

static void replay_ok(kv_revlog_t *l, uint64_t after, uint64_t want_last) {
  char err[512];
  uint64_t last;
  int rc = replay(l, after, &last, err, sizeof err);
  if (rc != 0) KV__FAIL("replay after %" PRIu64 ": %d %s", after, rc, err);
  CHECK_INT(last, want_last);
}

/* seen holds exactly the model's revisions from..to, in order. */
static void expect_seen(uint64_t from, uint64_t to) {
  CHECK_INT(seen.n, to >= from ? to - from + 1 : 0);
  for (size_t i = 0; i < seen.n; i++) {
    got_t *g = &seen.v[i];
    uint64_t rev = from + i;
    CHECK_INT(g->rev, rev);
    CHECK_INT(g->op, M[rev].op);
    CHECK_INT(g->batch, M[rev].batch);
    CHECK_INT(g->expires, M[rev].expires);
    CHECK_MEM(g->key, g->klen, M[rev].key, M[rev].klen);
    CHECK_MEM(g->val, g->vlen, M[rev].val, M[rev].vlen);
  }
}

/* Opens d writable and checks that a replay from 0 yields 1..last. */
static void reopen_expect(const char *d, uint64_t seg, uint64_t last) {
  kv_revlog_t *l = open_log(d, seg, 0);
  replay_ok(l, 0, last);
  expect_seen(1, last);
  kv_revlog_close(l);
}

static void start(char **d) {
  model_reset();
  seen_reset();
  *d = tmpdir();
}

static void finish(char *d) {
  rmtree(d);
  free(d);
  model_reset();
  seen_reset();
}

/* The standard log for damage tests: segment 1 holds batches 1-3, 4-6 and
 * 7-9 (values of 40 bytes), all in one 64 KiB segment. */
static void three_batches(const char *d) {
  kv_revlog_t *l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  CHECK_INT(append_puts(l, 1, 3, 40), 0);
  CHECK_INT(append_puts(l, 4, 3, 40), 0);
  CHECK_INT(append_puts(l, 7, 3, 40), 0);
  kv_revlog_close(l);
}

/* Fills 64 KiB segments with batches of 4 records of 1000-byte values
 * until there are nseg segments and the last holds one batch; returns the
 * last revision and stores each segment's first revision in firsts. */
static uint64_t fill_segments(const char *d, size_t nseg, uint64_t *firsts) {
  kv_revlog_t *l = open_log(d, K64, 0);
  uint64_t rev = 1, off = 0, room = K64;
  size_t segs = 0;
  replay_ok(l, 0, 0);
  for (int i = 0; i < 1000; i++) {
    uint64_t need;
    CHECK_INT(append_puts(l, rev, 4, 1000), 0);
    need = rec_off(rev, rev + 4) - SEG_HDR;
    if (segs == 0 || off + need > room) {
      firsts[segs++] = rev;
      off = SEG_HDR;
    }
    off += need;
    rev += 4;
    /* Stop once the last segment holds exactly one batch. */
    if (segs == nseg && off == SEG_HDR + need) break;
  }
  CHECK_INT(kv_revlog_segments(l), nseg);
  kv_revlog_close(l);
  return rev - 1;
}

/* ---- the tests --------------------------------------------------------------- */

KV_TEST(batch_replays_exactly, "an appended batch replays exactly: ops (an expiry too), revisions, batch, expiry, keys and values byte for byte") {
  char *d, err[512], bigkey[KV_KEY_MAX];
  static const char nul[] = "a\0b\0\xc3\xa9";
  kv_revlog_t *l;
  uint64_t last;
  memset(bigkey, 'K', sizeof bigkey);
  start(&d);
  {
    kv_op_t ops[] = {
        {KV_OP_PUT, {"a", 1}, {"one", 3}, 1, 1, 0},
        {KV_OP_PUT, {"empty", 5}, {"", 0}, 2, 1, 0},
        {KV_OP_DEL, {"a", 1}, {NULL, 0}, 3, 1, 0},
        {KV_OP_PUT, {bigkey, sizeof bigkey}, {nul, sizeof nul - 1}, 4, 1,
         UINT64_C(1700000000123)},
        {KV_OP_PUT, {"k/\xe2\x82\xac", 5}, {"x", 1}, 5, 5, 9},
        {KV_OP_EXPIRE, {"k/\xe2\x82\xac", 5}, {NULL, 0}, 6, 5, 0}};
    for (size_t i = 0; i < 6; i++) {
      M[i + 1].op = ops[i].op;
      M[i + 1].batch = ops[i].batch;
      M[i + 1].expires = ops[i].expires;
      memcpy(M[i + 1].key, ops[i].key.ptr, ops[i].key.len);
      M[i + 1].klen = ops[i].key.len;
      M[i + 1].val = malloc(ops[i].val.len + 1);
      if (ops[i].val.len) memcpy(M[i + 1].val, ops[i].val.ptr, ops[i].val.len);
      M[i + 1].vlen = ops[i].val.len;
    }
    l = open_log(d, K64, 0);
    replay_ok(l, 0, 0);
    CHECK_INT(seen.n, 0);
    CHECK_INT(kv_revlog_append(l, ops, 4), 0);
    CHECK_INT(kv_revlog_append(l, ops + 4, 2), 0);
    CHECK_INT(kv_revlog_append(l, ops, 0), 0); /* nothing: no-op */
    kv_revlog_close(l);
  }
  CHECK_STR(ls_log(d), segs_named(1, (uint64_t)1));
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 6);
  expect_seen(1, 6);
  CHECK(seen.v[2].op == KV_OP_DEL && seen.v[2].vlen == 0);
  CHECK(seen.v[5].op == KV_OP_EXPIRE && seen.v[5].vlen == 0);
  CHECK(seen.v[1].op == KV_OP_PUT && seen.v[1].vlen == 0);
  kv_revlog_close(l);
  /* after skips revisions up to it; *last stays the log's last. */
  for (uint64_t after = 1; after <= 6; after++) {
    l = open_log(d, K64, 0);
    replay_ok(l, after, 6);
    expect_seen(after + 1, 6);
    kv_revlog_close(l);
  }
  /* A checkpoint beyond the log: nothing to replay, *last is after. */
  l = open_log(d, K64, 0);
  CHECK_INT(replay(l, 9, &last, err, sizeof err), 0);
  CHECK_INT(last, 9);
  CHECK_INT(seen.n, 0);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(on_disk_format, "records on disk follow the documented format byte for byte and kv_revlog_size counts them") {
  char *d;
  kv_revlog_t *l;
  unsigned char *b, want[SEG_HDR + 256] = {0};
  uint64_t n, off = SEG_HDR;
  kv_op_t ops[] = {{KV_OP_PUT, {"key", 3}, {"value!", 6}, 7, 7, 0x0102030405060708},
                   {KV_OP_DEL, {"gone", 4}, {NULL, 0}, 8, 7, 0}};
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 6, 6); /* a log that starts at checkpoint + 1 */
  CHECK_INT(kv_revlog_size(ops, 2), (16 + 48) + (16 + 40));
  CHECK_INT(kv_revlog_append(l, ops, 2), 0);
  kv_revlog_close(l);
  CHECK_INT(fsize(seg_path(d, 7)), K64);
  /* "KVDLOG01", first revision, xxh3 of those 16 bytes, 8 zero bytes. */
  memcpy(want, "KVDLOG01", 8);
  want[8] = 7;
  {
    uint64_t h = XXH3_64bits(want, 16);
    for (int i = 0; i < 8; i++) want[16 + i] = (unsigned char)(h >> (8 * i));
  }
  for (int r = 0; r < 2; r++) {
    unsigned char *p = want + off, *body = p + 16;
    uint32_t len = (uint32_t)(32 + ops[r].key.len + ops[r].val.len);
    uint64_t sum;
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(len >> (8 * i));
    for (int i = 0; i < 8; i++) {
      body[i] = (unsigned char)(ops[r].rev >> (8 * i));
      body[8 + i] = (unsigned char)(ops[r].batch >> (8 * i));
      body[16 + i] = (unsigned char)(ops[r].expires >> (8 * i));
    }
    body[24] = (unsigned char)ops[r].op;
    body[26] = (unsigned char)ops[r].key.len;
    body[28] = (unsigned char)ops[r].val.len;
    memcpy(body + 32, ops[r].key.ptr, ops[r].key.len);
    if (ops[r].val.len)
      memcpy(body + 32 + ops[r].key.len, ops[r].val.ptr, ops[r].val.len);
    sum = XXH3_64bits_withSeed(body, len, len);
    for (int i = 0; i < 8; i++) p[8 + i] = (unsigned char)(sum >> (8 * i));
    off += 16 + ((len + 7) & ~7u);
  }
  CHECK_INT(off, SEG_HDR + 64 + 56);
  b = slurp(seg_path(d, 7), &n);
  CHECK_MEM(b, off, want, off);
  for (uint64_t i = off; i < n; i++)
    if (b[i] != 0) KV__FAIL("byte %" PRIu64 " after the records is %d", i, b[i]);
  free(b);
  finish(d);
}

KV_TEST(segment_sizes, "the first segment is 1 MiB, or seg_size if smaller, and each next one doubles up to seg_size") {
  char *d;
  kv_revlog_t *l;
  start(&d);
  /* seg_size 0 is 64 MiB, but a small log starts with 1 MiB. */
  l = open_log(d, 0, 0);
  replay_ok(l, 0, 0);
  CHECK_INT(append_puts(l, 1, 1, 10), 0);
  CHECK_INT(fsize(seg_path(d, 1)), MIB);
  kv_revlog_close(l);
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  /* seg_size 2 MiB with 600 KiB records: 1 MiB holds one, 2 MiB three. */
  l = open_log(d, 2 * MIB, 0);
  replay_ok(l, 0, 0);
  for (uint64_t rev = 1; rev <= 7; rev++)
    CHECK_INT(append_puts(l, rev, 1, 600 << 10), 0);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(3, (uint64_t)1, (uint64_t)2, (uint64_t)5));
  CHECK_INT(fsize(seg_path(d, 1)), MIB);
  CHECK_INT(fsize(seg_path(d, 2)), 2 * MIB);
  CHECK_INT(fsize(seg_path(d, 5)), 2 * MIB);
  reopen_expect(d, 2 * MIB, 7);
  /* 64 KiB is below the first size: every segment is 64 KiB. */
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  for (uint64_t rev = 1; rev <= 3; rev++)
    CHECK_INT(append_puts(l, rev, 1, 40000), 0);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(3, (uint64_t)1, (uint64_t)2, (uint64_t)3));
  for (uint64_t rev = 1; rev <= 3; rev++) CHECK_INT(fsize(seg_path(d, rev)), K64);
  finish(d);
}

KV_TEST(batches_switch_segments, "a batch larger than the segment's room starts a segment named by its first revision, and replay crosses segments in order") {
  char *d;
  kv_revlog_t *l;
  uint64_t firsts[64], rev = 1, off = 0;
  size_t nseg = 0;
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  /* Batches of 1..7 records of 1500 bytes: never split, each goes where
   * it fits whole. */
  for (int b = 0; b < 60; b++) {
    size_t n = (size_t)(b % 7) + 1;
    uint64_t need;
    CHECK_INT(append_puts(l, rev, n, 1500), 0);
    need = rec_off(rev, rev + n) - SEG_HDR;
    if (nseg == 0 || off + need > K64) {
      firsts[nseg++] = rev;
      off = SEG_HDR;
    }
    off += need;
    rev += n;
    CHECK_INT(kv_revlog_segments(l), nseg);
  }
  kv_revlog_close(l);
  CHECK(nseg >= 4);
  {
    char want[4096] = "";
    for (size_t i = 0; i < nseg; i++) {
      char one[32];
      snprintf(one, sizeof one, "%s%016" PRIx64 ".seg", i ? "," : "", firsts[i]);
      strcat(want, one);
      CHECK_INT(fsize(seg_path(d, firsts[i])), K64);
      /* Each segment's data ends where the next one's first batch would
       * have overflowed it, followed only by zeros. */
      if (i + 1 < nseg)
        CHECK(zero_between(seg_path(d, firsts[i]), data_end(firsts[i], firsts[i + 1] - 1), K64));
    }
    CHECK_STR(ls_log(d), want);
  }
  reopen_expect(d, K64, rev - 1);
  finish(d);
}

KV_TEST(big_record_own_segment, "a record larger than a segment gets a segment of its own size, and the next segment is seg_size again") {
  char *d;
  kv_revlog_t *l;
  uint64_t need, big;
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  CHECK_INT(append_puts(l, 1, 2, 100), 0);
  CHECK_INT(append_puts(l, 3, 1, 100000), 0);
  need = rec_size(3);
  big = (need + SEG_HDR + 4095) & ~(uint64_t)4095;
  CHECK_INT(fsize(seg_path(d, 3)), big);
  /* A batch of two such records: one segment for both. */
  CHECK_INT(append_puts(l, 4, 2, 100000), 0);
  CHECK_INT(fsize(seg_path(d, 4)), (rec_size(4) + rec_size(5) + SEG_HDR + 4095) & ~(uint64_t)4095);
  /* The next small batch that does not fit the leftover room gets 64 KiB. */
  CHECK_INT(append_puts(l, 6, 1, 8000), 0);
  CHECK_INT(fsize(seg_path(d, 6)), K64);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(4, (uint64_t)1, (uint64_t)3, (uint64_t)4, (uint64_t)6));
  reopen_expect(d, K64, 6);
  finish(d);
}

KV_TEST(trim_removes_covered_segments, "trim removes exactly the segments whose revisions are all at or below rev and never the last one") {
  char *d;
  kv_revlog_t *l;
  uint64_t f[3], last;
  start(&d);
  last = fill_segments(d, 3, f);
  CHECK_INT(f[0], 1);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, last);
  CHECK_INT(kv_revlog_trim(l, 0), 0);
  CHECK_INT(kv_revlog_trim(l, f[1] - 2), 0); /* one short of segment 1's end */
  CHECK_STR(ls_log(d), segs_named(3, f[0], f[1], f[2]));
  CHECK_INT(kv_revlog_segments(l), 3);
  CHECK_INT(kv_revlog_trim(l, f[1] - 1), 0);
  CHECK_STR(ls_log(d), segs_named(2, f[1], f[2]));
  CHECK_INT(kv_revlog_segments(l), 2);
  CHECK_INT(kv_revlog_trim(l, f[2] - 2), 0);
  CHECK_STR(ls_log(d), segs_named(2, f[1], f[2]));
  /* Everything checkpointed: the last segment stays, it is appended to. */
  CHECK_INT(kv_revlog_trim(l, last), 0);
  CHECK_STR(ls_log(d), segs_named(1, f[2]));
  CHECK_INT(kv_revlog_trim(l, UINT64_MAX), 0);
  CHECK_STR(ls_log(d), segs_named(1, f[2]));
  CHECK_INT(kv_revlog_segments(l), 1);
  CHECK_INT(append_puts(l, last + 1, 1, 10), 0);
  kv_revlog_close(l);
  /* The rest replays on top of a checkpoint that holds what was trimmed. */
  l = open_log(d, K64, 0);
  replay_ok(l, f[2] - 1, last + 1);
  expect_seen(f[2], last + 1);
  kv_revlog_close(l);
  l = open_log(d, K64, 0);
  replay_ok(l, last, last + 1);
  expect_seen(last + 1, last + 1);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(spare_is_used, "a spare made by kv_revlog_prepare becomes the next segment and no second file is left behind") {
  char *d;
  kv_revlog_t *l;
  uint64_t rev = 1, off = SEG_HDR, spare_ino;
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  CHECK_INT(kv_revlog_wants_spare(l), 0); /* nothing appended yet */
  /* Wanted once the segment is past half full, not before. */
  for (; rev < 100; rev++) {
    CHECK_INT(append_puts(l, rev, 1, 1000), 0);
    off += rec_size(rev);
    if (off > K64 / 2) break;
    CHECK_INT(kv_revlog_wants_spare(l), 0);
  }
  CHECK_INT(rev, 32); /* 1056-byte records: 32 + 31 * 1056 is exactly half */
  CHECK_INT(kv_revlog_wants_spare(l), 1);
  CHECK_INT(kv_revlog_wants_spare(l), 0); /* being prepared */
  CHECK(!exists(log_path(d, "spare.tmp")));
  CHECK_INT(kv_revlog_prepare(l), 0);
  CHECK_INT(fsize(log_path(d, "spare.tmp")), K64);
  CHECK(zero_between(log_path(d, "spare.tmp"), 0, K64));
  spare_ino = inode(log_path(d, "spare.tmp"));
  CHECK_INT(kv_revlog_wants_spare(l), 0); /* one is ready */
  /* Fill the segment: the spare waits. */
  for (rev++; off + 1056 <= K64; rev++) {
    CHECK_INT(append_puts(l, rev, 1, 1000), 0);
    off += rec_size(rev);
    CHECK_STR(ls_log(d), "0000000000000001.seg,spare.tmp");
  }
  CHECK_INT(rev, 63);
  CHECK_INT(append_puts(l, rev, 1, 1000), 0);
  CHECK_STR(ls_log(d), segs_named(2, (uint64_t)1, rev));
  CHECK_INT(inode(seg_path(d, rev)), spare_ino);
  CHECK_INT(fsize(seg_path(d, rev)), K64);
  CHECK_INT(kv_revlog_segments(l), 2);
  CHECK_INT(kv_revlog_wants_spare(l), 0); /* the new one is nearly empty */
  kv_revlog_close(l);
  reopen_expect(d, K64, rev);
  finish(d);
}

KV_TEST(leftover_spare_removed, "a leftover spare.tmp is removed by a writable open and left alone by a read-only one") {
  char *d;
  kv_revlog_t *l;
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  CHECK_INT(append_puts(l, 1, 2, 10), 0);
  kv_revlog_close(l);
  make_file(log_path(d, "spare.tmp"), K64);
  l = open_log(d, K64, 1);
  replay_ok(l, 0, 2);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), "0000000000000001.seg,spare.tmp");
  l = open_log(d, K64, 0);
  CHECK_STR(ls_log(d), "0000000000000001.seg");
  CHECK_INT(kv_revlog_segments(l), 1);
  replay_ok(l, 0, 2);
  expect_seen(1, 2);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(cut_short_tail_zeroed, "a last record cut short is zeroed with one warning and the next append replays after the earlier records") {
  char *d, want[512];
  const char *err;
  kv_revlog_t *l;
  uint64_t off, size;
  start(&d);
  three_batches(d);
  /* Batch 7-9 was being written when kvd died: record 9 got its first
   * 60 bytes (up into its value), the rest stayed zero. */
  off = rec_off(1, 9);
  size = rec_size(9);
  CHECK_INT(size, 96);
  {
    unsigned char zeros[256] = {0};
    poke(seg_path(d, 1), off + 60, zeros, size - 60);
  }
  l = open_log(d, K64, 0);
  capture();
  replay_ok(l, 0, 8);
  err = captured();
  expect_seen(1, 8);
  snprintf(want, sizeof want,
           "kvd: warning: %s/log: zeroed a torn tail of 60 bytes at offset %" PRIu64
           ": a batch that was never acknowledged\n", d, off);
  CHECK_STR(err, want);
  CHECK(zero_between(seg_path(d, 1), off, K64));
  /* Revision 9 is handed out again, in place. */
  CHECK_INT(append_puts(l, 9, 2, 33), 0);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(1, (uint64_t)1));
  CHECK(zero_between(seg_path(d, 1), data_end(1, 10), K64));
  reopen_expect(d, K64, 10);
  finish(d);
}

KV_TEST(garbage_tail_zeroed, "garbage after the last record with nothing valid later is zeroed and appends go on after the last record") {
  char *d, want[512];
  const char *err;
  kv_revlog_t *l;
  unsigned char junk[3000];
  uint64_t end;
  start(&d);
  three_batches(d);
  end = data_end(1, 9);
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(0x80 | (i * 13));
  poke(seg_path(d, 1), end, junk, sizeof junk);
  l = open_log(d, K64, 0);
  capture();
  replay_ok(l, 0, 9);
  err = captured();
  expect_seen(1, 9);
  snprintf(want, sizeof want,
           "kvd: warning: %s/log: zeroed a torn tail of 3000 bytes at offset %" PRIu64
           ": a batch that was never acknowledged\n", d, end);
  CHECK_STR(err, want);
  CHECK(zero_between(seg_path(d, 1), end, K64));
  CHECK_INT(append_puts(l, 10, 1, 5), 0);
  kv_revlog_close(l);
  reopen_expect(d, K64, 10);
  /* A clean log is replayed without a word. */
  l = open_log(d, K64, 0);
  capture();
  replay_ok(l, 0, 10);
  CHECK_STR(captured(), "");
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(torn_batch_own_records, "a bad record followed only by records of its own batch is a torn tail, not damage") {
  char *d;
  kv_revlog_t *l;
  start(&d);
  three_batches(d);
  /* The write of batch 7-9 reached the disk out of order: record 7 is
   * bad, records 8 and 9 are whole. */
  flip(seg_path(d, 1), rec_off(1, 7) + 16 + 40);
  l = open_log(d, K64, 0);
  capture();
  replay_ok(l, 0, 6);
  CHECK(strstr(captured(), "zeroed a torn tail") != NULL);
  expect_seen(1, 6);
  CHECK(zero_between(seg_path(d, 1), data_end(1, 6), K64));
  kv_revlog_close(l);
  reopen_expect(d, K64, 6);
  finish(d);
}

KV_TEST(damaged_record_refused, "a damaged record followed by a later batch fails replay with KV_ECORRUPT naming the segment file and the offset") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  unsigned char *before, *after;
  uint64_t last, n1, n2, off;
  start(&d);
  three_batches(d);
  off = rec_off(1, 5);
  flip(seg_path(d, 1), off + 16 + 32 + 6); /* a byte of record 5's value */
  before = slurp(seg_path(d, 1), &n1);
  l = open_log(d, K64, 0);
  capture();
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  CHECK_STR(captured(), "");
  snprintf(want, sizeof want,
           "%s/log/0000000000000001.seg: damaged record at offset %" PRIu64
           " (revision 5 expected) with revision 7 written after it; restore "
           "the data directory from a backup", d, off);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  /* Nothing was repaired: the evidence stays for the operator. */
  after = slurp(seg_path(d, 1), &n2);
  CHECK_MEM(after, n2, before, n1);
  CHECK_STR(ls_log(d), segs_named(1, (uint64_t)1));
  /* Read-only (kvdump) refuses it the same way. */
  l = open_log(d, K64, 1);
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  free(before);
  free(after);
  finish(d);
}

KV_TEST(damaged_header_field_refused, "a record whose length or checksum field is damaged, with a later batch, fails with KV_ECORRUPT") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t last, off;
  for (int field = 0; field < 3; field++) {
    start(&d);
    three_batches(d);
    off = rec_off(1, 2);
    /* byte 0: the length; byte 4: the zero word; byte 9: the checksum */
    flip(seg_path(d, 1), off + (field == 0 ? 0 : field == 1 ? 4 : 9));
    l = open_log(d, K64, 0);
    CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
    expect_seen(1, 1);
    snprintf(want, sizeof want,
             "%s/log/0000000000000001.seg: damaged record at offset %" PRIu64
             " (revision 2 expected) with revision 4 written after it; restore "
             "the data directory from a backup", d, off);
    CHECK_STR(err, want);
    kv_revlog_close(l);
    finish(d);
  }
}

KV_TEST(damage_before_next_segment_refused, "a damaged last record of a segment followed by a later segment fails with KV_ECORRUPT") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t f[2], last, end, off;
  start(&d);
  end = fill_segments(d, 2, f);
  off = rec_off(1, f[1] - 1);
  flip(seg_path(d, 1), off + 16 + 40);
  l = open_log(d, K64, 0);
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  expect_seen(1, f[1] - 2);
  snprintf(want, sizeof want,
           "%s/log/0000000000000001.seg: damaged record at offset %" PRIu64
           " (revision %" PRIu64 " expected) with revision %" PRIu64
           " written after it; restore the data directory from a backup",
           d, off, f[1] - 1, f[1]);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(2, f[0], f[1]));
  (void)end;
  finish(d);
}

KV_TEST(damaged_middle_header_refused, "a damaged header of a segment followed by a later segment fails with KV_ECORRUPT") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t f[3], last;
  start(&d);
  (void)fill_segments(d, 3, f);
  flip(seg_path(d, f[1]), 3);
  l = open_log(d, K64, 0);
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  expect_seen(1, f[1] - 1);
  /* The nearest proof: the segment's own second batch. */
  snprintf(want, sizeof want,
           "%s/log/%016" PRIx64 ".seg: damaged segment header at offset 0"
           " (revision %" PRIu64 " expected) with revision %" PRIu64
           " written after it; restore the data directory from a backup",
           d, f[1], f[1], f[1] + 4);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(3, f[0], f[1], f[2]));
  finish(d);
  /* A segment holding one batch: the next segment is the proof. */
  start(&d);
  (void)fill_segments(d, 2, f);
  {
    kv_revlog_t *w = open_log(d, K64, 0);
    uint64_t rev = f[1] + 4;
    replay_ok(w, 0, rev - 1);
    /* 4 records of 16000 bytes do not fit in segment f[1]'s room. */
    CHECK_INT(append_puts(w, rev, 4, 16000), 0);
    CHECK_INT(kv_revlog_segments(w), 3);
    f[2] = rev;
    kv_revlog_close(w);
  }
  flip(seg_path(d, f[1]), 3);
  l = open_log(d, K64, 0);
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  snprintf(want, sizeof want,
           "%s/log/%016" PRIx64 ".seg: damaged segment header at offset 0"
           " (revision %" PRIu64 " expected) with revision %" PRIu64
           " written after it; restore the data directory from a backup",
           d, f[1], f[1], f[2]);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(3, f[0], f[1], f[2]));
  finish(d);
}

KV_TEST(gap_in_middle_refused, "a segment missing in the middle fails replay with KV_ECORRUPT") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t f[3], last;
  start(&d);
  (void)fill_segments(d, 3, f);
  CHECK_INT(unlink(seg_path(d, f[1])), 0);
  for (int ro = 0; ro <= 1; ro++) {
    l = open_log(d, K64, ro);
    CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
    expect_seen(1, f[1] - 1);
    snprintf(want, sizeof want,
             "%s/log/%016" PRIx64 ".seg: revision %" PRIu64 " at offset 32 follows %"
             PRIu64 " (the checkpoint holds 0): the log has a gap", d, f[2], f[2],
             f[1] - 1);
    CHECK_STR(err, want);
    kv_revlog_close(l);
  }
  /* With a checkpoint that holds only part of the missing revisions. */
  l = open_log(d, K64, 0);
  CHECK_INT(replay(l, f[2] - 2, &last, err, sizeof err), KV_ECORRUPT);
  CHECK_INT(seen.n, 0);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(2, f[0], f[2]));
  finish(d);
}

KV_TEST(log_after_checkpoint_refused, "a log that starts after the checkpoint revision plus one fails with KV_ECORRUPT") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t f[2], last, end;
  start(&d);
  end = fill_segments(d, 2, f);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  CHECK_INT(kv_revlog_trim(l, f[1] - 1), 0);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(1, f[1]));
  for (uint64_t after = 0; after + 1 < f[1]; after += f[1] / 3) {
    l = open_log(d, K64, 0);
    CHECK_INT(replay(l, after, &last, err, sizeof err), KV_ECORRUPT);
    CHECK_INT(seen.n, 0);
    snprintf(want, sizeof want,
             "%s/log/%016" PRIx64 ".seg: revision %" PRIu64 " at offset 32 follows 0"
             " (the checkpoint holds %" PRIu64 "): the log has a gap", d, f[1], f[1],
             after);
    CHECK_STR(err, want);
    kv_revlog_close(l);
  }
  /* From checkpoint + 1 it replays, and from any later checkpoint. */
  l = open_log(d, K64, 0);
  replay_ok(l, f[1] - 1, end);
  expect_seen(f[1], end);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(unfinished_segment_removed, "a last segment whose creation never finished (no valid header, nothing in it) is removed and appends go on") {
  char *d;
  kv_revlog_t *l;
  /* Three ways a switch can die: the file just created, zero-filled but
   * without its header, or with half a header. */
  for (int how = 0; how < 3; how++) {
    start(&d);
    three_batches(d);
    make_file(seg_path(d, 10), how == 0 ? 0 : K64);
    if (how == 2) poke(seg_path(d, 10), 0, "KVDLOG01\x0a", 9);
    l = open_log(d, K64, 0);
    CHECK_INT(kv_revlog_segments(l), 2);
    capture();
    replay_ok(l, 0, 9);
    CHECK_STR(captured(), "");
    expect_seen(1, 9);
    CHECK_INT(kv_revlog_segments(l), 1);
    CHECK_STR(ls_log(d), segs_named(1, (uint64_t)1));
    CHECK_INT(append_puts(l, 10, 1, 7), 0);
    CHECK_INT(append_puts(l, 11, 2, 7), 0);
    kv_revlog_close(l);
    CHECK_INT(fsize(seg_path(d, 10)), K64);
    reopen_expect(d, K64, 12);
    finish(d);
  }
}

KV_TEST(damaged_last_header_refused, "a last segment whose header is damaged but which holds a later batch fails with KV_ECORRUPT and is kept") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t f[2], last, end;
  start(&d);
  end = fill_segments(d, 2, f);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  CHECK_INT(append_puts(l, end + 1, 2, 50), 0); /* a second batch */
  kv_revlog_close(l);
  flip(seg_path(d, f[1]), 12); /* the header's first revision */
  for (int ro = 0; ro <= 1; ro++) {
    l = open_log(d, K64, ro);
    CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
    expect_seen(1, f[1] - 1);
    snprintf(want, sizeof want,
             "%s/log/%016" PRIx64 ".seg: damaged segment header at offset 0"
             " (revision %" PRIu64 " expected) with revision %" PRIu64
             " written after it; restore the data directory from a backup",
             d, f[1], f[1], end + 1);
    CHECK_STR(err, want);
    kv_revlog_close(l);
    CHECK_STR(ls_log(d), segs_named(2, f[0], f[1]));
  }
  finish(d);
}

KV_TEST(torn_first_batch_after_trim, "a torn first batch of the only segment left after a trim is zeroed, not taken for damage") {
  char *d;
  kv_revlog_t *l;
  uint64_t f[2], end;
  start(&d);
  end = fill_segments(d, 1, f);
  /* Batch end+1.. starts segment 2 and the checkpoint removes segment 1;
   * then the batch reaches the disk out of order: its first record is
   * bad, the later ones (of the same batch) whole. */
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  CHECK_INT(append_puts(l, end + 1, 3, 21000), 0);
  CHECK_INT(kv_revlog_segments(l), 2);
  CHECK_INT(kv_revlog_trim(l, end), 0);
  kv_revlog_close(l);
  CHECK_STR(ls_log(d), segs_named(1, end + 1));
  flip(seg_path(d, end + 1), SEG_HDR + 16 + 40);
  l = open_log(d, K64, 0);
  capture();
  replay_ok(l, end, end);
  CHECK(strstr(captured(), "zeroed a torn tail") != NULL);
  CHECK_INT(seen.n, 0);
  CHECK(zero_between(seg_path(d, end + 1), SEG_HDR, fsize(seg_path(d, end + 1))));
  CHECK_INT(append_puts(l, end + 1, 1, 10), 0);
  kv_revlog_close(l);
  l = open_log(d, K64, 0);
  replay_ok(l, end, end + 1);
  expect_seen(end + 1, end + 1);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(readonly_changes_nothing, "a read-only open and replay change nothing: a torn tail, an unfinished segment and a spare stay as they are") {
  char *d;
  kv_revlog_t *l;
  unsigned char *b1, *b2, junk[100];
  uint64_t n1, n2;
  start(&d);
  three_batches(d);
  memset(junk, 0xee, sizeof junk);
  poke(seg_path(d, 1), data_end(1, 9), junk, sizeof junk);
  make_file(seg_path(d, 10), K64);
  make_file(log_path(d, "spare.tmp"), 4096);
  b1 = slurp(seg_path(d, 1), &n1);
  for (int i = 0; i < 2; i++) {
    l = open_log(d, K64, 1);
    capture();
    replay_ok(l, 0, 9);
    CHECK_STR(captured(), "");
    expect_seen(1, 9);
    CHECK_INT(kv_revlog_append(l, NULL, 0), 0);
    CHECK_INT(append_puts(l, 10, 1, 1), KV_EIO);
    CHECK_INT(kv_revlog_wants_spare(l), 0);
    kv_revlog_close(l);
  }
  CHECK_STR(ls_log(d), "0000000000000001.seg,000000000000000a.seg,spare.tmp");
  b2 = slurp(seg_path(d, 1), &n2);
  CHECK_MEM(b2, n2, b1, n1);
  CHECK(zero_between(seg_path(d, 10), 0, K64));
  free(b1);
  free(b2);
  /* A directory from before the log: nothing to replay, nothing made. */
  rmtree(d);
  CHECK_INT(mkdir(d, 0700), 0);
  l = open_log(d, K64, 1);
  replay_ok(l, 4, 4);
  CHECK_INT(seen.n, 0);
  kv_revlog_close(l);
  {
    char p[512];
    snprintf(p, sizeof p, "%s/log", d);
    CHECK(!exists(p));
  }
  finish(d);
}

KV_TEST(readonly_pins_segments, "a segment removed after a read-only open is still read, as when a checkpoint trims during kvdump") {
  char *d;
  kv_revlog_t *l, *w;
  uint64_t f[3], end;
  start(&d);
  end = fill_segments(d, 3, f);
  l = open_log(d, K64, 1);
  w = open_log(d, K64, 0);
  replay_ok(w, 0, end);
  CHECK_INT(kv_revlog_trim(w, end), 0);
  kv_revlog_close(w);
  CHECK_STR(ls_log(d), segs_named(1, f[2]));
  replay_ok(l, 0, end);
  expect_seen(1, end);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(readonly_hole_covered_by_checkpoint, "a replay accepts a missing segment that the checkpoint covers, as when kvdump lists the log while a checkpoint removes segments") {
  char *d, err[512];
  kv_revlog_t *l;
  uint64_t f[4], end, last;
  start(&d);
  end = fill_segments(d, 4, f);
  /* kvdump opened segment 1, then a checkpoint at f[3] - 1 removed
   * segments 1 to 3 before kvdump's readdir reached segment 2. */
  CHECK_INT(unlink(seg_path(d, f[1])), 0);
  for (int ro = 0; ro <= 1; ro++) {
    l = open_log(d, K64, ro);
    replay_ok(l, f[3] - 1, end);
    expect_seen(f[3], end);
    kv_revlog_close(l);
    l = open_log(d, K64, ro);
    replay_ok(l, f[2] - 1, end);
    expect_seen(f[2], end);
    kv_revlog_close(l);
    /* Not covered: revisions f[1]..f[2]-1 are nowhere. */
    l = open_log(d, K64, ro);
    CHECK_INT(replay(l, f[2] - 2, &last, err, sizeof err), KV_ECORRUPT);
    CHECK(strstr(err, "the log has a gap") != NULL);
    kv_revlog_close(l);
  }
  finish(d);
}

/* The store's spare worker: makes a spare whenever the log wants one. */
typedef struct {
  kv_revlog_t *l;
  volatile int stop;
  int made, failed;
} sparer_t;

static void *sparer(void *arg) {
  sparer_t *s = arg;
  while (!s->stop) {
    if (!kv_revlog_wants_spare(s->l)) {
      sched_yield();
      continue;
    }
    if (kv_revlog_prepare(s->l) != 0) s->failed++;
    else s->made++;
  }
  return NULL;
}

KV_TEST(spares_race_switches, "spares made on another thread while batches switch segments never fail an append or touch a segment") {
  char *d;
  kv_revlog_t *l;
  sparer_t sp = {0};
  pthread_t t;
  uint64_t rev = 1;
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  sp.l = l;
  CHECK_INT(pthread_create(&t, NULL, sparer, &sp), 0);
  /* About 200 switches, each one racing the sparer. */
  for (int b = 0; b < 1200; b++) {
    size_t n = (size_t)(b % 4) + 1;
    int rc = append_puts(l, rev, n, 2000 + (size_t)(b % 5) * 300);
    if (rc != 0) {
      sp.stop = 1;
      pthread_join(t, NULL);
      KV__FAIL("append of batch %d (revision %" PRIu64 ") failed: %d; log: %s", b, rev, rc,
               ls_log(d));
    }
    rev += n;
    if (b % 2) usleep(50); /* give the sparer its turns on a busy machine */
  }
  sp.stop = 1;
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(sp.failed, 0);
  CHECK(sp.made > 10);
  kv_revlog_close(l);
  reopen_expect(d, K64, rev - 1);
  finish(d);
}

/* kvd's side of a live kvdump: appends batches of 1-3 records of 6-20 KB
 * to 64 KiB segments and, like a checkpoint, publishes a revision as held
 * elsewhere before trimming up to it. */
typedef struct {
  kv_revlog_t *l;
  volatile int stop;
  _Atomic uint64_t acked, held;
  int rc;
} live_t;

static void *live_writer(void *arg) {
  live_t *w = arg;
  static char val[20000], keys[3][16];
  uint64_t rev = 1;
  memset(val, 'v', sizeof val);
  for (int b = 0; b < 100000 && !w->stop; b++) {
    kv_op_t ops[3];
    size_t n = (size_t)(b % 3) + 1;
    for (size_t i = 0; i < n; i++) {
      int kl = snprintf(keys[i], sizeof keys[i], "k%d", (int)((rev + i) % 50));
      ops[i] = (kv_op_t){KV_OP_PUT, {keys[i], (size_t)kl},
                         {val, 6000 + (size_t)((rev + i) * 7919 % 14000)}, rev + i, rev, 0};
    }
    if ((w->rc = kv_revlog_append(w->l, ops, n)) != 0) break;
    rev += n;
    w->acked = rev - 1;
    if (b % 3 == 2 && rev > 4) {
      w->held = rev - 1 - 3;
      if ((w->rc = kv_revlog_trim(w->l, rev - 1 - 3)) != 0) break;
    }
  }
  return NULL;
}

static int count_op(void *ctx, const kv_op_t *op) {
  (void)op;
  ++*(uint64_t *)ctx;
  return 0;
}

KV_TEST(readonly_replay_while_writing, "a read-only replay while another handle appends and trims succeeds and shows every append that returned before it opened") {
  char *d, err[512];
  kv_revlog_t *l;
  live_t w = {0};
  pthread_t t;
  uint64_t t0;
  int runs = 0;
  start(&d);
  w.l = open_log(d, K64, 0);
  replay_ok(w.l, 0, 0);
  CHECK_INT(pthread_create(&t, NULL, live_writer, &w), 0);
  for (t0 = (uint64_t)time(NULL); (uint64_t)time(NULL) - t0 < 3 && runs < 20000; runs++) {
    uint64_t acked = w.acked, after, last, n = 0;
    int rc;
    l = open_log(d, K64, 1); /* lists and pins the segments */
    after = w.held;          /* then the snapshot: what is held elsewhere */
    rc = kv_revlog_replay(l, after, count_op, &n, &last, err, sizeof err);
    kv_revlog_close(l);
    if (rc != 0 || last < acked || n != last - after) {
      w.stop = 1;
      pthread_join(t, NULL);
      KV__FAIL("replay %d after %" PRIu64 ": %d %s; last %" PRIu64 ", %" PRIu64
               " acknowledged before it, %" PRIu64 " records", runs, after, rc, err, last,
               acked, n);
    }
  }
  w.stop = 1;
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(w.rc, 0);
  CHECK(runs > 100 && w.acked > 1000);
  kv_revlog_close(w.l);
  finish(d);
}

KV_TEST(zeroed_record_refused, "a record zeroed in the middle, with a later batch after it, fails replay with KV_ECORRUPT instead of hiding that batch") {
  char *d, err[512], want[512];
  kv_revlog_t *l;
  uint64_t last, off;
  start(&d);
  three_batches(d);
  /* Record 4 opens the second batch: zeros there look like the end of the
   * data, but the third batch (7..9) lies behind them. */
  off = rec_off(1, 4);
  {
    unsigned char z[4096] = {0};
    poke(seg_path(d, 1), off, z, rec_size(4));
  }
  l = open_log(d, K64, 0);
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  snprintf(want, sizeof want,
           "%s/log/0000000000000001.seg: zeroed record at offset %" PRIu64
           " (revision 4 expected) with revision 7 written after it; restore "
           "the data directory from a backup", d, off);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  l = open_log(d, K64, 1);
  CHECK_INT(replay(l, 0, &last, err, sizeof err), KV_ECORRUPT);
  CHECK_STR(err, want);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(zeros_then_own_batch_zeroed, "zeros followed only by records of the same torn batch end the data, and those records are zeroed") {
  char *d, err[512];
  kv_revlog_t *l;
  uint64_t last, off, end;
  start(&d);
  three_batches(d);
  /* The third batch's first record never reached the disk, its others
   * did: a torn batch, never acknowledged. */
  off = rec_off(1, 7);
  end = rec_off(1, 10);
  {
    unsigned char z[4096] = {0};
    poke(seg_path(d, 1), off, z, rec_size(7));
  }
  l = open_log(d, K64, 0);
  capture();
  CHECK_INT(replay(l, 0, &last, err, sizeof err), 0);
  CHECK(strstr(captured(), "zeroed a torn tail") != NULL);
  CHECK_INT(last, 6);
  CHECK(zero_between(seg_path(d, 1), off, end));
  CHECK_INT(append_puts(l, 7, 1, 10), 0);
  kv_revlog_close(l);
  reopen_expect(d, K64, 7);
  finish(d);
}

/* ---- scanning (the change feed's catch-up) ---------------------------------- */

/* Appends n writes as one batch starting at first, with every kind of op:
 * revisions 5k+3 are DELETEs, 5k+4 EXPIREs (no value, no expiry), the
 * rest PUTs of vlen-byte values. */
static int append_mixed(kv_revlog_t *l, uint64_t first, size_t n,
                        size_t vlen) {
  kv_op_t ops[64];
  CHECK(n <= 64 && first + n < MAXREV);
  for (size_t i = 0; i < n; i++) {
    uint64_t rev = first + i;
    int op = rev % 5 == 3 ? KV_OP_DEL : rev % 5 == 4 ? KV_OP_EXPIRE : KV_OP_PUT;
    size_t len = op == KV_OP_PUT ? vlen : 0;
    free(M[rev].val);
    M[rev].op = op;
    M[rev].batch = first;
    M[rev].expires = op == KV_OP_PUT && rev % 2 ? 1700000000000 + rev : 0;
    M[rev].klen = (size_t)snprintf(M[rev].key, sizeof M[rev].key, "mixed/%" PRIu64, rev);
    M[rev].val = malloc(len ? len : 1);
    CHECK(M[rev].val != NULL);
    for (size_t j = 0; j < len; j++)
      M[rev].val[j] = (unsigned char)('A' + (rev + j) % 26);
    M[rev].vlen = len;
    ops[i] = model_op(rev);
  }
  return kv_revlog_append(l, ops, n);
}

/* Scans from..to into seen. */
static int scan(kv_revlog_t *l, uint64_t from, uint64_t to) {
  seen_reset();
  return kv_revlog_scan(l, from, to, collect, &seen);
}

/* Collects into seen, and returns code at the stop_at-th call. */
typedef struct {
  size_t calls, stop_at;
  int code;
} stopper_t;

static int collect_then_stop(void *ctx, const kv_op_t *op) {
  stopper_t *s = ctx;
  (void)collect(&seen, op);
  return ++s->calls == s->stop_at ? s->code : 0;
}

static int scan_stop(kv_revlog_t *l, uint64_t from, uint64_t to,
                     size_t stop_at, int code, size_t *calls) {
  stopper_t s = {0, stop_at, code};
  int rc;
  seen_reset();
  rc = kv_revlog_scan(l, from, to, collect_then_stop, &s);
  *calls = s.calls;
  return rc;
}

KV_TEST(scan_exact_range, "kv_revlog_scan calls fn for exactly the revisions from..to, in order and byte for byte, across segments and from any revision") {
  char *d;
  kv_revlog_t *l;
  uint64_t f[4], end;
  start(&d);
  end = fill_segments(d, 4, f);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  /* DELETEs and EXPIREs too, appended through this handle. */
  CHECK_INT(append_mixed(l, end + 1, 10, 300), 0);
  end += 10;
  CHECK_INT(kv_revlog_segments(l), 4);
  {
    const uint64_t pts[] = {1,        2,        f[1] - 1, f[1],     f[1] + 1,
                            f[2] + 2, f[3] - 1, f[3],     end - 7,  end - 1,
                            end};
    const size_t np = sizeof pts / sizeof pts[0];
    for (size_t i = 0; i < np; i++)
      for (size_t j = i; j < np; j++) {
        int rc = scan(l, pts[i], pts[j]);
        if (rc != 0)
          KV__FAIL("scan %" PRIu64 "..%" PRIu64 ": %d", pts[i], pts[j], rc);
        expect_seen(pts[i], pts[j]);
      }
  }
  /* Every kind of op comes back as it was written. */
  CHECK_INT(scan(l, end - 9, end), 0);
  expect_seen(end - 9, end);
  {
    int kinds = 0;
    for (size_t i = 0; i < seen.n; i++)
      kinds |= 1 << seen.v[i].op;
    CHECK_INT(kinds, 1 << KV_OP_PUT | 1 << KV_OP_DEL | 1 << KV_OP_EXPIRE);
  }
  kv_revlog_close(l);
  /* The same from a handle that only replayed the log. */
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  CHECK_INT(scan(l, 1, end), 0);
  expect_seen(1, end);
  CHECK_INT(scan(l, f[2], f[2]), 0);
  expect_seen(f[2], f[2]);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(scan_empty_range, "kv_revlog_scan returns 0 without calling fn when from > to, whatever the log holds") {
  char *d;
  kv_revlog_t *l;
  uint64_t f[2], end;
  size_t calls = 99;
  start(&d);
  /* An empty log: no segment at all. */
  l = open_log(d, K64, 0);
  replay_ok(l, 0, 0);
  CHECK_INT(scan_stop(l, 2, 1, 0, 0, &calls), 0);
  CHECK_INT(calls, 0);
  CHECK_INT(scan_stop(l, UINT64_MAX, 0, 0, 0, &calls), 0);
  CHECK_INT(calls, 0);
  kv_revlog_close(l);
  end = fill_segments(d, 2, f);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  CHECK_INT(kv_revlog_trim(l, f[1] - 1), 0);
  {
    const uint64_t pairs[][2] = {{2, 1},           {end, end - 1}, {end + 1, end},
                                 {end + 9, end + 3}, {1, 0},       {f[1], 1},
                                 {UINT64_MAX, end}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
      CHECK_INT(scan_stop(l, pairs[i][0], pairs[i][1], 0, 0, &calls), 0);
      CHECK_INT(calls, 0);
      CHECK_INT(seen.n, 0);
    }
  }
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(scan_stops, "a scan stops at once when fn returns KV_ESTOP and then returns 0, and returns any other error of fn") {
  char *d;
  kv_revlog_t *l;
  uint64_t f[3], end;
  size_t calls;
  start(&d);
  end = fill_segments(d, 3, f);
  l = open_log(d, K64, 0);
  replay_ok(l, 0, end);
  {
    /* from, to, the call that stops */
    const uint64_t cases[][3] = {
        {1, end, 1},        {1, end, 2},          {5, 9, 5}, /* the last */
        {f[1] - 2, end, 3}, /* just past a segment's first record */
        {f[1] - 1, f[2] + 5, f[2] - f[1] + 2}, /* at f[2] */
        {1, end, end}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      uint64_t from = cases[i][0], to = cases[i][1], at = cases[i][2];
      CHECK_INT(scan_stop(l, from, to, (size_t)at, KV_ESTOP, &calls), 0);
      CHECK_INT(calls, at);
      expect_seen(from, from + at - 1);
    }
  }
  /* Another error ends the scan the same way and is returned. */
  CHECK_INT(scan_stop(l, 2, end, 4, KV_ENOMEM, &calls), KV_ENOMEM);
  CHECK_INT(calls, 4);
  expect_seen(2, 5);
  CHECK_INT(scan_stop(l, f[1] - 1, end, 2, KV_EIO, &calls), KV_EIO);
  CHECK_INT(calls, 2);
  expect_seen(f[1] - 1, f[1]);
  kv_revlog_close(l);
  finish(d);
}

KV_TEST(scan_after_trim, "kv_revlog_scan returns KV_ENOTFOUND without calling fn once a trim removed from, and kv_revlog_first follows the trims") {
  char *d;
  kv_revlog_t *l;
  uint64_t f[3], end;
  size_t calls;
  start(&d);
  /* A log with no segment holds no revision. */
  l = open_log(d, K64, 0);
  CHECK_INT(kv_revlog_first(l), 0);
  replay_ok(l, 0, 0);
  CHECK_INT(kv_revlog_first(l), 0);
  CHECK_INT(scan_stop(l, 1, 1, 0, 0, &calls), KV_ENOTFOUND);
  CHECK_INT(calls, 0);
  kv_revlog_close(l);
  end = fill_segments(d, 3, f);
  l = open_log(d, K64, 0);
  CHECK_INT(kv_revlog_first(l), 1); /* known from the listing */
  replay_ok(l, 0, end);
  CHECK_INT(kv_revlog_first(l), 1);
  CHECK_INT(scan_stop(l, 0, end, 0, 0, &calls), KV_ENOTFOUND); /* no revision 0 */
  CHECK_INT(calls, 0);
  /* A trim that removes nothing changes nothing. */
  CHECK_INT(kv_revlog_trim(l, f[1] - 2), 0);
  CHECK_INT(kv_revlog_first(l), 1);
  CHECK_INT(scan(l, 1, end), 0);
  expect_seen(1, end);
  CHECK_INT(kv_revlog_trim(l, f[1] - 1), 0);
  CHECK_INT(kv_revlog_first(l), f[1]);
  {
    const uint64_t gone[] = {1, 2, f[1] - 1};
    for (size_t i = 0; i < 3; i++) {
      CHECK_INT(scan_stop(l, gone[i], end, 0, 0, &calls), KV_ENOTFOUND);
      CHECK_INT(calls, 0);
      CHECK_INT(scan_stop(l, gone[i], f[1] + 3, 0, 0, &calls), KV_ENOTFOUND);
      CHECK_INT(calls, 0);
    }
  }
  CHECK_INT(scan(l, f[1], end), 0);
  expect_seen(f[1], end);
  /* Everything checkpointed: the last segment stays. */
  CHECK_INT(kv_revlog_trim(l, end), 0);
  CHECK_INT(kv_revlog_first(l), f[2]);
  CHECK_INT(scan_stop(l, f[2] - 1, end, 0, 0, &calls), KV_ENOTFOUND);
  CHECK_INT(calls, 0);
  CHECK_INT(scan(l, f[2], end), 0);
  expect_seen(f[2], end);
  CHECK_INT(append_puts(l, end + 1, 2, 10), 0);
  CHECK_INT(scan(l, end, end + 2), 0);
  expect_seen(end, end + 2);
  kv_revlog_close(l);
  l = open_log(d, K64, 0);
  CHECK_INT(kv_revlog_first(l), f[2]);
  kv_revlog_close(l);
  finish(d);
  /* A log that starts after a checkpoint: its first segment is named by
   * the first revision appended. */
  start(&d);
  l = open_log(d, K64, 0);
  replay_ok(l, 6, 6);
  CHECK_INT(kv_revlog_first(l), 0);
  CHECK_INT(append_puts(l, 7, 3, 10), 0);
  CHECK_INT(kv_revlog_first(l), 7);
  CHECK_INT(scan_stop(l, 6, 9, 0, 0, &calls), KV_ENOTFOUND);
  CHECK_INT(scan(l, 7, 9), 0);
  expect_seen(7, 9);
  kv_revlog_close(l);
  finish(d);
}

/* ---- a scan beside a live appender --------------------------------------- */

#define LIVE_MAX 20000

/* The writer's revisions are a function of the revision (but for the
 * batch, recorded before the append that publishes it). */
static char live_pat[4096];
static uint64_t live_batch[LIVE_MAX + 64];

typedef struct {
  kv_revlog_t *l;
  volatile int stop;
  _Atomic uint64_t acked; /* every revision up to it was appended */
  int rc;
} scanw_t;

static int live_op_kind(uint64_t rev) {
  return rev % 7 == 3 ? KV_OP_DEL : rev % 7 == 5 ? KV_OP_EXPIRE : KV_OP_PUT;
}

static size_t live_key(uint64_t rev, char *buf, size_t cap) {
  return (size_t)snprintf(buf, cap, "live/%" PRIu64, rev);
}

static void *scan_writer(void *arg) {
  scanw_t *w = arg;
  static char keys[5][32];
  uint64_t rev = 1;
  for (int b = 0; !w->stop && rev + 5 <= LIVE_MAX; b++) {
    kv_op_t ops[5];
    size_t n = (size_t)(b % 5) + 1;
    for (size_t i = 0; i < n; i++) {
      uint64_t r = rev + i;
      int op = live_op_kind(r);
      live_batch[r] = rev;
      ops[i] = (kv_op_t){op, {keys[i], live_key(r, keys[i], sizeof keys[i])},
                         {live_pat + r % 26, op == KV_OP_PUT ? 100 + (size_t)(r * 7919 % 2900) : 0},
                         r, rev, op == KV_OP_PUT && r % 3 == 0 ? r * 10 : 0};
    }
    if ((w->rc = kv_revlog_append(w->l, ops, n)) != 0) break;
    rev += n;
    w->acked = rev - 1;
    /* Like a checkpoint, now and then: the scans stay far above it. */
    if (b % 50 == 49 && rev > 3000 &&
        (w->rc = kv_revlog_trim(w->l, rev - 3000)) != 0)
      break;
    if (b % 4 == 0) sched_yield();
  }
  return NULL;
}

typedef struct {
  uint64_t want, to;
  char why[256];
} live_check_t;

/* Checks that op is revision want as the writer made it. */
static int live_check(void *ctx, const kv_op_t *op) {
  live_check_t *c = ctx;
  char key[32];
  size_t klen = live_key(c->want, key, sizeof key);
  int kind = live_op_kind(c->want);
  size_t vlen = kind == KV_OP_PUT ? 100 + (size_t)(c->want * 7919 % 2900) : 0;
  uint64_t exp = kind == KV_OP_PUT && c->want % 3 == 0 ? c->want * 10 : 0;
  if (op->rev != c->want || op->op != kind || op->batch != live_batch[c->want] ||
      op->expires != exp || op->key.len != klen ||
      memcmp(op->key.ptr, key, klen) != 0 || op->val.len != vlen ||
      (vlen && memcmp(op->val.ptr, live_pat + c->want % 26, vlen) != 0)) {
    snprintf(c->why, sizeof c->why,
             "wanted revision %" PRIu64 ", got revision %" PRIu64 " op %d batch %" PRIu64
             " key %.*s (%zu value bytes)", c->want, op->rev, op->op, op->batch,
             (int)op->key.len, op->key.ptr, op->val.len);
    return KV_EINVAL;
  }
  c->want++;
  return 0;
}

KV_TEST(scan_while_appending, "scans of revisions already appended read them exactly while another thread appends batches, switches segments and trims") {
  char *d;
  scanw_t w = {0};
  pthread_t t;
  time_t t0;
  uint64_t scans = 0, rnd = 88172645463325252u;
  start(&d);
  for (size_t i = 0; i < sizeof live_pat; i++)
    live_pat[i] = (char)('a' + i % 26);
  w.l = open_log(d, K64, 0);
  replay_ok(w.l, 0, 0);
  CHECK_INT(pthread_create(&t, NULL, scan_writer, &w), 0);
  for (t0 = time(NULL); time(NULL) - t0 < 3 && scans < 5000; scans++) {
    uint64_t to = w.acked, from, span;
    live_check_t c = {0, 0, ""};
    int rc;
    if (to == 0) {
      sched_yield();
      scans--;
      continue;
    }
    rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
    span = 1 + rnd % (to < 400 ? to : 400);
    from = to - span + 1;
    c.want = from;
    c.to = to;
    rc = kv_revlog_scan(w.l, from, to, live_check, &c);
    if (rc != 0 || c.want != to + 1) {
      w.stop = 1;
      pthread_join(t, NULL);
      KV__FAIL("scan %" PRIu64 " of %" PRIu64 "..%" PRIu64 ": %d, %" PRIu64
               " read; %s", scans, from, to, rc, c.want - from, c.why);
    }
  }
  w.stop = 1;
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(w.rc, 0);
  CHECK(scans > 50);
  CHECK(w.acked > 3000); /* it switched segments and trimmed while scanned */
  /* At rest: everything the log still holds, in one scan. */
  {
    uint64_t first = kv_revlog_first(w.l);
    live_check_t c = {first, w.acked, ""};
    CHECK(first > 1);
    CHECK_INT(kv_revlog_scan(w.l, first, w.acked, live_check, &c), 0);
    CHECK_INT(c.want, w.acked + 1);
    CHECK_INT(kv_revlog_scan(w.l, first - 1, w.acked, live_check, &c),
              KV_ENOTFOUND);
  }
  kv_revlog_close(w.l);
  finish(d);
}
