/* config.c - kvd's command line.
 *
 * Every error is one line on stderr and exit status 2, before anything is
 * opened, so a typo never starts a server with a setting the user did not
 * ask for.
 */
#include "kv/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kv/error.h"

void kv_config_defaults(kv_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  snprintf(cfg->host, sizeof(cfg->host), "%s", KV_DEFAULT_HOST);
  cfg->port = KV_DEFAULT_PORT;
  snprintf(cfg->data, sizeof(cfg->data), "%s", KV_DEFAULT_DATA);
  cfg->sync = KV_SYNC_ALWAYS;
  cfg->max_value = KV_DEFAULT_MAX_VALUE;
  cfg->max_uri = 8192;
  cfg->max_head = 16384;
  cfg->max_headers = 100;
  cfg->header_timeout_ms = 10000;
  cfg->body_timeout_ms = 30000;
  cfg->idle_timeout_ms = 60000;
}

static void usage(FILE *f) {
  fprintf(f,
    "usage: kvd [options]\n"
    "\n"
    "A durable in-memory key-value server spoken to over HTTP.\n"
    "\n"
    "  --listen HOST:PORT      address to listen on (default %s:%d;\n"
    "                          IPv6 as [::1]:8080; port 0 picks one)\n"
    "  --data DIR              data directory (default %s)\n"
    "  --sync always|none      always: fsync before acknowledging a write\n"
    "                          (default); none: survive a crash of kvd,\n"
    "                          not of the machine\n"
    "  --max-value BYTES       largest value, K/M/G suffixes allowed\n"
    "                          (default 16M)\n"
    "  --max-uri BYTES         longest request target (default 8K)\n"
    "  --max-header-bytes BYTES  largest header section (default 16K)\n"
    "  --max-headers N         most header fields (default 100)\n"
    "  --header-timeout SECS   time to send a request's head (default 10)\n"
    "  --body-timeout SECS     time a body may stall (default 30)\n"
    "  --idle-timeout SECS     idle keep-alive connection (default 60)\n"
    "  --help                  print this help\n"
    "  --version               print the version\n",
    KV_DEFAULT_HOST, KV_DEFAULT_PORT, KV_DEFAULT_DATA);
}

static int fail(const char *opt, const char *why, const char *arg) {
  fprintf(stderr, "kvd: %s: %s, got '%s' (see kvd --help)\n", opt, why, arg);
  return KV_CONFIG_EXIT_USAGE;
}

int kv_config_parse_size(const char *s, size_t *out) {
  char *end;
  unsigned long long v;
  unsigned shift = 0;

  if (*s < '0' || *s > '9') return KV_EINVAL;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0) return KV_EINVAL;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  default: return KV_EINVAL;
  }
  if (*end != '\0' || v == 0 || v > (SIZE_MAX >> shift)) return KV_EINVAL;
  *out = (size_t)(v << shift);
  return 0;
}

/* HOST:PORT, where HOST is a literal address (IPv6 inside brackets). */
static int parse_listen(kv_config_t *cfg, const char *arg) {
  const char *colon, *host = arg;
  size_t hlen;
  char *end;
  long port;
  struct sockaddr_in6 a6;
  struct sockaddr_in a4;

  if (arg[0] == '[') {
    const char *rb = strchr(arg, ']');
    if (!rb || rb[1] != ':') return KV_EINVAL;
    host = arg + 1;
    hlen = (size_t)(rb - host);
    colon = rb + 1;
  } else {
    colon = strchr(arg, ':');
    /* An IPv6 address needs brackets, or its port would be ambiguous. */
    if (!colon || strchr(colon + 1, ':')) return KV_EINVAL;
    hlen = (size_t)(colon - arg);
  }
  if (hlen == 0 || hlen >= sizeof(cfg->host)) return KV_EINVAL;
  memcpy(cfg->host, host, hlen);
  cfg->host[hlen] = '\0';
  if (colon[1] < '0' || colon[1] > '9') return KV_EINVAL;
  errno = 0;
  port = strtol(colon + 1, &end, 10);
  if (errno || *end || port < 0 || port > 65535) return KV_EINVAL;
  cfg->port = (int)port;
  if (uv_ip4_addr(cfg->host, cfg->port, &a4) != 0 &&
      uv_ip6_addr(cfg->host, cfg->port, &a6) != 0)
    return KV_EINVAL;
  return 0;
}

static int parse_seconds(const char *s, unsigned *ms) {
  char *end;
  double v;

  errno = 0;
  v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > 86400)
    return KV_EINVAL;
  *ms = (unsigned)(v * 1000.0 + 0.5);
  return *ms == 0 ? KV_EINVAL : 0;
}

