/* config.c - kvd's settings, from the command line and the config file.
 *
 * One table lists every setting once: its name is both the long flag and
 * the config-file key, and one setter validates it for both.  Flags are
 * collected first, the file is applied, then the flags on top, so a flag
 * always wins.  A bad flag is one line on stderr and exit status 2; a bad
 * file line is "kvd: FILE:LINE: message" and status 1.
 */
#include "kv/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "kv/error.h"
#include "kv/log.h"

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
  cfg->max_conns = 10000;
  cfg->max_readers = KV_CKPT_READERS;
  cfg->log_segment = KV_REVLOG_SEGMENT;
  cfg->history = KV_HISTORY_DEFAULT;
  cfg->tomb_secs = KV_TOMB_SECS_DEFAULT;
  cfg->header_timeout_ms = 10000;
  cfg->body_timeout_ms = 30000;
  cfg->idle_timeout_ms = 60000;
  cfg->auth = KV_AUTH_WRITES;
  cfg->log_level = KV_LOG_INFO;
}

static void usage(FILE *f) {
  fprintf(f,
    "usage: kvd [options]\n"
    "\n"
    "A durable in-memory key-value server spoken to over HTTP.\n"
    "\n"
    "  --config FILE           read settings from FILE (key = value lines;\n"
    "                          the keys are these flags' names)\n"
    "  --check-config          validate the settings and exit\n"
    "  --listen HOST:PORT      address to listen on (default %s:%d;\n"
    "                          IPv6 as [::1]:8080; port 0 picks one)\n"
    "  --data DIR              data directory (default %s)\n"
    "  --sync always|none      always: fsync before acknowledging a write\n"
    "                          (default); none: survive a crash of kvd,\n"
    "                          not of the machine\n"
    "  --map-size BYTES        initial LMDB map size; it grows as needed\n"
    "  --max-readers N         LMDB reader slots: concurrent kvdump runs and\n"
    "                          image builds (default %u)\n"
    "  --log-segment BYTES     size of each revision log segment (default 64M)\n"
    "  --history N             revisions the change feed replays exactly\n"
    "                          (default 1000000)\n"
    "  --tombstone-retention SECS  how long a deletion older than the exact\n"
    "                          history is remembered (default 604800)\n"
    "  --max-value BYTES       largest value, K/M/G suffixes (default 16M)\n"
    "  --max-uri BYTES         longest request target (default 8K)\n"
    "  --max-header-bytes BYTES  largest header section (default 16K)\n"
    "  --max-headers N         most header fields (default 100)\n"
    "  --max-connections N     most open connections (default 10000)\n"
    "  --header-timeout SECS   time to send a request's head (default 10)\n"
    "  --body-timeout SECS     time a body may stall (default 30)\n"
    "  --idle-timeout SECS     idle keep-alive connection (default 60)\n"
    "  --token-file FILE       require this bearer token (see --auth)\n"
    "  --auth writes|all       what the token protects (default writes)\n"
    "  --insecure              allow a non-loopback address without a "
    "token\n"
    "  --log-level LEVEL       error, warn, info (default) or debug\n"
    "  --log-file FILE         log there instead of stderr (SIGHUP reopens)\n"
    "  --access-log true|false one line per request (default false)\n"
    "  --help                  print this help\n"
    "  --version               print the version\n",
    KV_DEFAULT_HOST, KV_DEFAULT_PORT, KV_DEFAULT_DATA, KV_CKPT_READERS);
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

int kv_config_is_loopback(const char *host) {
  struct in_addr a4;
  struct in6_addr a6;

  if (inet_pton(AF_INET, host, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return 0;
}

/* ---- setters: each returns NULL, or what was expected ------------------- */

/* HOST:PORT, where HOST is a literal address (IPv6 inside brackets). */
static const char *set_listen(kv_config_t *cfg, const char *arg) {
  static const char *why = "expected HOST:PORT with a literal address";
  const char *host = arg;
  const char *colon;
  size_t hlen;
  char *end;
  long port;
  struct sockaddr_in6 a6;
  struct sockaddr_in a4;

  if (arg[0] == '[') {
    const char *rb = strchr(arg, ']');
    if (rb == NULL || rb[1] != ':') return why;
    host = arg + 1;
    hlen = (size_t)(rb - host);
    colon = rb + 1;
  } else {
    colon = strchr(arg, ':');
    /* An IPv6 address needs brackets, or its port would be ambiguous. */
    if (colon == NULL || strchr(colon + 1, ':') != NULL) return why;
    hlen = (size_t)(colon - arg);
  }
  if (hlen == 0 || hlen >= sizeof(cfg->host)) return why;
  if (colon[1] < '0' || colon[1] > '9') return why;
  errno = 0;
  port = strtol(colon + 1, &end, 10);
  if (errno != 0 || *end != '\0' || port < 0 || port > 65535) return why;
  memcpy(cfg->host, host, hlen);
  cfg->host[hlen] = '\0';
  cfg->port = (int)port;
  if (uv_ip4_addr(cfg->host, cfg->port, &a4) != 0 &&
      uv_ip6_addr(cfg->host, cfg->port, &a6) != 0)
    return why;
  return NULL;
}

static const char *set_path(char *dst, size_t cap, const char *arg) {
  if (arg[0] == '\0' || strlen(arg) >= cap) return "expected a path";
  snprintf(dst, cap, "%s", arg);
  return NULL;
}

static const char *set_data(kv_config_t *cfg, const char *arg) {
  return set_path(cfg->data, sizeof(cfg->data), arg);
}

static const char *set_sync(kv_config_t *cfg, const char *arg) {
  if (strcmp(arg, "always") == 0) cfg->sync = KV_SYNC_ALWAYS;
  else if (strcmp(arg, "none") == 0) cfg->sync = KV_SYNC_NONE;
  else return "expected always or none";
  return NULL;
}

static const char *size_in(size_t *dst, const char *arg, size_t lo,
                           size_t hi, const char *why) {
  size_t n;
  if (kv_config_parse_size(arg, &n) != 0 || n < lo || n > hi) return why;
  *dst = n;
  return NULL;
}

static const char *set_map_size(kv_config_t *cfg, const char *arg) {
  return size_in(&cfg->map_size, arg, 4096, SIZE_MAX,
                 "expected a size of at least 4K, like 1G");
}

static const char *set_max_readers(kv_config_t *cfg, const char *arg) {
  size_t n;
  const char *why = size_in(&n, arg, 2, 65536, "expected 2 to 65536");
  if (why == NULL) cfg->max_readers = (unsigned)n;
  return why;
}

/* A whole number from 0 to max, digits only (0 is meaningful here). */
static const char *count_in(uint64_t *dst, const char *arg, uint64_t max,
                            const char *why) {
  char *end;
  unsigned long long v;

  if (*arg < '0' || *arg > '9') return why;
  errno = 0;
  v = strtoull(arg, &end, 10);
  if (errno != 0 || *end != '\0' || v > max) return why;
  *dst = v;
  return NULL;
}

static const char *set_history(kv_config_t *cfg, const char *arg) {
  return count_in(&cfg->history, arg, UINT64_C(1) << 40,
                  "expected a number of revisions, like 1000000");
}

static const char *set_tomb_secs(kv_config_t *cfg, const char *arg) {
  return count_in(&cfg->tomb_secs, arg, 315360000,
                  "expected seconds from 0 to 315360000");
}

static const char *set_log_segment(kv_config_t *cfg, const char *arg) {
  return size_in(&cfg->log_segment, arg, 64 << 10, (size_t)1 << 30,
                 "expected 64K to 1G, like 64M");
}

static const char *set_max_value(kv_config_t *cfg, const char *arg) {
  return size_in(&cfg->max_value, arg, 1, UINT32_MAX,
                 "expected 1 byte to 4G, like 16M");
}

static const char *set_max_uri(kv_config_t *cfg, const char *arg) {
  return size_in(&cfg->max_uri, arg, 64, 1u << 20,
                 "expected 64 to 1M bytes");
}

static const char *set_max_head(kv_config_t *cfg, const char *arg) {
  return size_in(&cfg->max_head, arg, 256, 1u << 20,
                 "expected 256 to 1M bytes");
}

static const char *set_max_headers(kv_config_t *cfg, const char *arg) {
  size_t n;
  const char *why = size_in(&n, arg, 1, 10000, "expected 1 to 10000");
  if (why == NULL) cfg->max_headers = (unsigned)n;
  return why;
}

static const char *set_max_conns(kv_config_t *cfg, const char *arg) {
  size_t n;
  const char *why = size_in(&n, arg, 1, 1000000, "expected 1 to 1000000");
  if (why == NULL) cfg->max_conns = (unsigned)n;
  return why;
}

static const char *seconds(unsigned *ms, const char *arg) {
  char *end;
  double v;

  errno = 0;
  v = strtod(arg, &end);
  if (errno != 0 || end == arg || *end != '\0' || !isfinite(v) || v < 0.001 ||
      v > 86400)
    return "expected seconds, like 10 or 0.5";
  *ms = (unsigned)(v * 1000.0 + 0.5);
  return NULL;
}

static const char *set_header_timeout(kv_config_t *cfg, const char *arg) {
  return seconds(&cfg->header_timeout_ms, arg);
}

static const char *set_body_timeout(kv_config_t *cfg, const char *arg) {
  return seconds(&cfg->body_timeout_ms, arg);
}

static const char *set_idle_timeout(kv_config_t *cfg, const char *arg) {
  return seconds(&cfg->idle_timeout_ms, arg);
}

static const char *set_token_file(kv_config_t *cfg, const char *arg) {
  return set_path(cfg->token_file, sizeof(cfg->token_file), arg);
}

static const char *set_auth(kv_config_t *cfg, const char *arg) {
  if (strcmp(arg, "writes") == 0) cfg->auth = KV_AUTH_WRITES;
  else if (strcmp(arg, "all") == 0) cfg->auth = KV_AUTH_ALL;
  else return "expected writes or all";
  return NULL;
}

static const char *boolean(int *dst, const char *arg) {
  if (strcasecmp(arg, "true") == 0 || strcasecmp(arg, "yes") == 0 ||
      strcasecmp(arg, "on") == 0 || strcmp(arg, "1") == 0)
    *dst = 1;
  else if (strcasecmp(arg, "false") == 0 || strcasecmp(arg, "no") == 0 ||
           strcasecmp(arg, "off") == 0 || strcmp(arg, "0") == 0)
    *dst = 0;
  else
    return "expected true or false";
  return NULL;
}

static const char *set_insecure(kv_config_t *cfg, const char *arg) {
  return boolean(&cfg->insecure, arg);
}

static const char *set_access_log(kv_config_t *cfg, const char *arg) {
  return boolean(&cfg->access_log, arg);
}

static const char *set_log_level(kv_config_t *cfg, const char *arg) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++) {
    if (strcmp(arg, names[i]) == 0) {
      cfg->log_level = i;
      return NULL;
    }
  }
  return "expected error, warn, info or debug";
}

static const char *set_log_file(kv_config_t *cfg, const char *arg) {
  return set_path(cfg->log_file, sizeof(cfg->log_file), arg);
}

/* ---- the table ---------------------------------------------------------- */

typedef const char *(*setter_fn)(kv_config_t *cfg, const char *arg);

enum { ARG_REQUIRED = 1, ARG_FLAG = 2 }; /* ARG_FLAG: "--x" means x = true */

static const struct setting {
  const char *name;
  int arg;
  setter_fn set;
} settings[] = {
  {"listen", ARG_REQUIRED, set_listen},
  {"data", ARG_REQUIRED, set_data},
  {"sync", ARG_REQUIRED, set_sync},
  {"map-size", ARG_REQUIRED, set_map_size},
  {"max-readers", ARG_REQUIRED, set_max_readers},
  {"log-segment", ARG_REQUIRED, set_log_segment},
  {"history", ARG_REQUIRED, set_history},
  {"tombstone-retention", ARG_REQUIRED, set_tomb_secs},
  {"max-value", ARG_REQUIRED, set_max_value},
  {"max-uri", ARG_REQUIRED, set_max_uri},
  {"max-header-bytes", ARG_REQUIRED, set_max_head},
  {"max-headers", ARG_REQUIRED, set_max_headers},
  {"max-connections", ARG_REQUIRED, set_max_conns},
  {"header-timeout", ARG_REQUIRED, set_header_timeout},
  {"body-timeout", ARG_REQUIRED, set_body_timeout},
  {"idle-timeout", ARG_REQUIRED, set_idle_timeout},
  {"token-file", ARG_REQUIRED, set_token_file},
  {"auth", ARG_REQUIRED, set_auth},
  {"insecure", ARG_FLAG, set_insecure},
  {"log-level", ARG_REQUIRED, set_log_level},
  {"log-file", ARG_REQUIRED, set_log_file},
  {"access-log", ARG_REQUIRED, set_access_log},
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

enum { OPT_CONFIG = 1000, OPT_CHECK, OPT_HELP, OPT_VERSION };

/* Where a parse reports: each error as one line, and the output of --help,
 * --version and --check-config.  At startup errors go to stderr; on SIGHUP
 * they go to the log and nothing is printed. */
typedef struct {
  void (*error)(const char *line);
  FILE *out; /* NULL: print nothing */
} reporter_t;

static void error_to_stderr(const char *line) {
  fprintf(stderr, "kvd: %s\n", line);
}

static void error_to_log(const char *line) { kv_log_error("%s", line); }

static const reporter_t to_log = {error_to_log, NULL};

static void report(const reporter_t *rep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void report(const reporter_t *rep, const char *fmt, ...) {
  char line[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  rep->error(line);
}

static char *trim(char *s) {
  char *e;
  while (*s == ' ' || *s == '\t') s++;
  e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
                   e[-1] == '\n'))
    *--e = '\0';
  return s;
}

/* Applies the config file.  Returns 0 or -1 after reporting
 * "FILE:LINE: message". */
static int apply_file(kv_config_t *cfg, const char *path,
                      const reporter_t *rep) {
  FILE *f = fopen(path, "r");
  char buf[8192];
  int lineno = 0;
  int rc = 0;

  if (f == NULL) {
    report(rep, "%s: cannot read: %s", path, strerror(errno));
    return -1;
  }
  while (fgets(buf, sizeof(buf), f) != NULL) {
    char *line = trim(buf), *eq, *key, *val;
    const struct setting *st = NULL;
    const char *why;
    size_t n;

    lineno++;
    if (*line == '\0' || *line == '#') continue;
    eq = strchr(line, '=');
    if (eq == NULL) {
      report(rep, "%s:%d: expected 'key = value'", path, lineno);
      rc = -1;
      break;
    }
    *eq = '\0';
    key = trim(line);
    val = trim(eq + 1);
    n = strlen(val);
    if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
      val[n - 1] = '\0';
      val++;
    }
    for (size_t i = 0; i < NSETTINGS; i++)
      if (strcmp(settings[i].name, key) == 0) st = &settings[i];
    if (st == NULL) {
      report(rep, "%s:%d: unknown setting '%s'", path, lineno, key);
      rc = -1;
      break;
    }
    if ((why = st->set(cfg, val)) != NULL) {
      report(rep, "%s:%d: %s: %s, got '%s'", path, lineno, key, why, val);
      rc = -1;
      break;
    }
  }
  if (rc == 0 && ferror(f)) {
    report(rep, "%s: cannot read: %s", path, strerror(errno));
    rc = -1;
  }
  fclose(f);
  return rc;
}

/* Reads the token; a trailing newline is not part of it. */
static int load_token(kv_config_t *cfg, const reporter_t *rep) {
  int fd;
  ssize_t n;
  char buf[KV_TOKEN_MAX + 2];

  cfg->token_len = 0;
  cfg->token[0] = '\0';
  if (cfg->token_file[0] == '\0') return 0;
  fd = open(cfg->token_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    report(rep, "--token-file: %s: %s", cfg->token_file, strerror(errno));
    return -1;
  }
  n = read(fd, buf, sizeof(buf));
  close(fd);
  if (n < 0) {
    report(rep, "--token-file: %s: %s", cfg->token_file, strerror(errno));
    return -1;
  }
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  if (n == 0 || n > KV_TOKEN_MAX - 1) {
    report(rep, "--token-file: %s: expected a token of 1 to %d bytes",
           cfg->token_file, KV_TOKEN_MAX - 1);
    return -1;
  }
  for (ssize_t i = 0; i < n; i++) {
    if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
      report(rep, "--token-file: %s: the token must be printable ASCII "
             "without spaces", cfg->token_file);
      return -1;
    }
  }
  memcpy(cfg->token, buf, (size_t)n);
  cfg->token[n] = '\0';
  cfg->token_len = (size_t)n;
  return 0;
}

