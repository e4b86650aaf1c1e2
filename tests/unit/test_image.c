/* test_image.c - JSON encoding, image files and their validation. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv/error.h"
#include "kv/image.h"
#include "kv/op.h"
/* build_full_disk_is_enospace is a durability test: under CI=true it may
 * not skip (see test.h). */
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

/* An iterator over an array of records; fail_at makes it return err
 * instead of the record at that index. */
typedef struct {
  const rec_t *recs;
  size_t n, i;
  size_t fail_at;
  int err;
} iter_t;

/* Yields recs in order; the i-th has revision 10 * (i + 1). */
static int iter_next(void *it, kv_item_t *item) {
  iter_t *t = it;
  if (t->i == t->fail_at) return t->err;
  if (t->i >= t->n) return 0;
  item->key.ptr = t->recs[t->i].k;
  item->key.len = t->recs[t->i].kl;
  item->val.ptr = t->recs[t->i].v;
  item->val.len = t->recs[t->i].vl;
  item->rev = 10 * (t->i + 1);
  t->i++;
  return 1;
}

static iter_t iter(const rec_t *recs, size_t n) {
  iter_t t = {recs, n, 0, (size_t)-1, 0};
  return t;
}

typedef struct {
  char *p;
  size_t len, cap;
  int calls;
  int fail_after; /* fail the write call with this number (0: never) */
} buf_t;

static int buf_write(void *ctx, const char *p, size_t len) {
  buf_t *b = ctx;
  b->calls++;
  if (b->fail_after && b->calls >= b->fail_after) return KV_ENOSPACE;
  if (b->len + len > b->cap) {
    b->cap = (b->len + len) * 2;
    b->p = realloc(b->p, b->cap);
    CHECK(b->p != NULL);
  }
  memcpy(b->p + b->len, p, len);
  b->len += len;
  return 0;
}

static buf_t encode(int format, const rec_t *recs, size_t n) {
  buf_t b = {0};
  iter_t t = iter(recs, n);
  CHECK_INT(kv_image_encode(format, iter_next, &t, buf_write, &b), 0);
  return b;
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/kvimage.XXXXXX");
  CHECK(d != NULL && mkdtemp(d) != NULL);
  return d;
}

static void rmtree(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  CHECK_INT(system(cmd), 0);
}

static char *path_in(const char *d, const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", d, name);
  return buf;
}

/* Reads a whole file into a malloc'd buffer. */
static char *slurp(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  struct stat st;
  char *p;
  CHECK(fd >= 0);
  CHECK_INT(fstat(fd, &st), 0);
  p = malloc((size_t)st.st_size + 1);
  CHECK(p != NULL);
  CHECK_INT(read(fd, p, (size_t)st.st_size), st.st_size);
  close(fd);
  *len = (size_t)st.st_size;
  return p;
}

/* Lists a directory's entries other than . and .., as "a,b" in readdir
 * order (tests only call it where at most one entry is expected). */
