/* log.c - logging, one line per event. */
#include "kv/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int log_level = KV_LOG_INFO;
static int log_fd = 2;
static char log_path[4096];

void kv_log_set_level(int level) { log_level = level; }

int kv_log_level(void) { return log_level; }

int kv_log_open(const char *path) {
  int fd;

  if (!path || !*path) {
    if (log_fd > 2) close(log_fd);
    log_fd = 2;
    log_path[0] = '\0';
    return 0;
  }
  fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return -errno;
  if (log_fd > 2) close(log_fd);
  log_fd = fd;
  if (path != log_path) snprintf(log_path, sizeof(log_path), "%s", path);
  return 0;
}

int kv_log_reopen(void) {
  return log_path[0] ? kv_log_open(log_path) : 0;
}

void kv_log(int level, const char *fmt, ...) {
  static const char *const prefix[] = {"error: ", "warning: ", "", "debug: "};
  char line[2048];
  int n, m;
  va_list ap;

  if (level > log_level) return;
  n = snprintf(line, sizeof(line), "kvd: %s", prefix[level & 3]);
  va_start(ap, fmt);
  m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) return;
  n += m;
  if (n > (int)sizeof(line) - 2) n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  /* A short write on a full disk loses a log line, never the server. */
  if (write(log_fd, line, (size_t)n) < 0) {
  }
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