typedef struct {
  int idx;
  const char *arg;
} flag_t;

/* Fills opts with every setting's flag and the four flags of their own;
 * opts needs NOPTS entries.  Each setting's val is its index in the
 * table. */
#define NOPTS (NSETTINGS + 5)

static void options_init(struct option *opts) {
  for (size_t i = 0; i < NSETTINGS; i++) {
    opts[i].name = settings[i].name;
    opts[i].has_arg = settings[i].arg == ARG_FLAG ? no_argument
                                                  : required_argument;
    opts[i].flag = NULL;
    opts[i].val = (int)i;
  }
  opts[NSETTINGS] = (struct option){"config", required_argument, NULL,
                                    OPT_CONFIG};
  opts[NSETTINGS + 1] = (struct option){"check-config", no_argument, NULL,
                                        OPT_CHECK};
  opts[NSETTINGS + 2] = (struct option){"help", no_argument, NULL, OPT_HELP};
  opts[NSETTINGS + 3] = (struct option){"version", no_argument, NULL,
                                        OPT_VERSION};
  opts[NSETTINGS + 4] = (struct option){NULL, 0, NULL, 0};
}

/* Acts on a flag that is not a setting (getopt's c).  Returns
 * KV_CONFIG_RUN to go on, or how the parse ends. */
