/*
 * casload.c - the load generator of tools/bench/run's `cas` workload.
 *
 *   casload PORT CONNS SECS MODE VSIZE
 *
 * CONNS keep-alive connections to 127.0.0.1:PORT, one thread, epoll.
 * Connection N owns the key /cas-NN and writes it again and again, one
 * request in flight per connection:
 *   MODE cas  a compare-and-set loop: the first request is a GET that
 *             reads the key's ETag (a PUT with If-None-Match: * when the
 *             key is missing), then each PUT carries If-Match: the ETag of
 *             the previous answer.  A 412 takes the ETag it carries, or
 *             reads the key again.
 *   MODE put  the same PUT without any condition: the baseline.
 * The value is VSIZE bytes of "hello-value" repeated.
 *
 * wrk cannot do this: its Lua script is per thread and never sees which
 * connection an answer came on, so it cannot keep an ETag per connection
 * with one thread, and one thread per connection costs the load
 * generator more than the server.
 *
 * Prints, like tools/bench/lua/common.lua, one line:
 *   BENCH requests=N duration_us=D p50_us=P p99_us=Q errs=E non2xx=X
 *         n412=A gets=G bad=B
 * requests counts every answer within SECS (GETs and creates included:
 * gets says how many), latency is from the request's first byte written to
 * its answer's last byte read, errs are socket errors and closes (the
 * connection is opened again and reads its key again), non2xx every answer
 * of 300 or above but the first GET's 404, n412 the 412s, bad the answers other than 2xx, a 412 or
 * the first GET's 404.  Exits 0 when it ran, 2 on bad arguments, 1 when no
 * connection could be made.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BUF_SIZE 65536
#define HIST_US 1000000 /* 1 us buckets up to 1 s, then one overflow */

enum { S_GET, S_CREATE, S_PUT };

struct conn {
  int fd;
  int id;
  int sent;          /* S_GET, S_CREATE or S_PUT: what is in flight */
  int etag_state;    /* 0 unknown, 1 missing, 2 known */
  char etag[64];
  char out[BUF_SIZE];
  size_t out_len, out_off;
  char in[BUF_SIZE];
  size_t in_len;
  uint64_t start_ns;
};

static struct conn conns[MAX_CONNS];
static uint32_t hist[HIST_US + 1];
static int port, nconns, vsize, cas_mode;
static char body[BUF_SIZE / 2];
static int epfd;
static uint64_t n_req, n_err, n_non2xx, n_412, n_gets, n_bad;
static int counting = 1;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Opens connection c and registers it; its key is read again (cas). */
static int conn_open(struct conn *c) {
  struct sockaddr_in sa;
  int one = 1;
  struct epoll_event ev;

  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -1;
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->out_len = c->out_off = c->in_len = 0;
  c->etag_state = 0;
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c;
  return epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_close(struct conn *c) {
  if (c->fd >= 0) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  c->fd = -1;
}

/* Builds the next request of c into c->out and asks for EPOLLOUT. */
static void conn_next(struct conn *c) {
  const char *cond = "";
  char hdr[96] = "";
  int n;
  struct epoll_event ev;

  if (cas_mode && c->etag_state == 0) {
    c->sent = S_GET;
    n = snprintf(c->out, sizeof c->out,
                 "GET /cas-%02d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                 c->id, port);
  } else {
    c->sent = S_PUT;
    if (cas_mode && c->etag_state == 1) {
      c->sent = S_CREATE;
      cond = "If-None-Match: *\r\n";
    } else if (cas_mode) {
      snprintf(hdr, sizeof hdr, "If-Match: %s\r\n", c->etag);
      cond = hdr;
    }
    n = snprintf(c->out, sizeof c->out,
                 "PUT /cas-%02d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 "Content-Type: application/octet-stream\r\n%s"
                 "Content-Length: %d\r\n\r\n%s",
                 c->id, port, cond, vsize, body);
  }
  c->out_len = (size_t)n;
  c->out_off = 0;
  c->start_ns = now_ns();
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c;
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* The value of header NAME (lower case, with the colon) in the head
 * [p, end), trimmed, copied to out; 0 when it is there. */
static int header(const char *p, const char *end, const char *name,
                  char *out, size_t cap) {
  size_t nl = strlen(name);
  while (p < end) {
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol)
      eol = end;
    if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0) {
      const char *v = p + nl;
      size_t len;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      len = (size_t)(eol - v);
      if (len >= cap)
        len = cap - 1;
      memcpy(out, v, len);
      out[len] = 0;
      return 0;
    }
    p = eol + 2;
  }
  return -1;
}

/* Takes the answer out of c->in once it is complete, and sends the next
 * request; 0 while it is incomplete, -1 when it is malformed or followed
 * by bytes nobody asked for. */
static int conn_parse(struct conn *c) {
  {
    char *head_end, val[64];
    size_t head_len, clen = 0, total;
    int status;

    head_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!head_end)
      return c->in_len >= sizeof c->in ? -1 : 0;
    head_len = (size_t)(head_end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0)
      return -1;
    status = atoi(c->in + 9);
    if (header(c->in, head_end, "content-length:", val, sizeof val) == 0)
      clen = strtoul(val, NULL, 10);
    total = head_len + clen;
    if (total > sizeof c->in)
      return -1;
    if (c->in_len < total)
      return 0;

    if (counting) {
      uint64_t us = (now_ns() - c->start_ns) / 1000;
      hist[us < HIST_US ? us : HIST_US]++;
      n_req++;
      if (status >= 300 && !(status == 404 && c->sent == S_GET))
        n_non2xx++;
      if (c->sent != S_PUT)
        n_gets++;
    }
    if (cas_mode) {
      int has_tag = header(c->in, head_end, "etag:", val, sizeof val) == 0;
      if (status == 412) {
        if (counting)
          n_412++;
        c->etag_state = has_tag ? 2 : 0;
      } else if (status >= 200 && status < 300 && has_tag) {
        c->etag_state = 2;
      } else if (status == 404 && c->sent == S_GET) {
        c->etag_state = 1;
      } else {
        if (counting)
          n_bad++;
        c->etag_state = 0;
      }
      if (c->etag_state == 2)
        memcpy(c->etag, val, sizeof c->etag);
    } else if (status >= 300 && counting) {
      n_bad++;
    }
    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;
    if (c->in_len > 0) /* an answer nobody asked for */
      return -1;
    conn_next(c);
    return 0;
  }
}

