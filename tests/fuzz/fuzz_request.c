/* fuzz_request.c - the whole request path: bytes in, through llhttp, the
 * router and the handlers over a real store, to response bytes out.
 *
 * One kvd server (with --sync none, in a temporary directory) lives for the
 * whole run.  Each input is written into one end of a socketpair whose
 * other end the server adopts as a client connection, then the write side
 * is shut down and the loop runs until the server closes the connection.
 * Whatever comes back must be a well-formed sequence of HTTP/1.1
 * responses, each with a known status and an exact Content-Length; any
 * crash, sanitizer report, hang or malformed answer is a finding.
 *
 * An input's outcome should not depend on the inputs before it: the
 * socket buffers are small, so every input that gets more than a few KiB
 * back meets back-pressure (not only those after the image has grown),
 * and the metrics start from zero.  The store's contents do carry over.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kv/log.h"
#include "kv/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT (256 * 1024)
#define FUZZ_MAX_OUTPUT (64 * 1024 * 1024)
#define FUZZ_MAX_TURNS 100000
#define FUZZ_SOCK_BUF 4096 /* SO_SNDBUF and SO_RCVBUF of both ends */

static kv_server_t *srv;
static char dir[64];

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void cleanup(void) {
  if (dir[0]) nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void setup(void) {
  char err[512];

  snprintf(dir, sizeof(dir), "/tmp/kvd-fuzz.XXXXXX");
  if (!mkdtemp(dir)) abort();
  atexit(cleanup);
  srv = calloc(1, sizeof(*srv));
  if (!srv) abort();
  kv_config_defaults(&srv->cfg);
  snprintf(srv->cfg.data, sizeof(srv->cfg.data), "%s/data", dir);
  srv->cfg.sync = KV_SYNC_NONE;
  srv->cfg.max_value = 64 * 1024; /* small, so 413 paths are reachable */
  srv->cfg.max_uri = 2048;
  srv->cfg.max_head = 4096;
  srv->cfg.max_headers = 32;
  kv_log_set_level(KV_LOG_ERROR);
  if (kv_server_open(srv, uv_default_loop(), err, sizeof(err)) != 0) {
    fprintf(stderr, "fuzz_request: %s\n", err);
    abort();
  }
}

/* Drains what the server wrote so far into out. */
static void drain(int fd, char **out, size_t *len, size_t *cap) {
  for (;;) {
    ssize_t n;
    if (*cap - *len < 65536) {
      *cap = *cap * 2 + 65536;
      if (*cap > FUZZ_MAX_OUTPUT || !(*out = realloc(*out, *cap))) abort();
    }
    n = read(fd, *out + *len, *cap - *len);
    if (n <= 0) return;
    *len += (size_t)n;
  }
}

static size_t find(const char *p, size_t len, const char *pat) {
  size_t pl = strlen(pat);
  for (size_t i = 0; i + pl <= len; i++)
    if (memcmp(p + i, pat, pl) == 0) return i;
  return (size_t)-1;
}

static int is_head_of_answer(const char *p, size_t len) {
  return len >= 9 && memcmp(p, "HTTP/1.1 ", 9) == 0;
}

/* Skips a chunked body at p (rest bytes).  A change feed's stream may be
 * cut by the client's close: returns the bytes it takes, or rest when the
 * output ends inside it; aborts on a malformed chunk. */
static size_t skip_chunked(const char *p, size_t rest) {
  size_t off = 0;

  /* The answer to HEAD: no body, the next answer follows. */
  if (is_head_of_answer(p, rest)) return 0;
  for (;;) {
    size_t eol = find(p + off, rest - off, "\r\n"), n;
    char *end;
    if (eol == (size_t)-1) return rest; /* cut inside a size line */
    n = strtoull(p + off, &end, 16);
    if (end != p + off + eol || eol == 0) abort();
    off += eol + 2;
    if (n > rest - off) return rest; /* cut inside a chunk */
    off += n;
    if (rest - off < 2) return rest;
    if (memcmp(p + off, "\r\n", 2) != 0) abort();
    off += 2;
    if (n == 0) return off;
  }
}

/* Checks that out is a sequence of complete HTTP/1.1 responses.  Bodies
 * are framed by Content-Length; 1xx, 204 and answers to HEAD have none; a
 * change feed's is chunked, or runs to the close (HTTP/1.0). */
static void check_output(const char *out, size_t len) {
  size_t off = 0;

  while (off < len) {
    const char *p = out + off;
    size_t rest = len - off, end, clen = 0;
    int status, has_len = 0, chunked = 0, closes = 0;
    char line[64];

    if (rest < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0) abort();
    status = atoi(p + 9);
    if (status < 100 || status > 599) abort();
    end = find(p, rest, "\r\n\r\n");
    if (end == (size_t)-1) abort(); /* a torn head */
    for (size_t i = 0; i < end; i++) {
      if (i + 18 <= end && memcmp(p + i, "\r\nContent-Length: ", 18) == 0) {
        size_t j = i + 18, k = 0;
        while (j < end && p[j] >= '0' && p[j] <= '9' && k < sizeof(line) - 1)
          line[k++] = p[j++];
        line[k] = '\0';
        clen = strtoull(line, NULL, 10);
        has_len = 1;
      }
      if (i + 28 <= end &&
          memcmp(p + i, "\r\nTransfer-Encoding: chunked", 28) == 0)
        chunked = 1;
      if (i + 19 <= end && memcmp(p + i, "\r\nConnection: close", 19) == 0)
        closes = 1;
    }
    off += end + 4;
    if (chunked && has_len) abort(); /* RFC 9112 6.3: never both */
    if (chunked) {
      off += skip_chunked(out + off, len - off);
      continue;
    }
    /* A stream that ends at the close is the last answer. */
    if (!has_len && closes && status == 200) return;
    if (status < 200 || status == 204) {
      if (has_len) abort(); /* RFC 9110: never with 1xx or 204 */
      continue;
    }
    if (!has_len) abort(); /* every other kvd answer has one */
    /* The answer to HEAD carries the GET body's length but no body; the
     * checker does not know which request came, so it accepts either
     * framing when the next answer (or the end) confirms it. */
    if (clen <= len - off &&
        (off + clen == len || is_head_of_answer(out + off + clen,
                                                len - off - clen)))
      off += clen;
    else if (!(off == len || is_head_of_answer(out + off, len - off)))
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2], turns = 0;
  char *out = NULL;
  size_t len = 0, cap = 0, sent = 0;

  if (!srv) setup();
  if (size > FUZZ_MAX_INPUT) return 0;
  kv_metrics_init(&srv->metrics);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  for (int i = 0; i < 2; i++) {
    int b = FUZZ_SOCK_BUF;
    if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &b, sizeof(b)) != 0 ||
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &b, sizeof(b)) != 0)
      abort();
  }
  if (fcntl(sv[1], F_SETFL, O_NONBLOCK) != 0) abort();
  if (kv_conn_adopt(&srv->env, sv[0]) != 0) abort();
  /* Feed the input as the socket takes it, reading answers meanwhile so
   * neither side blocks; then half-close, as a client that is done. */
  while (srv->env.nconns > 0 && turns++ < FUZZ_MAX_TURNS) {
    if (sent < size) {
      ssize_t n = write(sv[1], data + sent, size - sent);
      if (n > 0) sent += (size_t)n;
      else if (n < 0 && errno != EAGAIN) sent = size; /* server closed */
      if (sent == size) shutdown(sv[1], SHUT_WR);
    } else if (size == 0 && turns == 1) {
      shutdown(sv[1], SHUT_WR);
    }
    uv_run(srv->loop, UV_RUN_NOWAIT);
    drain(sv[1], &out, &len, &cap);
    if (turns > 1000) usleep(100); /* a commit is on the thread pool */
  }
  if (srv->env.nconns > 0) abort(); /* the connection never finished */
  drain(sv[1], &out, &len, &cap);
  close(sv[1]);
  if (getenv("FUZZ_REQUEST_DUMP")) /* to see what an input gets back */
    fprintf(stderr, "--- %zu bytes in, %zu out\n%.*s\n", size, len,
            (int)(len > 4096 ? 4096 : len), out ? out : "");
  check_output(out ? out : "", len);
  free(out);
  return 0;
}