static int other_flag(kv_config_t *cfg, int c, char **argv,
                      const reporter_t *rep) {
  switch (c) {
  case OPT_CONFIG:
    if (set_path(cfg->config, sizeof(cfg->config), optarg) != NULL) {
      report(rep, "--config: expected a path");
      return KV_CONFIG_EXIT_USAGE;
    }
    return KV_CONFIG_RUN;
  case OPT_CHECK:
    cfg->check_config = 1;
    return KV_CONFIG_RUN;
  case OPT_HELP:
    if (rep->out != NULL) usage(rep->out);
    return KV_CONFIG_EXIT_OK;
  case OPT_VERSION:
    if (rep->out != NULL) fprintf(rep->out, "kvd %s\n", KV_VERSION);
    return KV_CONFIG_EXIT_OK;
  case ':':
    report(rep, "%s: missing value (see kvd --help)", argv[optind - 1]);
    return KV_CONFIG_EXIT_USAGE;
  default:
    report(rep, "%s: unknown option (see kvd --help)", argv[optind - 1]);
    return KV_CONFIG_EXIT_USAGE;
  }
}

/* Reads the command line: settings are collected into flags (applied
 * after the file, so they win), the other flags act at once.  Returns
 * KV_CONFIG_RUN, or how the parse ends. */
