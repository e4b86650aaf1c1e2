/* log.h - one line per event, prefixed "kvd: ", on stderr or in a file.
 *
 * Each line is formatted whole and written with one write(2), so lines from
 * different threads never interleave.  Keys are escaped with kv_log_escape
 * before they reach a line.
 */
#ifndef KV_LOG_H
#define KV_LOG_H

#include <stddef.h>

enum { KV_LOG_ERROR = 0, KV_LOG_WARN = 1, KV_LOG_INFO = 2, KV_LOG_DEBUG = 3 };

void kv_log_set_level(int level);
int kv_log_level(void);

/* Sends the log to path (appending), or back to stderr for NULL or "".
 * Called again with the same path, it reopens the file after rotation.
 * Once a file was opened, the log's descriptor number never changes.
 * Returns 0 or a negative errno; on failure the old destination stays. */
int kv_log_open(const char *path);

void kv_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define kv_log_error(...) kv_log(KV_LOG_ERROR, __VA_ARGS__)
#define kv_log_warn(...) kv_log(KV_LOG_WARN, __VA_ARGS__)
#define kv_log_info(...) kv_log(KV_LOG_INFO, __VA_ARGS__)
#define kv_log_debug(...) kv_log(KV_LOG_DEBUG, __VA_ARGS__)

/* Writes key into dst as printable ASCII (\xNN for everything else, and
 * for backslash and double quote), truncated to fit, always
 * NUL-terminated.  Returns dst. */
char *kv_log_escape(char *dst, size_t cap, const char *key, size_t klen);

#endif
