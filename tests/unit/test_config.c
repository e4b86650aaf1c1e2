/* test_config.c - the command line. */
#include <stdio.h>
#include <unistd.h>

#include "kv/config.h"
#include "kv/error.h"
#include "kv/log.h"
#include "test.h"

/* Parses a NULL-terminated argument list with stderr silenced. */
static int parse(kv_config_t *cfg, const char **args) {
  char *argv[32];
  int argc = 0, saved, rc;

  argv[argc++] = "kvd";
  while (*args) argv[argc++] = (char *)*args++;
  argv[argc] = NULL;
  kv_config_defaults(cfg);
  fflush(stderr);
  saved = dup(2);
  CHECK(freopen("/dev/null", "w", stderr) != NULL);
  rc = kv_config_parse(cfg, argc, argv);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  return rc;
}

KV_TEST(defaults, "no arguments give loopback port 8080 and ./kvd-data with fsync") {
  kv_config_t cfg;
  const char *args[] = {NULL};
  CHECK_INT(parse(&cfg, args), KV_CONFIG_RUN);
  CHECK_STR(cfg.host, "127.0.0.1");
  CHECK_INT(cfg.port, 8080);
  CHECK_STR(cfg.data, "./kvd-data");
  CHECK_INT(cfg.sync, KV_SYNC_ALWAYS);
  CHECK_INT(cfg.max_value, 16 << 20);
}

KV_TEST(listen_forms, "listen takes IPv4 and bracketed IPv6 literals and port 0") {
  kv_config_t cfg;
  const char *a[] = {"--listen", "127.0.0.2:0", NULL};
  const char *b[] = {"--listen", "[::1]:9000", NULL};
  CHECK_INT(parse(&cfg, a), KV_CONFIG_RUN);
  CHECK_STR(cfg.host, "127.0.0.2");
  CHECK_INT(cfg.port, 0);
  CHECK_INT(parse(&cfg, b), KV_CONFIG_RUN);
  CHECK_STR(cfg.host, "::1");
  CHECK_INT(cfg.port, 9000);
}

KV_TEST(listen_bad, "listen rejects names, missing ports and ports above 65535") {
  kv_config_t cfg;
  const char *bad[] = {"localhost:80", "127.0.0.1", "127.0.0.1:", ":80",
                       "127.0.0.1:65536", "127.0.0.1:-1", "[::1]80",
                       "127.0.0.1:80x", "::1:80", NULL};
  for (int i = 0; bad[i]; i++) {
    const char *args[] = {"--listen", bad[i], NULL};
    if (parse(&cfg, args) != KV_CONFIG_EXIT_USAGE)
      KV__FAIL("--listen %s was accepted", bad[i]);
  }
}

KV_TEST(sizes, "sizes accept K M G suffixes in powers of 1024 and refuse zero and garbage") {
  size_t n;
  CHECK_INT(kv_config_parse_size("1024", &n), 0);
  CHECK_INT(n, 1024);
  CHECK_INT(kv_config_parse_size("1K", &n), 0);
  CHECK_INT(n, 1024);
  CHECK_INT(kv_config_parse_size("16m", &n), 0);
  CHECK_INT(n, 16 << 20);
  CHECK_INT(kv_config_parse_size("2G", &n), 0);
  CHECK_INT(n, 2ull << 30);
  CHECK_INT(kv_config_parse_size("0", &n), KV_EINVAL);
  CHECK_INT(kv_config_parse_size("abc", &n), KV_EINVAL);
  CHECK_INT(kv_config_parse_size("-5", &n), KV_EINVAL);
  CHECK_INT(kv_config_parse_size("5KB", &n), KV_EINVAL);
  CHECK_INT(kv_config_parse_size("", &n), KV_EINVAL);
  CHECK_INT(kv_config_parse_size("99999999999999999999", &n), KV_EINVAL);
  CHECK_INT(kv_config_parse_size("17179869184G", &n), KV_EINVAL);
}

KV_TEST(bad_values, "invalid values unknown flags and missing values are usage errors") {
  kv_config_t cfg;
  const char *cases[][3] = {
      {"--sync", "sometimes", NULL}, {"--max-value", "abc", NULL},
      {"--max-value", "0", NULL},    {"--max-value", "5G", NULL},
      {"--bogus", NULL, NULL},       {"--sync", NULL, NULL},
      {"stray", NULL, NULL},         {"--header-timeout", "0", NULL},
      {"--idle-timeout", "x", NULL}, {"--max-headers", "0", NULL}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (parse(&cfg, cases[i]) != KV_CONFIG_EXIT_USAGE)
      KV__FAIL("case %zu (%s) was accepted", i, cases[i][0]);
  }
}