static const char *listdir(const char *d, char *buf, size_t size) {
  DIR *dir = opendir(d);
  struct dirent *e;
  CHECK(dir != NULL);
  buf[0] = '\0';
  while ((e = readdir(dir)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (buf[0]) strncat(buf, ",", size - strlen(buf) - 1);
    strncat(buf, e->d_name, size - strlen(buf) - 1);
  }
  closedir(dir);
  return buf;
}

static const rec_t mixed[] = {
    R("a", ""),
    R("b/c", "x/y"),
    R("ctl", "\0\x01\x08\t\n\x0b\x0c\r\x1f\x7f"),
    R("q", "say \"hi\" \\o/"),
    R("u\xc3\xa9", "\xe2\x82\xac \xf0\x9d\x84\x9e"),
    R("z\0", "nul key"),
};
#define NMIXED (sizeof mixed / sizeof mixed[0])

static const char mixed_json[] =
    "{\"a\":\"\",\"b/c\":\"x/y\","
    "\"ctl\":\"\\u0000\\u0001\\b\\t\\n\\u000B\\f\\r\\u001F\x7f\","
    "\"q\":\"say \\\"hi\\\" \\\\o/\","
    "\"u\xc3\xa9\":\"\xe2\x82\xac \xf0\x9d\x84\x9e\","
    "\"z\\u0000\":\"nul key\"}\n";

/* Records with n keys key000000.. and 100-byte values, some with bytes
 * that need escaping; the keys are sorted. */
static rec_t *many(size_t n) {
  rec_t *r = calloc(n, sizeof *r);
  CHECK(r != NULL);
  for (size_t i = 0; i < n; i++) {
    char *k = malloc(16), *v = malloc(100);
    CHECK(k != NULL && v != NULL);
    r[i].kl = (size_t)snprintf(k, 16, "key%06zu", i);
    memset(v, 'a' + (int)(i % 26), 100);
    if (i % 7 == 0) v[50] = '"';
    if (i % 11 == 0) v[10] = '\0';
    r[i].k = k;
    r[i].v = v;
    r[i].vl = 100;
  }
  return r;
}

static void many_free(rec_t *r, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free((void *)r[i].k);
    free((void *)r[i].v);
  }
  free(r);
}

static kv_image_t *build(const char *d, uint64_t seq, size_t hint,
                         const rec_t *recs, size_t n) {
  kv_image_t *img = NULL;
  iter_t t = iter(recs, n);
  CHECK_INT(kv_image_build(d, seq, hint, iter_next, &t, &img), 0);
  CHECK(img != NULL);
  return img;
}

KV_TEST(encode_exact_bytes, "the object encoding escapes exactly what JSON needs and keeps / and UTF-8 raw") {
  buf_t b = encode(KV_IMAGE_OBJECT, mixed, NMIXED);
  CHECK_MEM(b.p, b.len, mixed_json, sizeof mixed_json - 1);
  CHECK_INT(kv_image_validate(b.p, b.len, NULL, 0), 0);
  free(b.p);
}

KV_TEST(encode_every_control_byte, "every byte below 0x20 comes out as a JSON escape") {
  char v[32];
  rec_t r[1] = {{"k", 1, v, sizeof v}};
  static const char want[] =
      "{\"k\":\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007"
      "\\b\\t\\n\\u000B\\f\\r\\u000E\\u000F\\u0010\\u0011\\u0012\\u0013"
      "\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001A\\u001B\\u001C"
      "\\u001D\\u001E\\u001F\"}\n";
  buf_t b;
  for (int i = 0; i < 32; i++) v[i] = (char)i;
  b = encode(KV_IMAGE_OBJECT, r, 1);
  CHECK_MEM(b.p, b.len, want, sizeof want - 1);
  free(b.p);
}

KV_TEST(encode_empty, "an empty map encodes as {} and a newline and as no NDJSON lines") {
  buf_t b = encode(KV_IMAGE_OBJECT, NULL, 0);
  CHECK_MEM(b.p, b.len, "{}\n", 3);
  free(b.p);
  b = encode(KV_IMAGE_NDJSON, NULL, 0);
  CHECK_INT(b.len, 0);
  free(b.p);
}

KV_TEST(ndjson_exact_bytes, "NDJSON writes one key, value and revision object per line") {
  static const rec_t r[] = {R("a", ""), R("b\"", "x\0/y"),
                            R("c\xc3\xa9", "\n")};
  static const char want[] =
      "{\"key\":\"a\",\"value\":\"\",\"rev\":10}\n"
      "{\"key\":\"b\\\"\",\"value\":\"x\\u0000/y\",\"rev\":20}\n"
      "{\"key\":\"c\xc3\xa9\",\"value\":\"\\n\",\"rev\":30}\n";
  buf_t b = encode(KV_IMAGE_NDJSON, r, 3);
  CHECK_MEM(b.p, b.len, want, sizeof want - 1);
  free(b.p);
}

