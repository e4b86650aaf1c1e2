/* log.c - logging, one line per event.
 *
 * Worker threads log too, so the destination is one descriptor number that
 * never changes once a file is opened: reopening (SIGHUP, after rotation)
 * dup2s the new file onto it.  Closing and reusing numbers instead could
 * let a worker's line land in whatever took the old number meanwhile, a
 * client socket say.  The level and the descriptor are atomic. */
#include "kv/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Atomic int log_level = KV_LOG_INFO;
static _Atomic int log_fd = 2; /* 2, or a file's number for good */

void kv_log_set_level(int level) { log_level = level; }

int kv_log_level(void) { return log_level; }

/* Points our own descriptor (above 2) at fd's file, keeping its number;
 * the first time, fd itself becomes ours.  Takes fd over. */
static int log_point(int fd) {
  int cur = log_fd;

  if (cur <= 2) {
    log_fd = fd;
    return 0;
  }
  if (dup3(fd, cur, O_CLOEXEC) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  close(fd);
  return 0;
}

int kv_log_open(const char *path) {
  int fd;

  if (!path || !*path) {
    /* Back to stderr: our number now writes there too. */
    if (log_fd <= 2) return 0;
    fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
  } else {
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  }
  if (fd < 0) return -errno;
  return log_point(fd);
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