static int read_flags(kv_config_t *cfg, int argc, char **argv,
                      flag_t *flags, size_t *nflags, const reporter_t *rep) {
  struct option opts[NOPTS];
  int c, rc;

  options_init(opts);
  opterr = 0;
  optind = 0; /* GNU getopt: reinitialise, so parsing can run twice */
  while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
    if (c >= 0 && c < (int)NSETTINGS) {
      flags[*nflags].idx = c;
      flags[*nflags].arg = optarg != NULL ? optarg : "true";
      (*nflags)++;
      continue;
    }
    rc = other_flag(cfg, c, argv, rep);
    if (rc != KV_CONFIG_RUN) return rc;
  }
  if (optind < argc) {
    report(rep, "%s: unexpected argument (see kvd --help)", argv[optind]);
    return KV_CONFIG_EXIT_USAGE;
  }
  return KV_CONFIG_RUN;
}

/* Applies the settings given as flags, in order.  Returns KV_CONFIG_RUN
 * or KV_CONFIG_EXIT_USAGE after reporting the first bad one. */
static int apply_flags(kv_config_t *cfg, const flag_t *flags, size_t nflags,
                       const reporter_t *rep) {
  for (size_t i = 0; i < nflags; i++) {
    const struct setting *st = &settings[flags[i].idx];
    const char *why = st->set(cfg, flags[i].arg);
    if (why != NULL) {
      report(rep, "--%s: %s, got '%s' (see kvd --help)", st->name, why,
             flags[i].arg);
      return KV_CONFIG_EXIT_USAGE;
    }
  }
  return KV_CONFIG_RUN;
}

