/* config.h - kvd's settings and its command line. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kv/checkpoint.h"

#define KV_DEFAULT_HOST "127.0.0.1"
#define KV_DEFAULT_PORT 8080
#define KV_DEFAULT_DATA "./kvd-data"
#define KV_DEFAULT_MAX_VALUE (16u << 20)

typedef struct {
  char host[256];   /* literal IPv4 or IPv6 address */
  int port;         /* 0 picks an ephemeral port */
  char data[4096];  /* data directory */
  kv_sync_t sync;
  size_t max_value;     /* largest value in bytes */
  size_t max_uri;       /* request target, bytes: 414 above */
  size_t max_head;      /* header section, bytes: 431 above */
  unsigned max_headers; /* header fields: 431 above */
  unsigned header_timeout_ms; /* a started request's head: 408 after */
  unsigned body_timeout_ms;   /* no body progress: 408 after */
  unsigned idle_timeout_ms;   /* idle keep-alive connection: closed after */
} kv_config_t;

void kv_config_defaults(kv_config_t *cfg);

enum { KV_CONFIG_RUN = 0, KV_CONFIG_EXIT_OK = 1, KV_CONFIG_EXIT_USAGE = 2 };

/* Parses argv into cfg.  Returns KV_CONFIG_RUN to go on, KV_CONFIG_EXIT_OK
 * after --help or --version, or KV_CONFIG_EXIT_USAGE after printing a
 * one-line error to stderr. */
int kv_config_parse(kv_config_t *cfg, int argc, char **argv);

/* Parses a byte count with an optional K, M or G suffix (powers of 1024).
 * Returns 0 or KV_EINVAL for garbage, zero, or overflow. */
int kv_config_parse_size(const char *s, size_t *out);

#endif