enum {
  OPT_LISTEN = 256, OPT_DATA, OPT_SYNC, OPT_MAX_VALUE, OPT_MAX_URI,
  OPT_MAX_HEAD, OPT_MAX_HEADERS, OPT_HEADER_TIMEOUT, OPT_BODY_TIMEOUT,
  OPT_IDLE_TIMEOUT, OPT_HELP, OPT_VERSION
};

int kv_config_parse(kv_config_t *cfg, int argc, char **argv) {
  static const struct option opts[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"data", required_argument, NULL, OPT_DATA},
    {"sync", required_argument, NULL, OPT_SYNC},
    {"max-value", required_argument, NULL, OPT_MAX_VALUE},
    {"max-uri", required_argument, NULL, OPT_MAX_URI},
    {"max-header-bytes", required_argument, NULL, OPT_MAX_HEAD},
    {"max-headers", required_argument, NULL, OPT_MAX_HEADERS},
    {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
    {"body-timeout", required_argument, NULL, OPT_BODY_TIMEOUT},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0}};
  int c;
  size_t n;

  opterr = 0;
  optind = 0; /* GNU getopt: reinitialise, so parsing can run twice */
  while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
    const char *arg = optarg;
    switch (c) {
    case OPT_LISTEN:
      if (parse_listen(cfg, arg) != 0)
        return fail("--listen", "expected HOST:PORT with a literal address",
                    arg);
      break;
    case OPT_DATA:
      if (arg[0] == '\0' || strlen(arg) >= sizeof(cfg->data))
        return fail("--data", "expected a directory path", arg);
      snprintf(cfg->data, sizeof(cfg->data), "%s", arg);
      break;
    case OPT_SYNC:
      if (strcmp(arg, "always") == 0) cfg->sync = KV_SYNC_ALWAYS;
      else if (strcmp(arg, "none") == 0) cfg->sync = KV_SYNC_NONE;
      else return fail("--sync", "expected always or none", arg);
      break;
    case OPT_MAX_VALUE:
      if (kv_config_parse_size(arg, &cfg->max_value) != 0 ||
          cfg->max_value > UINT32_MAX)
        return fail("--max-value", "expected 1 byte to 4G, like 16M", arg);
      break;
    case OPT_MAX_URI:
      if (kv_config_parse_size(arg, &cfg->max_uri) != 0 ||
          cfg->max_uri < 64 || cfg->max_uri > (1u << 20))
        return fail("--max-uri", "expected 64 to 1M bytes", arg);
      break;
    case OPT_MAX_HEAD:
      if (kv_config_parse_size(arg, &cfg->max_head) != 0 ||
          cfg->max_head < 256 || cfg->max_head > (1u << 20))
        return fail("--max-header-bytes", "expected 256 to 1M bytes", arg);
      break;
    case OPT_MAX_HEADERS:
      if (kv_config_parse_size(arg, &n) != 0 || n > 10000)
        return fail("--max-headers", "expected 1 to 10000", arg);
      cfg->max_headers = (unsigned)n;
      break;
    case OPT_HEADER_TIMEOUT:
      if (parse_seconds(arg, &cfg->header_timeout_ms) != 0)
        return fail("--header-timeout", "expected seconds, like 10", arg);
      break;
    case OPT_BODY_TIMEOUT:
      if (parse_seconds(arg, &cfg->body_timeout_ms) != 0)
        return fail("--body-timeout", "expected seconds, like 30", arg);
      break;
    case OPT_IDLE_TIMEOUT:
      if (parse_seconds(arg, &cfg->idle_timeout_ms) != 0)
        return fail("--idle-timeout", "expected seconds, like 60", arg);
      break;
    case OPT_HELP:
      usage(stdout);
      return KV_CONFIG_EXIT_OK;
    case OPT_VERSION:
      printf("kvd %s\n", KV_VERSION);
      return KV_CONFIG_EXIT_OK;
    case ':':
      fprintf(stderr, "kvd: %s: missing value (see kvd --help)\n",
              argv[optind - 1]);
      return KV_CONFIG_EXIT_USAGE;
    default:
      fprintf(stderr, "kvd: %s: unknown option (see kvd --help)\n",
              argv[optind - 1]);
      return KV_CONFIG_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "kvd: %s: unexpected argument (see kvd --help)\n",
            argv[optind]);
    return KV_CONFIG_EXIT_USAGE;
  }
  return KV_CONFIG_RUN;
}
