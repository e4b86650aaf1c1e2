/*
 * feedload.c - the change-feed clients of tools/bench/run (issue 12).
 *
 *   feedload idle PORT N SECS
 *   feedload fanout kvd|etcd PORT N WRITES GAP_MS SECS
 *
 * One thread, epoll, non-blocking connects to 127.0.0.1:PORT, at most 256
 * of them waiting for their answer's head at a time (so that the listen
 * backlog never overflows).  Every connection is closed with SO_LINGER 0,
 * which leaves no TIME_WAIT behind: a bench opens 10,000 of them again and
 * again.  Every wait is bounded by SECS.
 *
 * idle: N watchers that never match a write.  Watcher i holds
 *   GET /_changes?key=w/i (i even) or GET /_changes?prefix=w/i/ (i odd)
 *   open, with the default heartbeat, and reads what comes (the progress
 *   lines).  Once every one has its 200 head, or failed, or 60 s passed,
 *   it prints "READY ready=R failed=F secs=S" and flushes; then it reads
 *   until SIGTERM or SIGINT or SECS, and prints
 *   "IDLE watchers=N ready=R failed=F closed=C changes=X progress=P
 *    bytes=B"; changes counts the change lines received, which must be 0.
 *
 * fanout: N watchers of the key "fan" and one writer, which writes the
 *   values v000001, v000002, ... one at a time.
 *   kvd   watchers hold GET /_changes?key=fan&heartbeat=1 (NDJSON); the
 *         writer sends PUT /fan.  A heartbeat goes only to a watch that
 *         was sent nothing for 1 s, so none comes while writes go on; it
 *         is there because kvd notices a watcher that left only when it
 *         writes to it, and the next run must not find 1000 of them.
 *   etcd  watchers long-poll GET /v2/keys/fan?wait=true, then again with
 *         waitIndex= the event's modifiedIndex + 1 on the same keep-alive
 *         connection; the writer sends a v2 form PUT.  etcd sends the head
 *         of a wait answer as soon as the watch is registered, so a
 *         watcher is armed when that head is in.
 *   Before each write every live watcher is armed (etcd: waited for, at
 *   most 5 s), then GAP_MS pass.  A write is done when its answer and all
 *   N receipts are in, or 5 s after it was sent.  Times are CLOCK_MONOTONIC,
 *   taken when a read() returns: the writer's acknowledgement when its
 *   answer's last byte is read, a watcher's receipt when the read that
 *   holds the written value returns.  Within one epoll batch the writer is
 *   read first.  The delivery latency of a write is its last receipt minus
 *   its acknowledgement; it is below 0 when every watcher had the change
 *   before the writer heard back (counted as early).  Prints
 *   "FANOUT watchers=N writes=W done=D missed=M p50_us= p99_us= max_us=
 *    min_us= first_p50_us= spread_p50_us= ack_p50_us= early=E errs=X
 *    secs=S": percentiles over the done writes, first = first receipt
 *   minus ack, spread = last receipt minus first (mostly this client's own
 *   time to read N sockets), ack = acknowledgement minus send, missed =
 *   writes some watcher did not get in time, errs = closed connections and
 *   answers that are not 2xx.
 *
 * Exit: 0 when it ran, 2 on bad arguments, 1 when it could not connect.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WATCHERS 20000
#define MAX_WRITES 100000
#define PENDING_MAX 256
#define HEAD_CAP 2048
#define LINE_CAP 2048
#define WRITE_WAIT_NS 5000000000ull
#define READY_WAIT_NS 60000000000ull

enum { K_IDLE, K_KVD, K_ETCD };
enum { R_WATCH, R_WRITER };
enum { P_HEAD, P_CSIZE, P_CDATA, P_CCRLF, P_TRAILER, P_BODY };

struct conn {
  int fd, id, role;
  int connecting;     /* waiting for a non-blocking connect */
  int up;             /* watcher: its first answer's head was a 200 */
  int dead;           /* close it once this read is parsed */
  int headed;         /* the current answer's head is in */
  int armed;          /* watcher: ready for the next change */
  int p, status, chunked, cs_ext, tl;
  uint64_t remain;
  char head[HEAD_CAP];
  size_t hlen;
  char line[LINE_CAP];
  size_t llen, scan;
  int overflow;
  long last_idx;      /* the last write this watcher received */
  uint64_t next_index;/* etcd: waitIndex of the next wait */
  int got_index;
  int took;           /* etcd: this answer's node value was taken */
  char out[512];
  size_t out_len, out_off;
};

