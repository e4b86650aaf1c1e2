/* log.h - one line per event on stderr, prefixed "kvd: ". */
#ifndef KV_LOG_H
#define KV_LOG_H

#include <stddef.h>

enum { KV_LOG_ERROR = 0, KV_LOG_WARN = 1, KV_LOG_INFO = 2, KV_LOG_DEBUG = 3 };

void kv_log_set_level(int level);

void kv_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define kv_log_error(...) kv_log(KV_LOG_ERROR, __VA_ARGS__)
#define kv_log_warn(...) kv_log(KV_LOG_WARN, __VA_ARGS__)
#define kv_log_info(...) kv_log(KV_LOG_INFO, __VA_ARGS__)

/* Writes key into dst as printable ASCII (C-style escapes for everything
 * else), truncated to fit, always NUL-terminated.  Keys never reach a log
 * unescaped.  Returns dst. */
char *kv_log_escape(char *dst, size_t cap, const char *key, size_t klen);

#endif