KV_TEST(all_flags, "every flag sets its setting and timeouts take fractional seconds") {
  kv_config_t cfg;
  const char *args[] = {"--data", "/tmp/x", "--sync", "none",
                        "--max-value", "1K", "--max-uri", "1K",
                        "--max-header-bytes", "2K", "--max-headers", "7",
                        "--header-timeout", "0.5", "--body-timeout", "2",
                        "--idle-timeout", "3", NULL};
  CHECK_INT(parse(&cfg, args), KV_CONFIG_RUN);
  CHECK_STR(cfg.data, "/tmp/x");
  CHECK_INT(cfg.sync, KV_SYNC_NONE);
  CHECK_INT(cfg.max_value, 1024);
  CHECK_INT(cfg.max_uri, 1024);
  CHECK_INT(cfg.max_head, 2048);
  CHECK_INT(cfg.max_headers, 7);
  CHECK_INT(cfg.header_timeout_ms, 500);
  CHECK_INT(cfg.body_timeout_ms, 2000);
  CHECK_INT(cfg.idle_timeout_ms, 3000);
}

KV_TEST(help_version, "help and version ask to exit successfully") {
  kv_config_t cfg;
  const char *h[] = {"--help", NULL};
  const char *v[] = {"--version", NULL};
  FILE *saved = stdout;
  stdout = fopen("/dev/null", "w");
  CHECK_INT(parse(&cfg, h), KV_CONFIG_EXIT_OK);
  CHECK_INT(parse(&cfg, v), KV_CONFIG_EXIT_OK);
  fclose(stdout);
  stdout = saved;
}

KV_TEST(errors_table, "every error code has a message and an HTTP status") {
  CHECK_STR(kv_strerror(KV_ENOTFOUND), "key not found");
  CHECK_INT(kv_err_status(KV_ENOTFOUND), 404);
  CHECK_INT(kv_err_status(KV_ETOOBIG), 413);
  CHECK_INT(kv_err_status(KV_ENOSPACE), 507);
  CHECK_INT(kv_err_status(KV_EHEADERS), 431);
  CHECK_INT(kv_err_status(12345), 500);
  CHECK_STR(kv_status_reason(507), "Insufficient Storage");
  CHECK_STR(kv_strerror(12345), "unknown error");
}

/* Reads a whole small file into buf. */
static void slurp(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  size_t n;

  CHECK(f != NULL);
  n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
}

KV_TEST(reload_reports_to_log, "a reload reports a bad config file line to the log and prints nothing, not even for --help") {
  char dir[] = "/tmp/kvd-config.XXXXXX", conf[128], log[128], buf[4096];
  char *bad[] = {"kvd", "--config", conf, NULL};
  char *help[] = {"kvd", "--help", NULL};
  kv_config_t next;
  FILE *f, *saved = stdout;

  CHECK(mkdtemp(dir) != NULL);
  snprintf(conf, sizeof(conf), "%s/kvd.conf", dir);
  snprintf(log, sizeof(log), "%s/kvd.log", dir);
  f = fopen(conf, "w");
  CHECK(f != NULL);
  fputs("# a comment\nbogus = 1\n", f);
  fclose(f);
  CHECK_INT(kv_log_open(log), 0);
  stdout = fopen(log, "a"); /* anything printed would land in the log */
  CHECK(stdout != NULL);
  CHECK_INT(kv_config_reload(3, bad, &next), -1);
  CHECK_INT(kv_config_reload(2, help, &next), -1);
  fclose(stdout);
  stdout = saved;
  CHECK_INT(kv_log_open(NULL), 0);
  slurp(log, buf, sizeof(buf));
  CHECK(strstr(buf, "kvd: error: ") != NULL);
  CHECK(strstr(buf, "kvd.conf:2: unknown setting 'bogus'") != NULL);
  CHECK(strstr(buf, "usage") == NULL);
  CHECK(strchr(buf, '\n') == strrchr(buf, '\n')); /* that line alone */
  remove(conf);
  remove(log);
  rmdir(dir);
}