static int kind, port, nwatch, epfd;
static struct conn *conns; /* nwatch watchers, then the writer */
static volatile sig_atomic_t stop;
/* pending: opened, first head not in yet; alive: up and still open. */
static int pending, opened, ready, failed, alive;
static uint64_t n_closed, n_changes, n_progress, n_bytes, n_errs;
/* The write in flight. */
static long cur_write;
static int acked, recv_count;
static uint64_t t_send, t_ack, t_first, t_last;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static void watch_events(struct conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Queues the text for c and writes what the socket takes now. */
static void conn_send(struct conn *c, const char *s, size_t n) {
  ssize_t w;
  if (n > sizeof c->out) n = sizeof c->out;
  memcpy(c->out, s, n);
  c->out_len = n;
  c->out_off = 0;
  if (c->connecting) return; /* sent once connected */
  w = write(c->fd, c->out, c->out_len);
  if (w > 0) c->out_off = (size_t)w;
  if (c->out_off < c->out_len) watch_events(c, EPOLLIN | EPOLLOUT);
}

/* The request a watcher sends (again). */
static void watcher_request(struct conn *c) {
  char req[512];
  int n;
  if (kind == K_IDLE) {
    if (c->id % 2 == 0)
      n = snprintf(req, sizeof req,
                   "GET /_changes?key=w/%d HTTP/1.1\r\nHost: b\r\n\r\n", c->id);
    else
      n = snprintf(req, sizeof req,
                   "GET /_changes?prefix=w/%d/ HTTP/1.1\r\nHost: b\r\n\r\n",
                   c->id);
  } else if (kind == K_KVD) {
    n = snprintf(req, sizeof req,
                 "GET /_changes?key=fan&heartbeat=1 HTTP/1.1\r\nHost: b\r\n\r\n");
  } else if (c->got_index) {
    n = snprintf(req, sizeof req,
                 "GET /v2/keys/fan?wait=true&waitIndex=%llu HTTP/1.1\r\n"
                 "Host: b\r\n\r\n", (unsigned long long)c->next_index);
  } else {
    n = snprintf(req, sizeof req,
                 "GET /v2/keys/fan?wait=true HTTP/1.1\r\nHost: b\r\n\r\n");
  }
  c->got_index = 0;
  c->took = 0;
  c->armed = 0;
  conn_send(c, req, (size_t)n);
}

static void writer_request(struct conn *c, long i) {
  char req[512];
  int n;
  if (kind == K_KVD)
    n = snprintf(req, sizeof req,
                 "PUT /fan HTTP/1.1\r\nHost: b\r\nContent-Length: 7\r\n\r\n"
                 "v%06ld", i);
  else
    n = snprintf(req, sizeof req,
                 "PUT /v2/keys/fan HTTP/1.1\r\nHost: b\r\nContent-Type: "
                 "application/x-www-form-urlencoded\r\nContent-Length: 13"
                 "\r\n\r\nvalue=v%06ld", i);
  conn_send(c, req, (size_t)n);
}

static void conn_close(struct conn *c) {
  struct linger lg = {1, 0};
  if (c->fd < 0) return;
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

/* A connection ended: before its first head it failed, after it closed. */
static void conn_lost(struct conn *c) {
  if (c->fd < 0) return;
  if (c->role == R_WATCH) {
    if (!c->up) {
      pending--;
      failed++;
    } else {
      n_closed++;
      alive--;
    }
  }
  n_errs++;
  conn_close(c);
}

static int conn_open(struct conn *c) {
  struct sockaddr_in sa;
  struct epoll_event ev;
  int one = 1, rc;

  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->p = P_HEAD;
  c->hlen = c->llen = c->scan = 0;
  c->headed = c->armed = c->up = c->dead = 0;
  c->last_idx = 0;
  rc = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc != 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  c->connecting = rc != 0;
  ev.events = c->connecting ? EPOLLOUT : EPOLLIN;
  ev.data.ptr = c;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  return 0;
}

/* Opens watchers while fewer than PENDING_MAX wait for their head. */
static void open_more(void) {
  while (opened < nwatch && pending < PENDING_MAX) {
    struct conn *c = &conns[opened];
    c->id = opened;
    c->role = R_WATCH;
    opened++;
    if (conn_open(c) != 0) {
      failed++;
      continue;
    }
    pending++;
    watcher_request(c);
  }
}

/* A receipt of write idx by watcher c at t. */
static void received(struct conn *c, long idx, uint64_t t) {
  if (c->role != R_WATCH) return; /* etcd's answer to the PUT */
  if (kind == K_ETCD) { /* the node's value; then prevNode's follows */
    if (c->took) return;
    c->took = 1;
  }
  if (idx <= c->last_idx) return; /* a repeat */
  c->last_idx = idx;
  if (idx != cur_write) return; /* late: that write was given up */
  recv_count++;
  if (t_first == 0 || t < t_first) t_first = t;
  if (t > t_last) t_last = t;
}

/* Looks for "value":"vNNNNNN" in the line from c->scan on. */
static void scan_line(struct conn *c, uint64_t t) {
  static const char pat[] = "\"value\":\"v";
  const size_t pl = sizeof pat - 1, need = pl + 7;
  while (c->scan + need <= c->llen) {
    char *m = memmem(c->line + c->scan, c->llen - c->scan, pat, pl);
    long idx = 0;
    size_t i;
    if (!m) {
      c->scan = c->llen > need ? c->llen - need : 0;
      return;
    }
    c->scan = (size_t)(m - c->line);
    if (c->scan + need > c->llen) return; /* the rest comes later */
    for (i = 0; i < 6; i++) {
      char d = m[pl + i];
      if (d < '0' || d > '9') break;
      idx = idx * 10 + (d - '0');
    }
    if (i == 6 && m[pl + 6] == '"') received(c, idx, t);
    c->scan += pl;
  }
}

static void line_done(struct conn *c, uint64_t t) {
  char *m;
  c->line[c->llen < LINE_CAP ? c->llen : LINE_CAP - 1] = 0;
  scan_line(c, t);
  if (c->role == R_WATCH && c->llen > 0) {
    if (memmem(c->line, c->llen, "\"op\":\"progress\"", 15))
      n_progress++;
    else if (memmem(c->line, c->llen, "\"op\":\"", 6))
      n_changes++;
    if (kind == K_ETCD && !c->got_index &&
        (m = memmem(c->line, c->llen, "\"modifiedIndex\":", 16)) != NULL) {
      c->next_index = strtoull(m + 16, NULL, 10) + 1;
      c->got_index = 1;
    }
  }
  c->llen = c->scan = 0;
  c->overflow = 0;
}

static void on_head(struct conn *c) {
  char *p;
  c->head[c->hlen] = 0;
  c->status = (c->hlen > 12 && memcmp(c->head, "HTTP/1.", 7) == 0)
                  ? atoi(c->head + 9) : 0;
  c->chunked = 0;
  c->remain = 0;
  for (p = c->head; (p = strchr(p, '\n')) != NULL;) {
    p++;
    if (strncasecmp(p, "transfer-encoding:", 18) == 0 &&
        strcasestr(p, "chunked") != NULL &&
        strcasestr(p, "chunked") < strchr(p, '\n'))
      c->chunked = 1;
    else if (strncasecmp(p, "content-length:", 15) == 0)
      c->remain = strtoull(p + 15, NULL, 10);
  }
  c->headed = 1;
  if (c->role != R_WATCH) return;
  if (!c->up) {
    pending--;
    if (c->status != 200) { /* 503 at --max-connections, say */
      failed++;
      c->dead = 1;
      return;
    }
    c->up = 1;
    ready++;
    alive++;
  }
  if (c->status == 200)
    c->armed = 1;
  else
    n_errs++;
}

/* An answer is complete. */
static void on_done(struct conn *c, uint64_t t) {
  if (c->llen > 0) line_done(c, t);
  c->p = P_HEAD;
  c->hlen = 0;
  c->headed = 0;
  if (c->role == R_WRITER) {
    if (c->status < 200 || c->status >= 300) n_errs++;
    if (cur_write > 0 && !acked) {
      acked = 1;
      t_ack = t;
    }
  } else if (kind == K_ETCD) {
    watcher_request(c); /* a long poll ended: wait again */
  } else {
    n_closed++; /* a feed is not meant to end */
  }
}

static void body_bytes(struct conn *c, const char *p, size_t n, uint64_t t) {
  size_t i;
  for (i = 0; i < n; i++) {
    if (p[i] == '\n') {
      line_done(c, t);
    } else if (c->llen < LINE_CAP - 1) {
      c->line[c->llen++] = p[i];
    } else {
      c->overflow = 1;
    }
  }
  scan_line(c, t);
}

/* Runs the bytes of one read through the HTTP/1.1 answer parser. */
static int parse(struct conn *c, const char *p, size_t n, uint64_t t) {
  while (n > 0) {
    switch (c->p) {
    case P_HEAD:
      if (c->hlen >= HEAD_CAP - 1) return -1;
      c->head[c->hlen++] = *p++;
      n--;
      if (c->hlen >= 4 && memcmp(c->head + c->hlen - 4, "\r\n\r\n", 4) == 0) {
        on_head(c);
        if (c->dead) return 0;
        if (c->chunked) {
          c->p = P_CSIZE;
          c->remain = 0;
          c->cs_ext = 0;
        } else if (c->remain > 0) {
          c->p = P_BODY;
        } else {
          on_done(c, t);
        }
      }
      break;
    case P_CSIZE: {
      char ch = *p++;
      n--;
      if (ch == '\n') {
        if (c->remain == 0) {
          c->p = P_TRAILER;
          c->tl = 0;
        } else {
          c->p = P_CDATA;
        }
      } else if (ch == ';' || ch == '\r' || ch == ' ') {
        c->cs_ext = 1;
      } else if (!c->cs_ext) {
        int v = (ch >= '0' && ch <= '9') ? ch - '0'
              : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
              : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
        if (v < 0 || c->remain > (1ull << 40)) return -1;
        c->remain = c->remain * 16 + (uint64_t)v;
      }
      break;
    }
    case P_CDATA: {
      size_t m = n < c->remain ? n : (size_t)c->remain;
      body_bytes(c, p, m, t);
      p += m;
      n -= m;
      c->remain -= m;
      if (c->remain == 0) c->p = P_CCRLF;
      break;
    }
    case P_CCRLF:
      if (*p == '\n') {
        c->p = P_CSIZE;
        c->remain = 0;
        c->cs_ext = 0;
      }
      p++;
      n--;
      break;
    case P_TRAILER:
      if (*p == '\n') {
        if (c->tl == 0) {
          p++;
          n--;
          on_done(c, t);
          break;
        }
        c->tl = 0;
      } else if (*p != '\r') {
        c->tl++;
      }
      p++;
      n--;
      break;
    case P_BODY: {
      size_t m = n < c->remain ? n : (size_t)c->remain;
      body_bytes(c, p, m, t);
      p += m;
      n -= m;
      c->remain -= m;
      if (c->remain == 0) on_done(c, t);
      break;
    }
    }
  }
  return 0;
}

static void conn_event(struct conn *c, uint32_t events) {
  char buf[65536];
  int k;

  if (c->fd < 0) return;
  if (c->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      conn_lost(c);
      return;
    }
    c->connecting = 0;
    watch_events(c, EPOLLIN | (c->out_off < c->out_len ? EPOLLOUT : 0));
  }
  if ((events & EPOLLOUT) && c->out_off < c->out_len) {
    ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
      conn_lost(c);
      return;
    }
    if (w > 0) c->out_off += (size_t)w;
    if (c->out_off == c->out_len) watch_events(c, EPOLLIN);
  }
  for (k = 0; k < 16 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)); k++) {
    ssize_t r = read(c->fd, buf, sizeof buf);
    uint64_t t = now_ns();
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
      conn_lost(c);
      return;
    }
    if (r < 0) break;
    n_bytes += (uint64_t)r;
    if (parse(c, buf, (size_t)r, t) != 0) {
      conn_lost(c);
      return;
    }
    if (c->dead) {
      conn_close(c);
      return;
    }
    if ((size_t)r < sizeof buf) break;
  }
}