KV_TEST(invalid_utf8_is_eutf8, "a key or value that is not UTF-8 fails the encoding with KV_EUTF8") {
  static const rec_t bad[][2] = {
      {R("a", "ok"), R("b", "\xff")},
      {R("a", "ok"), R("\xc3", "v")},
      {R("a", "ok"), R("b", "\xf0\x9d\x84")},
      {R("a", "ok"), R("b", "x\x80y")},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (int f = KV_IMAGE_OBJECT; f <= KV_IMAGE_NDJSON; f++) {
      buf_t b = {0};
      iter_t t = iter(bad[i], 2);
      CHECK_INT(kv_image_encode(f, iter_next, &t, buf_write, &b), KV_EUTF8);
      free(b.p);
    }
  }
}

KV_TEST(errors_stop_encoding, "an error from the iterator or the writer stops the encoding and is returned") {
  rec_t *r = many(5000);
  buf_t b = {0};
  iter_t t = iter(r, 5000);
  t.fail_at = 3;
  t.err = KV_EIO;
  CHECK_INT(kv_image_encode(KV_IMAGE_OBJECT, iter_next, &t, buf_write, &b),
            KV_EIO);
  free(b.p);
  memset(&b, 0, sizeof b);
  b.fail_after = 2;
  t = iter(r, 5000);
  CHECK_INT(kv_image_encode(KV_IMAGE_NDJSON, iter_next, &t, buf_write, &b),
            KV_ENOSPACE);
  CHECK_INT(b.calls, 2); /* no write after the failed one */
  CHECK(t.i < 5000);     /* and the walk stopped early */
  free(b.p);
  CHECK_INT(kv_image_encode(7, iter_next, &t, buf_write, &b), KV_EINVAL);
  many_free(r, 5000);
}

KV_TEST(encode_long_value, "a value longer than the staging buffer is encoded intact") {
  size_t n = 300 * 1024;
  char *v = malloc(n), *want = malloc(n + 64);
  rec_t r[2] = {{"a", 1, v, n}, {"b", 1, "x", 1}};
  size_t wl;
  buf_t b;
  CHECK(v != NULL && want != NULL);
  memset(v, 'v', n);
  v[n / 2] = '\n';
  b = encode(KV_IMAGE_OBJECT, r, 2);
  memcpy(want, "{\"a\":\"", 6);
  memcpy(want + 6, v, n / 2);
  memcpy(want + 6 + n / 2, "\\n", 2);
  memcpy(want + 8 + n / 2, v, n - n / 2 - 1);
  wl = 8 + n - 1;
  memcpy(want + wl, "\",\"b\":\"x\"}\n", 11);
  wl += 11;
  CHECK_MEM(b.p, b.len, want, wl);
  free(b.p);
  free(v);
  free(want);
}

KV_TEST(build_writes_image_file, "build writes DIR/image.json with exactly the encoded bytes") {
  char *d = tmpdir(), ls[256], *file;
  kv_image_t *img;
  struct stat st;
  size_t len;
  umask(022);
  img = build(d, 42, 0, mixed, NMIXED);
  CHECK_MEM(kv_image_data(img), kv_image_len(img), mixed_json,
            sizeof mixed_json - 1);
  CHECK_INT(kv_image_rev(img), 42);
  file = slurp(path_in(d, KV_IMAGE_FILE), &len);
  CHECK_MEM(file, len, mixed_json, sizeof mixed_json - 1);
  CHECK_INT(stat(path_in(d, KV_IMAGE_FILE), &st), 0);
  CHECK_INT(st.st_mode & 0777, 0644);
  CHECK_STR(listdir(d, ls, sizeof ls), KV_IMAGE_FILE); /* no tmp left */
  CHECK(kv_image_ref(img) == img);
  kv_image_unref(img);
  CHECK_MEM(kv_image_data(img), kv_image_len(img), mixed_json,
            sizeof mixed_json - 1);
  kv_image_unref(img);
  kv_image_unref(NULL);
  free(file);
  img = build(d, 43, 0, NULL, 0);
  CHECK_MEM(kv_image_data(img), kv_image_len(img), "{}\n", 3);
  kv_image_unref(img);
  rmtree(d);
  free(d);
}