/* The whole parse into cfg, which holds the defaults: the command line,
 * then the file, then the settings given as flags, then the token. */
static int parse(kv_config_t *cfg, int argc, char **argv,
                 const reporter_t *rep) {
  flag_t *flags;
  size_t nflags = 0;
  int rc;

  flags = calloc((size_t)argc + 1, sizeof(*flags));
  if (flags == NULL) {
    report(rep, "out of memory");
    return KV_CONFIG_EXIT_USAGE;
  }
  rc = read_flags(cfg, argc, argv, flags, &nflags, rep);
  if (rc != KV_CONFIG_RUN) goto out;
  if (cfg->config[0] != '\0' && apply_file(cfg, cfg->config, rep) != 0) {
    rc = KV_CONFIG_EXIT_BADFILE;
    goto out;
  }
  rc = apply_flags(cfg, flags, nflags, rep);
  if (rc != KV_CONFIG_RUN) goto out;
  if (load_token(cfg, rep) != 0) {
    rc = KV_CONFIG_EXIT_USAGE;
    goto out;
  }
  if (cfg->check_config) {
    if (rep->out != NULL)
      fprintf(rep->out, "kvd: %s: configuration ok\n",
              cfg->config[0] != '\0' ? cfg->config : "(no config file)");
    rc = KV_CONFIG_EXIT_OK;
  }
out:
  free(flags);
  return rc;
}

int kv_config_parse(kv_config_t *cfg, int argc, char **argv) {
  reporter_t rep = {error_to_stderr, stdout};

  kv_config_defaults(cfg);
  return parse(cfg, argc, argv, &rep);
}

int kv_config_reload(int argc, char **argv, kv_config_t *next) {
  kv_config_defaults(next);
  return parse(next, argc, argv, &to_log) == KV_CONFIG_RUN ? 0 : -1;
}