/* One round of the loop: waits at most ms, the writer first. */
static void poll_once(int ms) {
  struct epoll_event evs[1024];
  int n = epoll_wait(epfd, evs, 1024, ms), i;
  if (n <= 0) return;
  for (i = 0; i < n; i++) {
    struct conn *c = evs[i].data.ptr;
    if (c->role == R_WRITER) {
      conn_event(c, evs[i].events);
      evs[i].data.ptr = NULL;
    }
  }
  for (i = 0; i < n; i++)
    if (evs[i].data.ptr) conn_event(evs[i].data.ptr, evs[i].events);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* The p-th percentile (nearest rank) of the sorted v[0..n). */
static int64_t pct(const int64_t *v, size_t n, double p) {
  size_t k;
  if (n == 0) return 0;
  k = (size_t)((p / 100.0) * (double)n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

static int all_armed(void) {
  int i;
  for (i = 0; i < nwatch; i++)
    if (conns[i].fd >= 0 && conns[i].up && !conns[i].armed) return 0;
  return 1;
}

static int run_idle(double secs) {
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
  int said = 0;

  open_more();
  while (!stop && now_ns() < end) {
    poll_once(100);
    open_more();
    if (!said && (ready + failed >= nwatch || now_ns() - t0 > READY_WAIT_NS)) {
      printf("READY ready=%d failed=%d secs=%.3f\n", ready, failed,
             (double)(now_ns() - t0) / 1e9);
      fflush(stdout);
      said = 1;
    }
  }
  printf("IDLE watchers=%d ready=%d failed=%d closed=%llu changes=%llu "
         "progress=%llu bytes=%llu\n", nwatch, ready, failed,
         (unsigned long long)n_closed, (unsigned long long)n_changes,
         (unsigned long long)n_progress, (unsigned long long)n_bytes);
  return ready > 0 ? 0 : 1;
}

static int run_fanout(long writes, int gap_ms, double secs) {
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t;
  struct conn *w = &conns[nwatch];
  int64_t *lat, *first, *spread, *ack;
  size_t done = 0;
  long i, missed = 0, early = 0;

  lat = calloc((size_t)writes, sizeof *lat);
  first = calloc((size_t)writes, sizeof *first);
  spread = calloc((size_t)writes, sizeof *spread);
  ack = calloc((size_t)writes, sizeof *ack);
  if (!lat || !first || !spread || !ack) return 1;
  w->role = R_WRITER;
  w->id = -1;
  if (conn_open(w) != 0) {
    fprintf(stderr, "feedload: cannot connect to 127.0.0.1:%d\n", port);
    return 1;
  }
  open_more();
  while (!stop && now_ns() < end && ready + failed < nwatch &&
         now_ns() - t0 < READY_WAIT_NS) {
    poll_once(100);
    open_more();
  }
  if (ready == 0) {
    fprintf(stderr, "feedload: no watcher is up (%d failed)\n", failed);
    return 1;
  }
  for (i = 1; i <= writes && !stop && now_ns() < end; i++) {
    uint64_t gap_end, arm_end = now_ns() + WRITE_WAIT_NS, give_up;
    while (!all_armed() && !stop && now_ns() < arm_end) poll_once(10);
    gap_end = now_ns() + (uint64_t)gap_ms * 1000000u;
    while ((t = now_ns()) < gap_end && !stop)
      poll_once((int)((gap_end - t) / 1000000u) + 1);
    cur_write = i;
    acked = 0;
    recv_count = 0;
    t_first = t_last = t_ack = 0;
    t_send = now_ns();
    writer_request(w, i);
    give_up = t_send + WRITE_WAIT_NS;
    while (!(acked && recv_count >= alive) && !stop && now_ns() < give_up &&
           w->fd >= 0)
      poll_once(5);
    if (acked && recv_count >= alive && alive > 0) {
      lat[done] = (int64_t)t_last - (int64_t)t_ack;
      first[done] = (int64_t)t_first - (int64_t)t_ack;
      spread[done] = (int64_t)(t_last - t_first);
      ack[done] = (int64_t)(t_ack - t_send);
      if (lat[done] < 0) early++;
      done++;
    } else {
      missed++;
      if (w->fd < 0) break;
    }
  }
  cur_write = 0;
  qsort(lat, done, sizeof *lat, cmp_i64);
  qsort(first, done, sizeof *first, cmp_i64);
  qsort(spread, done, sizeof *spread, cmp_i64);
  qsort(ack, done, sizeof *ack, cmp_i64);
  printf("FANOUT watchers=%d writes=%ld done=%zu missed=%ld p50_us=%.1f "
         "p99_us=%.1f max_us=%.1f min_us=%.1f first_p50_us=%.1f "
         "spread_p50_us=%.1f ack_p50_us=%.1f early=%ld errs=%llu secs=%.3f\n",
         ready, i - 1, done, missed, pct(lat, done, 50) / 1e3,
         pct(lat, done, 99) / 1e3, done ? lat[done - 1] / 1e3 : 0.0,
         done ? lat[0] / 1e3 : 0.0, pct(first, done, 50) / 1e3,
         pct(spread, done, 50) / 1e3, pct(ack, done, 50) / 1e3, early,
         (unsigned long long)n_errs, (double)(now_ns() - t0) / 1e9);
  free(lat);
  free(first);
  free(spread);
  free(ack);
  return done > 0 ? 0 : 1;
}

static void raise_nofile(rlim_t want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv) {
  struct sigaction sa;
  double secs;
  int rc;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (argc == 5 && strcmp(argv[1], "idle") == 0) {
    kind = K_IDLE;
    port = atoi(argv[2]);
    nwatch = atoi(argv[3]);
    secs = atof(argv[4]);
  } else if (argc == 8 && strcmp(argv[1], "fanout") == 0 &&
             (strcmp(argv[2], "kvd") == 0 || strcmp(argv[2], "etcd") == 0)) {
    kind = strcmp(argv[2], "kvd") == 0 ? K_KVD : K_ETCD;
    port = atoi(argv[3]);
    nwatch = atoi(argv[4]);
    secs = atof(argv[7]);
  } else {
    fprintf(stderr, "usage: feedload idle PORT N SECS\n"
                    "       feedload fanout kvd|etcd PORT N WRITES GAP_MS "
                    "SECS\n");
    return 2;
  }
  if (port <= 0 || port > 65535 || nwatch <= 0 || nwatch > MAX_WATCHERS ||
      secs <= 0 || secs > 3600) {
    fprintf(stderr, "feedload: bad arguments\n");
    return 2;
  }
  raise_nofile((rlim_t)nwatch + 64);
  conns = calloc((size_t)nwatch + 1, sizeof *conns);
  epfd = epoll_create1(0);
  if (!conns || epfd < 0) {
    perror("feedload");
    return 1;
  }
  for (rc = 0; rc <= nwatch; rc++) conns[rc].fd = -1;
  if (kind == K_IDLE) {
    rc = run_idle(secs);
  } else {
    long writes = atol(argv[5]);
    int gap = atoi(argv[6]);
    if (writes <= 0 || writes > MAX_WRITES || gap < 0 || gap > 10000) {
      fprintf(stderr, "feedload: bad arguments\n");
      return 2;
    }
    rc = run_fanout(writes, gap, secs);
  }
  for (int i = 0; i <= nwatch; i++) conn_close(&conns[i]);
  close(epfd);
  return rc;
}