KV_TEST(build_grows_many_times, "an image far larger than its size hint grows correctly") {
  size_t n = 20000; /* about 2.5 MB: 64 KiB doubled six times */
  rec_t *r = many(n);
  buf_t want = encode(KV_IMAGE_OBJECT, r, n);
  char *d = tmpdir(), *file;
  size_t hints[] = {0, 1, want.len, want.len + 1, 3 * want.len};
  size_t len;
  CHECK(want.len > 2 * 1024 * 1024);
  for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
    kv_image_t *img = build(d, i, hints[i], r, n);
    CHECK_MEM(kv_image_data(img), kv_image_len(img), want.p, want.len);
    file = slurp(path_in(d, KV_IMAGE_FILE), &len);
    CHECK_MEM(file, len, want.p, want.len);
    free(file);
    CHECK_INT(kv_image_validate(kv_image_data(img), kv_image_len(img),
                                NULL, 0), 0);
    kv_image_unref(img);
  }
  free(want.p);
  many_free(r, n);
  rmtree(d);
  free(d);
}

KV_TEST(old_generation_survives, "an older image keeps its bytes after a new one replaces or removes the file") {
  static const rec_t r1[] = {R("k", "one")}, r2[] = {R("k", "two")};
  char *d = tmpdir(), *file;
  kv_image_t *g1, *g2, *g3;
  size_t len;
  g1 = build(d, 1, 0, r1, 1);
  g2 = build(d, 2, 0, r2, 1);
  CHECK_MEM(kv_image_data(g1), kv_image_len(g1), "{\"k\":\"one\"}\n", 12);
  CHECK_MEM(kv_image_data(g2), kv_image_len(g2), "{\"k\":\"two\"}\n", 12);
  file = slurp(path_in(d, KV_IMAGE_FILE), &len);
  CHECK_MEM(file, len, "{\"k\":\"two\"}\n", 12);
  free(file);
  CHECK_INT(unlink(path_in(d, KV_IMAGE_FILE)), 0);
  g3 = build(d, 3, 0, r1, 1);
  CHECK_MEM(kv_image_data(g2), kv_image_len(g2), "{\"k\":\"two\"}\n", 12);
  CHECK_MEM(kv_image_data(g1), kv_image_len(g1), "{\"k\":\"one\"}\n", 12);
  kv_image_unref(g1);
  kv_image_unref(g2);
  CHECK_MEM(kv_image_data(g3), kv_image_len(g3), "{\"k\":\"one\"}\n", 12);
  kv_image_unref(g3);
  rmtree(d);
  free(d);
}

KV_TEST(build_failure_cleans_up, "a failed build returns its error and leaves the old image and no tmp file") {
  static const rec_t r1[] = {R("k", "one")};
  static const rec_t bad[] = {R("a", "fine"), R("b", "\xfe")};
  char *d = tmpdir(), ls[256], *file;
  kv_image_t *g1 = build(d, 1, 0, r1, 1), *g2 = (kv_image_t *)1;
  rec_t *r = many(5000);
  iter_t t = iter(r, 5000);
  size_t len;
  t.fail_at = 4000;
  t.err = KV_EIO;
  CHECK_INT(kv_image_build(d, 2, 0, iter_next, &t, &g2), KV_EIO);
  CHECK(g2 == NULL);
  t = iter(bad, 2);
  CHECK_INT(kv_image_build(d, 3, 0, iter_next, &t, &g2), KV_EUTF8);
  CHECK_STR(listdir(d, ls, sizeof ls), KV_IMAGE_FILE);
  file = slurp(path_in(d, KV_IMAGE_FILE), &len);
  CHECK_MEM(file, len, "{\"k\":\"one\"}\n", 12);
  free(file);
  t = iter(r1, 1);
  CHECK(kv_image_build("/nonexistent/dir", 4, 0, iter_next, &t, &g2) < 0);
  kv_image_unref(g1);
  many_free(r, 5000);
  rmtree(d);
  free(d);
}

static void expect_valid(const char *s) {
  char err[256];
  int rc = kv_image_validate(s, strlen(s), err, sizeof err);
  if (rc != 0) KV__FAIL("rejected %s: %s", s, err);
}

