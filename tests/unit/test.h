/* test.h - a tiny unit-test harness.
 *
 * Each test is declared as  KV_TEST(name, "a sentence that says what it
 * proves")  at the start of a line.  CMake reads those lines and registers
 * one ctest per test, named by its sentence, running  <exe> name.
 * Run the executable with no argument to run every test in it.
 */
#ifndef KV_TEST_H
#define KV_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv) {
  int ran = 0;
  for (int i = 0; i < kv_ntests; i++) {
    if (argc > 1 && strcmp(argv[1], kv_tests[i].name) != 0) continue;
    kv_tests[i].fn();
    printf("ok %s\n", kv_tests[i].name);
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "no test called %s\n", argc > 1 ? argv[1] : "(any)");
    return 1;
  }
  return 0;
}

#endif
