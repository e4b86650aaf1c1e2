/* config.h - kvd's settings: defaults, the command line and the config
 * file.
 *
 * One table describes every setting.  Each has a long flag (--max-value)
 * and the same name as a key in the config file (max-value = 16M).  The
 * file is read first and flags win over it.  SIGHUP re-reads the file and
 * applies the settings that can change while running.
 */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kv/checkpoint.h"
#include "kv/revlog.h"

#define KV_DEFAULT_HOST "127.0.0.1"
#define KV_DEFAULT_PORT 8080
#define KV_DEFAULT_DATA "./kvd-data"
#define KV_DEFAULT_MAX_VALUE (16u << 20)
#define KV_HISTORY_DEFAULT 1000000
#define KV_TOMB_SECS_DEFAULT 604800
#define KV_TOKEN_MAX 1024

enum { KV_AUTH_WRITES = 0, KV_AUTH_ALL = 1 };

typedef struct {
  char config[4096]; /* the config file, or "" */
  int check_config;  /* validate and exit */

  char host[256];   /* literal IPv4 or IPv6 address */
  int port;         /* 0 picks an ephemeral port */
  char data[4096];  /* data directory */
  kv_sync_t sync;
  size_t map_size;      /* initial LMDB map size; 0: the built-in default */
  unsigned max_readers; /* LMDB reader slots, when kvd creates lock.mdb */
  size_t log_segment;   /* size of new log segments */
  uint64_t history;     /* revisions of exact change history kept */
  uint64_t tomb_secs;   /* seconds a deletion is remembered past that */
  size_t max_value;     /* largest value in bytes */
  size_t max_uri;       /* request target, bytes: 414 above */
  size_t max_head;      /* header section, bytes: 431 above */
  unsigned max_headers; /* header fields: 431 above */
  unsigned max_conns;   /* open connections: 503 above */
  unsigned header_timeout_ms; /* a started request's head: 408 after */
  unsigned body_timeout_ms;   /* no body progress: 408 after */
  unsigned idle_timeout_ms;   /* idle keep-alive connection: closed after */

  char token_file[4096];
  char token[KV_TOKEN_MAX]; /* read from token_file; "" means no auth */
  size_t token_len;
  int auth;     /* KV_AUTH_WRITES or KV_AUTH_ALL */
  int insecure; /* allow a non-loopback address without a token */

  int log_level;
  char log_file[4096]; /* "" is stderr */
  int access_log;
} kv_config_t;

void kv_config_defaults(kv_config_t *cfg);

enum { KV_CONFIG_RUN = 0, KV_CONFIG_EXIT_OK = 1, KV_CONFIG_EXIT_USAGE = 2,
       KV_CONFIG_EXIT_BADFILE = 3 };

/* Fills cfg from defaults, the config file named by --config (if any),
 * and then the flags.  Returns KV_CONFIG_RUN to go on; KV_CONFIG_EXIT_OK
 * after --help, --version or a successful --check-config;
 * KV_CONFIG_EXIT_USAGE after a one-line error about a flag; or
 * KV_CONFIG_EXIT_BADFILE after "kvd: FILE:LINE: message". */
int kv_config_parse(kv_config_t *cfg, int argc, char **argv);

/* Re-reads the config file with the same flags on top (SIGHUP), into
 * next.  Returns 0, or -1 after logging what is wrong. */
int kv_config_reload(int argc, char **argv, kv_config_t *next);

/* Parses a byte count with an optional K, M or G suffix (powers of 1024).
 * Returns 0 or KV_EINVAL for garbage, zero, or overflow. */
int kv_config_parse_size(const char *s, size_t *out);

/* True if host is a loopback address (127.0.0.0/8 or ::1). */
int kv_config_is_loopback(const char *host);

#endif