static void expect_invalid_n(const char *s, size_t len, const char *why) {
  char err[256] = "unset";
  int rc = kv_image_validate(s, len, err, sizeof err);
  if (rc != KV_ECORRUPT)
    KV__FAIL("accepted %.*s (rc %d)", (int)len, s, rc);
  CHECK(strchr(err, '\n') == NULL && err[0] != '\0');
  if (why != NULL && strstr(err, why) == NULL)
    KV__FAIL("%.*s: reason %s, expected %s", (int)len, s, err, why);
}

static void expect_invalid(const char *s, const char *why) {
  expect_invalid_n(s, strlen(s), why);
}

KV_TEST(validate_accepts_images, "validation accepts what the encoder writes") {
  expect_valid("{}\n");
  expect_valid(mixed_json);
  expect_valid("{\"a\":\"1\",\"ab\":\"2\",\"b\":\"3\"}\n");
  expect_valid("{\"z\":\"1\",\"\xc3\xa9\":\"2\"}\n");
  expect_valid("{\"\\u0000\":\"1\",\"\\u0001\":\"2\",\"a\":\"3\"}\n");
  expect_valid("{ \"a\" : \"1\" }\n"); /* valid JSON of the right shape */
}

KV_TEST(validate_rejects_bad_images, "validation rejects truncated, unsorted, duplicate, non-string and trailing input") {
  size_t n = sizeof mixed_json - 1;
  char cut[sizeof mixed_json + 1];
  for (size_t i = 0; i < n; i++) { /* every truncation, and with a \n */
    expect_invalid_n(mixed_json, i, NULL);
    if (i == n - 1) break; /* with its \n back it is whole again */
    memcpy(cut, mixed_json, i);
    cut[i] = '\n';
    expect_invalid_n(cut, i + 1, NULL);
  }
  expect_invalid("", "empty");
  expect_invalid("{}", "newline");
  expect_invalid("{\"a\":\"1\"", "newline");
  expect_invalid("{\"a\":\"1\"\n", "premature EOF at byte 8");
  expect_invalid("{\"b\":\"1\",\"a\":\"2\"}\n", "increasing byte order");
  expect_invalid("{\"ab\":\"1\",\"a\":\"2\"}\n", "increasing byte order");
  expect_invalid("{\"\xc3\xa9\":\"1\",\"z\":\"2\"}\n", "increasing");
  expect_invalid("{\"a\":\"1\",\"a\":\"2\"}\n", "duplicate key");
  expect_invalid("{\"a\":\"1\",\"\\u0061\":\"2\"}\n", "duplicate key");
  expect_invalid("{\"a\":1}\n", "not a string");
  expect_invalid("{\"a\":1.5}\n", "not a string");
  expect_invalid("{\"a\":null}\n", "not a string");
  expect_invalid("{\"a\":true}\n", "not a string");
  expect_invalid("{\"a\":{}}\n", "not a string");
  expect_invalid("{\"a\":[]}\n", "not a string");
  expect_invalid("[]\n", "not a JSON object");
  expect_invalid("\"x\"\n", "not a JSON object");
  expect_invalid(" {}\n", "not a JSON object");
  expect_invalid("{}\nx", "newline");
  expect_invalid("{}x\n", NULL);
  expect_invalid("{} \n", "after the object");
  expect_invalid("{}\n\n", "after the object");
  expect_invalid("{}{}\n", NULL);
  expect_invalid("{\"a\":\"\xff\"}\n", NULL);
  expect_invalid("{\"a\":\"x\ny\"}\n", NULL);
  expect_invalid_n("{\"a\":\"x\0y\"}\n", 11, NULL);
  expect_invalid("{\"a\"}\n", NULL);
}

static char mounted[256];

static void unmount_at_exit(void) {
  if (mounted[0]) umount2(mounted, MNT_DETACH);
}