static void conn_fail(struct conn *c) {
  if (counting)
    n_err++;
  conn_close(c);
  if (conn_open(c) == 0)
    conn_next(c);
}

static uint64_t percentile(uint64_t total, double p) {
  uint64_t want = (uint64_t)(total * p / 100.0), seen = 0;
  uint32_t i;
  if (total == 0)
    return 0;
  if (want == 0)
    want = 1;
  for (i = 0; i <= HIST_US; i++) {
    seen += hist[i];
    if (seen >= want)
      return i;
  }
  return HIST_US;
}

int main(int argc, char **argv) {
  double secs;
  uint64_t t0, t_end;
  int i, opened = 0;
  struct epoll_event evs[MAX_CONNS];

  if (argc != 6) {
    fprintf(stderr, "usage: casload PORT CONNS SECS cas|put VSIZE\n");
    return 2;
  }
  port = atoi(argv[1]);
  nconns = atoi(argv[2]);
  secs = atof(argv[3]);
  cas_mode = strcmp(argv[4], "cas") == 0;
  vsize = atoi(argv[5]);
  if (port <= 0 || nconns <= 0 || nconns > MAX_CONNS || secs <= 0 ||
      secs > 3600 || (!cas_mode && strcmp(argv[4], "put") != 0) ||
      vsize < 0 || vsize >= (int)sizeof body) {
    fprintf(stderr, "casload: bad arguments\n");
    return 2;
  }
  for (i = 0; i < vsize; i++)
    body[i] = "hello-value"[i % 11];

  epfd = epoll_create1(0);
  if (epfd < 0) {
    perror("casload: epoll_create1");
    return 1;
  }
  for (i = 0; i < nconns; i++) {
    conns[i].id = i;
    conns[i].fd = -1;
    if (conn_open(&conns[i]) == 0) {
      conn_next(&conns[i]);
      opened++;
    }
  }
  if (opened == 0) {
    fprintf(stderr, "casload: cannot connect to 127.0.0.1:%d\n", port);
    return 1;
  }

  t0 = now_ns();
  t_end = t0 + (uint64_t)(secs * 1e9);
  for (;;) { /* every wait ends by t_end, even if the server hangs */
    uint64_t t = now_ns();
    int n;
    if (t >= t_end)
      break;
    n = epoll_wait(epfd, evs, MAX_CONNS, (int)((t_end - t) / 1000000) + 1);
    if (n < 0 && errno != EINTR)
      break;
    for (i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->fd < 0)
        continue;
      if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
        conn_fail(c);
        continue;
      }
      if ((evs[i].events & EPOLLOUT) && c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          conn_fail(c);
          continue;
        }
        if (w > 0)
          c->out_off += (size_t)w;
        if (c->out_off == c->out_len) {
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
      }
      if (evs[i].events & EPOLLIN) {
        ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
          conn_fail(c);
          continue;
        }
        if (r > 0) {
          c->in_len += (size_t)r;
          if (conn_parse(c) < 0)
            conn_fail(c);
        }
      }
    }
  }
  counting = 0;
  {
    uint64_t dur_us = (now_ns() - t0) / 1000;
    printf("BENCH requests=%llu duration_us=%llu p50_us=%llu.0 p99_us=%llu.0 "
           "errs=%llu non2xx=%llu n412=%llu gets=%llu bad=%llu\n",
           (unsigned long long)n_req, (unsigned long long)dur_us,
           (unsigned long long)percentile(n_req, 50),
           (unsigned long long)percentile(n_req, 99),
           (unsigned long long)n_err, (unsigned long long)n_non2xx,
           (unsigned long long)n_412, (unsigned long long)n_gets,
           (unsigned long long)n_bad);
  }
  for (i = 0; i < nconns; i++)
    conn_close(&conns[i]);
  close(epfd);
  return 0;
}
