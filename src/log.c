/* log.c - stderr logging, one line per event. */
#include "kv/log.h"

#include <stdarg.h>
#include <stdio.h>

static int log_level = KV_LOG_INFO;

void kv_log_set_level(int level) { log_level = level; }

/* The whole line is formatted first and written with one fputs, so lines
 * from different threads never interleave. */
void kv_log(int level, const char *fmt, ...) {
  static const char *const prefix[] = {"error: ", "warning: ", "", "debug: "};
  char line[1024];
  int n;
  va_list ap;

  if (level > log_level) return;
  n = snprintf(line, sizeof(line), "kvd: %s", prefix[level & 3]);
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s\n", line);
}

char *kv_log_escape(char *dst, size_t cap, const char *key, size_t klen) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;

  if (cap == 0) return dst;
  for (size_t i = 0; i < klen && o + 5 < cap; i++) {
    unsigned char ch = (unsigned char)key[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"') {
      dst[o++] = (char)ch;
    } else {
      dst[o++] = '\\';
      dst[o++] = 'x';
      dst[o++] = hex[ch >> 4];
      dst[o++] = hex[ch & 15];
    }
  }
  dst[o] = '\0';
  return dst;
}