KV_TEST(build_full_disk_is_enospace, "a build on a full file system fails with KV_ENOSPACE and no SIGBUS") {
  static const rec_t small[] = {R("k", "v")};
  char *d = tmpdir(), ls[256], *file;
  rec_t *r = many(20000);
  kv_image_t *g1, *g2 = NULL;
  iter_t t;
  size_t len;
  if (mount("tmpfs", d, "tmpfs", 0, "size=1m,mode=0700") != 0) {
    int e = errno;
    many_free(r, 20000);
    rmtree(d);
    free(d);
    KV_SKIP("cannot mount a tmpfs: %s", strerror(e));
  }
  snprintf(mounted, sizeof mounted, "%s", d);
  atexit(unmount_at_exit);
  g1 = build(d, 1, 0, small, 1);
  t = iter(r, 20000); /* 2.5 MB: the file cannot grow that far */
  CHECK_INT(kv_image_build(d, 2, 0, iter_next, &t, &g2), KV_ENOSPACE);
  CHECK(g2 == NULL);
  t = iter(small, 1); /* a size hint beyond the disk fails at once */
  CHECK_INT(kv_image_build(d, 3, 8 << 20, iter_next, &t, &g2),
            KV_ENOSPACE);
  CHECK_STR(listdir(d, ls, sizeof ls), KV_IMAGE_FILE);
  file = slurp(path_in(d, KV_IMAGE_FILE), &len);
  CHECK_MEM(file, len, "{\"k\":\"v\"}\n", 10);
  free(file);
  kv_image_unref(g1);
  CHECK_INT(umount2(d, MNT_DETACH), 0);
  mounted[0] = '\0';
  many_free(r, 20000);
  rmtree(d);
  free(d);
}

/* ---- one change of the change feed ------------------------------------------ */

/* S("literal"): a slice of a literal that may hold NUL bytes. */
#define S(lit) ((kv_slice_t){lit, sizeof(lit) - 1})

/* Encodes a change with room bytes in front, checks that those bytes are
 * zero and the caller's to use, and that len counts only the JSON; returns
 * the JSON in a static buffer (and its length in *len). */
static const char *change(uint64_t rev, int op, kv_slice_t key,
                          kv_slice_t val, size_t room, size_t *len) {
  static char json[4096];
  char *out = (char *)1;
  size_t n = 0;
  CHECK_INT(kv_image_change(rev, op, key, val, room, &out, &n), 0);
  CHECK(out != NULL && n < sizeof json);
  for (size_t i = 0; i < room; i++)
    if (out[i] != 0) KV__FAIL("room byte %zu of %zu is %d", i, room, out[i]);
  memset(out, 'h', room); /* the caller's header: in bounds for ASan */
  memcpy(json, out + room, n);
  json[n] = '\0';
  free(out);
  *len = n;
  return json;
}

#define CHECK_CHANGE(rev, op, key, val, want)                                 \
  do {                                                                        \
    size_t kv__n;                                                             \
    const char *kv__j = change((rev), (op), (key), (val), 0, &kv__n);         \
    CHECK_MEM(kv__j, kv__n, want, sizeof(want) - 1);                          \
  } while (0)

