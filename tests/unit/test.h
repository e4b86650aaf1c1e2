/* test.h - a tiny unit-test harness.
 *
 * Each test is declared as  KV_TEST(name, "a sentence that says what it
 * proves")  at the start of a line.  CMake reads those lines and registers
 * one ctest per test, named by its sentence, running  <exe> name.
 * Run the executable with no argument to run every test in it.
 *
 * A test that cannot run here (not root, no tmpfs) calls KV_SKIP("reason"):
 * it prints "skipped: reason" and the process exits KV_SKIP_EXIT (77),
 * which ctest reports as "Skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt),
 * never as passed.  Run without an argument, the executable goes on with
 * the next test and exits 77 at the end if any test skipped (and none
 * failed: a failure exits 1 at once).
 *
 * The rule for CI: a file whose tests exercise durability (a full disk, an
 * I/O error) defines KV_CI_STRICT before including this header.  In such a
 * file, with CI=true in the environment, KV_SKIP fails the test with the
 * same reason instead: CI runs as root with every tool installed, so such a
 * skip there means the test is broken.
 */
#ifndef KV_TEST_H
#define KV_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KV_SKIP_EXIT 77

typedef void (*kv_test_fn)(void);

static struct {
  const char *name;
  kv_test_fn fn;
} kv_tests[256];
static int kv_ntests;

static inline void kv_test_register(const char *name, kv_test_fn fn) {
  if (kv_ntests < 256) {
    kv_tests[kv_ntests].name = name;
    kv_tests[kv_ntests].fn = fn;
    kv_ntests++;
  }
}

#define KV_TEST(fn, sentence)                                                 \
  static void fn(void);                                                       \
  __attribute__((constructor)) static void fn##_register(void) {              \
    kv_test_register(#fn, fn);                                                \
  }                                                                           \
  static void fn(void)

#define KV__FAIL(...)                                                         \
  do {                                                                        \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                           \
    fprintf(stderr, __VA_ARGS__);                                             \
    fputc('\n', stderr);                                                      \
    exit(1);                                                                  \
  } while (0)

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) KV__FAIL("check failed: %s", #cond);                         \
  } while (0)

#define CHECK_INT(a, b)                                                       \
  do {                                                                        \
    long long kv__a = (long long)(a), kv__b = (long long)(b);                 \
    if (kv__a != kv__b)                                                       \
      KV__FAIL("%s == %lld, expected %s == %lld", #a, kv__a, #b, kv__b);      \
  } while (0)

/* Compares len-delimited bytes exactly. */
#define CHECK_MEM(a, alen, b, blen)                                           \
  do {                                                                        \
    size_t kv__al = (size_t)(alen), kv__bl = (size_t)(blen);                  \
    if (kv__al != kv__bl || memcmp((a), (b), kv__al) != 0)                    \
      KV__FAIL("%s (%zu bytes) differs from %s (%zu bytes): \"%.*s\"", #a,     \
               kv__al, #b, kv__bl, (int)(kv__al > 200 ? 200 : kv__al),        \
               (const char *)(a));                                            \
  } while (0)

#define CHECK_STR(a, b) CHECK_MEM((a), strlen(a), (b), strlen(b))

#ifdef KV_CI_STRICT
#define KV__CI_STRICT 1
#else
#define KV__CI_STRICT 0
#endif

static jmp_buf kv__skip_jmp; /* where KV_SKIP returns to in main */

static inline void kv__skip(const char *file, int line, int strict,
                            const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

static inline void kv__skip(const char *file, int line, int strict,
                            const char *fmt, ...) {
  const char *ci = getenv("CI");
  int fail = strict && ci != NULL && strcmp(ci, "true") == 0;
  va_list ap;
  if (fail) fprintf(stderr, "%s:%d: skipped under CI=true, where this test "
                            "must run: ", file, line);
  else fputs("skipped: ", stdout);
  va_start(ap, fmt);
  vfprintf(fail ? stderr : stdout, fmt, ap);
  va_end(ap);
  fputc('\n', fail ? stderr : stdout);
  fflush(NULL);
  if (fail) exit(1);
  longjmp(kv__skip_jmp, 1);
}

/* Ends the running test as skipped, with a printf-style reason. */
#define KV_SKIP(...) kv__skip(__FILE__, __LINE__, KV__CI_STRICT, __VA_ARGS__)

static int kv__ran, kv__skipped;

int main(int argc, char **argv) {
  for (int i = 0; i < kv_ntests; i++) {
    if (argc > 1 && strcmp(argv[1], kv_tests[i].name) != 0) continue;
    kv__ran++;
    if (setjmp(kv__skip_jmp) != 0) {
      printf("skip %s\n", kv_tests[i].name);
      kv__skipped++;
      continue;
    }
    kv_tests[i].fn();
    printf("ok %s\n", kv_tests[i].name);
  }
  if (kv__ran == 0) {
    fprintf(stderr, "no test called %s\n", argc > 1 ? argv[1] : "(any)");
    return 1;
  }
  return kv__skipped ? KV_SKIP_EXIT : 0;
}

#endif