KV_TEST(change_exact_bytes, "kv_image_change writes a put, a delete and an expire as exact JSON objects without a newline") {
  CHECK_CHANGE(7, KV_OP_PUT, S("k"), S("v"),
               "{\"rev\":7,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}");
  CHECK_CHANGE(1, KV_OP_PUT, S("a/b"), ((kv_slice_t){NULL, 0}),
               "{\"rev\":1,\"op\":\"put\",\"key\":\"a/b\",\"value\":\"\"}");
  CHECK_CHANGE(0, KV_OP_PUT, S("k"), S(""),
               "{\"rev\":0,\"op\":\"put\",\"key\":\"k\",\"value\":\"\"}");
  CHECK_CHANGE(8, KV_OP_DEL, S("k"), ((kv_slice_t){NULL, 0}),
               "{\"rev\":8,\"op\":\"delete\",\"key\":\"k\"}");
  /* A value given with a deletion is not written. */
  CHECK_CHANGE(9, KV_OP_DEL, S("k"), S("ignored"),
               "{\"rev\":9,\"op\":\"delete\",\"key\":\"k\"}");
  CHECK_CHANGE(10, KV_OP_EXPIRE, S("session/1"), S("ignored"),
               "{\"rev\":10,\"op\":\"expire\",\"key\":\"session/1\"}");
  CHECK_CHANGE(UINT64_C(9223372036854775807), KV_OP_EXPIRE, S("k"), S(""),
               "{\"rev\":9223372036854775807,\"op\":\"expire\",\"key\":\"k\"}");
  {
    size_t n = 100000;
    char *v = malloc(n), *out = NULL;
    size_t len = 0;
    CHECK(v != NULL);
    memset(v, 'x', n);
    CHECK_INT(kv_image_change(3, KV_OP_PUT, S("big"), (kv_slice_t){v, n}, 0,
                              &out, &len), 0);
    CHECK_INT(len, n + sizeof "{\"rev\":3,\"op\":\"put\",\"key\":\"big\",\"value\":\"\"}" - 1);
    CHECK_MEM(out + len - 2 - 10, 12, "xxxxxxxxxx\"}", 12);
    free(out);
    free(v);
  }
}

KV_TEST(change_escapes, "kv_image_change escapes quotes, backslashes and control bytes as the image does and keeps /, DEL and UTF-8 raw") {
  char ctl[32];
  static const char want_ctl[] =
      "{\"rev\":5,\"op\":\"put\",\"key\":\"c\",\"value\":"
      "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007"
      "\\b\\t\\n\\u000B\\f\\r\\u000E\\u000F\\u0010\\u0011\\u0012\\u0013"
      "\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001A\\u001B\\u001C"
      "\\u001D\\u001E\\u001F\"}";
  for (int i = 0; i < 32; i++) ctl[i] = (char)i;
  CHECK_CHANGE(5, KV_OP_PUT, S("c"), ((kv_slice_t){ctl, sizeof ctl}), want_ctl);
  CHECK_CHANGE(6, KV_OP_PUT, S("say \"hi\" \\o/\x7f"), S("\"\\\"\\"),
               "{\"rev\":6,\"op\":\"put\",\"key\":\"say \\\"hi\\\" \\\\o/\x7f\","
               "\"value\":\"\\\"\\\\\\\"\\\\\"}");
  CHECK_CHANGE(7, KV_OP_PUT, S("u\xc3\xa9"), S("\xe2\x82\xac \xf0\x9d\x84\x9e \xef\xbf\xbf"),
               "{\"rev\":7,\"op\":\"put\",\"key\":\"u\xc3\xa9\","
               "\"value\":\"\xe2\x82\xac \xf0\x9d\x84\x9e \xef\xbf\xbf\"}");
  CHECK_CHANGE(8, KV_OP_DEL, S("z\0\n\xc3\xa9"),  ((kv_slice_t){NULL, 0}),
               "{\"rev\":8,\"op\":\"delete\",\"key\":\"z\\u0000\\n\xc3\xa9\"}");
  CHECK_CHANGE(9, KV_OP_EXPIRE, S("t\t\"/"), ((kv_slice_t){NULL, 0}),
               "{\"rev\":9,\"op\":\"expire\",\"key\":\"t\\t\\\"/\"}");
  /* The same escapes as a value in the image itself. */
  {
    static const rec_t r[] = {R("say \"hi\" \\o/\x7f", "\"\\\"\\")};
    static const char want[] =
        "{\"say \\\"hi\\\" \\\\o/\x7f\":\"\\\"\\\\\\\"\\\\\"}\n";
    buf_t b = encode(KV_IMAGE_OBJECT, r, 1);
    CHECK_MEM(b.p, b.len, want, sizeof want - 1);
    free(b.p);
  }
}

KV_TEST(change_room, "kv_image_change leaves room zero bytes in front of the JSON for the caller and len counts only the JSON") {
  static const char want[] = "{\"rev\":42,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\\n\"}";
  static const char want_del[] = "{\"rev\":43,\"op\":\"delete\",\"key\":\"k\"}";
  static const size_t rooms[] = {0, 1, 7, 8, 63, 64, 65, 128, 200, 1000};
  for (size_t i = 0; i < sizeof rooms / sizeof rooms[0]; i++) {
    size_t n;
    const char *j = change(42, KV_OP_PUT, S("k"), S("v\n"), rooms[i], &n);
    CHECK_MEM(j, n, want, sizeof want - 1);
    j = change(43, KV_OP_DEL, S("k"), S(""), rooms[i], &n);
    CHECK_MEM(j, n, want_del, sizeof want_del - 1);
  }
}

KV_TEST(change_invalid_utf8, "kv_image_change fails with KV_EUTF8 for a key, or a put's value, that is not UTF-8, and allocates nothing") {
  static const kv_slice_t bad[] = {S("\xff"), S("\x80"), S("\xc3"), S("a\xe2\x82"),
                                   S("\xf0\x9d\x84"), S("\xc3("), S("ok\xfe")};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (size_t room = 0; room <= 16; room += 16) {
      char *out = (char *)1;
      size_t len = 12345;
      CHECK_INT(kv_image_change(1, KV_OP_PUT, bad[i], S("v"), room, &out, &len),
                KV_EUTF8);
      CHECK(out == NULL);
      CHECK_INT(kv_image_change(1, KV_OP_PUT, S("k"), bad[i], room, &out, &len),
                KV_EUTF8);
      CHECK(out == NULL);
      CHECK_INT(kv_image_change(1, KV_OP_DEL, bad[i], S(""), room, &out, &len),
                KV_EUTF8);
      CHECK(out == NULL);
      CHECK_INT(kv_image_change(1, KV_OP_EXPIRE, bad[i], S(""), room, &out, &len),
                KV_EUTF8);
      CHECK(out == NULL);
    }
    /* A deletion's value is not written, so it is not checked. */
    {
      size_t n;
      static const char want[] = "{\"rev\":2,\"op\":\"delete\",\"key\":\"k\"}";
      const char *j = change(2, KV_OP_DEL, S("k"), bad[i], 0, &n);
      CHECK_MEM(j, n, want, sizeof want - 1);
    }
  }
}

KV_TEST(change_unknown_op, "kv_image_change fails with KV_EINVAL for an op other than put, delete and expire") {
  static const int ops[] = {0, 4, 5, -1, 255, 1 << 20};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    char *out = (char *)1;
    size_t len = 0;
    CHECK_INT(kv_image_change(1, ops[i], S("k"), S("v"), 0, &out, &len), KV_EINVAL);
    CHECK(out == NULL);
    CHECK_INT(kv_image_change(1, ops[i], S("k"), S("v"), 32, &out, &len), KV_EINVAL);
    CHECK(out == NULL);
  }
}

KV_TEST(image_from_fd, "an image of a file's bytes outlives the descriptor and the file's name, and an empty file is refused") {
  static const char bytes[] = "\x00\x01 any bytes at all \xff";
  char *d = tmpdir(), *p = path_in(d, "f");
  int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  kv_image_t *img = NULL, *ref;
  CHECK(fd >= 0);
  CHECK_INT(kv_image_from_fd(fd, 10, 7, &img), KV_EINVAL);
  CHECK_INT(kv_image_from_fd(fd, 0, 7, &img), KV_EINVAL);
  CHECK(img == NULL);
  CHECK_INT(write(fd, bytes, sizeof bytes - 1), sizeof bytes - 1);
  CHECK_INT(kv_image_from_fd(fd, sizeof bytes - 1, 7, &img), 0);
  CHECK_INT(close(fd), 0);
  CHECK_INT(unlink(p), 0);
  CHECK_MEM(kv_image_data(img), kv_image_len(img), bytes, sizeof bytes - 1);
  CHECK_INT(kv_image_rev(img), 7);
  ref = kv_image_ref(img);
  kv_image_unref(img);
  CHECK_MEM(kv_image_data(ref), kv_image_len(ref), bytes, sizeof bytes - 1);
  kv_image_unref(ref);
  rmtree(d);
  free(d);
}
