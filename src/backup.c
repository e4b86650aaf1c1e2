/* backup.c - GET /_backup: a compacted copy of LMDB at a known revision.
 *
 * A backup waits, as a listing does, until a checkpoint has caught up with
 * every write applied when it arrived.  Then checkpoints are held while a
 * thread of its own copies LMDB (kv_ckpt_copy, compacting) into an unnamed
 * file in the data directory, so LMDB cannot move under the copy and the
 * revision it holds is the checkpoint's.  Writes go on meanwhile: the log
 * keeps them, and the copy's completion reschedules the checkpoints.  The
 * finished file is mapped read-only and served as the image is, without a
 * copy; the requests that waited for it share it, and its blocks go back
 * to the disk when the last of them is sent.
 *
 * One copy runs at a time, on its own thread rather than libuv's pool,
 * whose threads run the group commits: a copy of gigabytes must not hold
 * them up.  A request that arrives during a copy that already covers its
 * revision (no write came in between) shares it; any other waits for the
 * next.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kv/error.h"
#include "kv/log.h"
#include "kv/thread.h"
#include "store_int.h"

/* An unnamed file in the data directory, on the disk the data is on:
 * O_TMPFILE, or where the file system lacks it a named one unlinked at
 * once.  Either way a kvd that dies leaves nothing behind.  Returns 0 or
 * KV_ENOSPACE / KV_EIO. */
static int backup_file(const char *dir, int *out) {
  char path[4096];
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600), n;

  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    n = snprintf(path, sizeof path, "%s/.backup.XXXXXX", dir);
    if (n < 0 || (size_t)n >= sizeof path) return KV_EIO;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) unlink(path);
  }
  if (fd < 0) return errno == ENOSPC || errno == EDQUOT ? KV_ENOSPACE : KV_EIO;
  *out = fd;
  return 0;
}

/* The copier.  Until backup_done runs, backup_img, backup_rc and
 * backup_ns belong to this thread. */
static void *backup_thread(void *arg) {
  kv_store_t *s = arg;
  uint64_t t0 = uv_hrtime();
  off_t len = 0;
  int fd = -1, rc;

  /* Reads and writes go on meanwhile, first. */
  kv_thread_nice(KV_NICE_COPY);
  rc = backup_file(s->dir, &fd);
  if (rc == 0) rc = kv_ckpt_copy(s->ckpt, fd);
  if (rc == 0 && (len = lseek(fd, 0, SEEK_END)) <= 0) rc = KV_EIO;
  if (rc == 0)
    rc = kv_image_from_fd(fd, (size_t)len, s->backup_rev, &s->backup_img);
  if (fd >= 0) close(fd); /* the mapping keeps the file */
  /* The copy read every page of data.mdb; the map serves reads, so forget
   * them here, where it costs the listener nothing. */
  kv_ckpt_release_pages(s->ckpt);
  s->backup_ns = uv_hrtime() - t0;
  s->backup_rc = rc;
  uv_async_send(&s->backup_async);
  return NULL;
}

/* Ends a backup without a copy: every waiter gets rc from backup_done,
 * never from inside a call of the caller's. */
static void backup_fail(kv_store_t *s, int rc) {
  s->backing = 1;
  s->backup_rc = rc;
  s->backup_rev = s->rev; /* covers every waiter */
  s->backup_img = NULL;
  uv_async_send(&s->backup_async);
}

/* Starts a copy when one is wanted: LMDB has caught up with the oldest
 * waiter and no checkpoint is being written.  Asks for a checkpoint
 * otherwise.  A copy cannot be had when checkpoints failed (LMDB lacks
 * acknowledged writes: better no backup than a stale one), nor when the
 * disk refuses them, which would refuse the copy too. */
void kv__backup_start(kv_store_t *s) {
  int rc;

  if (s->backing || !s->backups || s->checkpointing || s->grow_wanted)
    return;
  /* Shutdown waits for a copy in flight, not for one not yet begun. */
  if (s->drained) {
    rc = KV_ESHUTDOWN;
  } else if (s->ckpt_failed) {
    rc = KV_ENOBACKUP;
  } else if (s->ckpt_rev >= s->backups->need_rev) {
    rc = 0;
  } else if (s->ckpt_retry) {
    rc = KV_ENOSPACE;
  } else {
    s->ckpt_wanted = 1;
    return;
  }
  if (rc != 0) {
    backup_fail(s, rc);
    return;
  }
  s->backing = 1;
  s->backup_rev = s->ckpt_rev;
  s->backup_rc = 0;
  s->backup_img = NULL;
  if (kv_thread_start(backup_thread, s) != 0) backup_fail(s, KV_ENOMEM);
}

/* The copy is done, or failed: answers the waiters it covers, then lets
 * the checkpoints go on.  The covered waiters are taken off the list
 * first, so a request their answers let in queues for the next copy. */
static void backup_done(uv_async_t *h) {
  kv_store_t *s = h->data;
  kv_image_wait_t **pp = &s->backups, *w, *ready = NULL, **tail = &ready;
  kv_image_t *img = s->backup_img;
  int rc = s->backup_rc;

  if (!s->backing) return; /* a coalesced or stray wakeup */
  s->backing = 0;
  s->backup_img = NULL;
  if (rc == 0 && s->metrics) {
    kv_hist_observe(&s->metrics->backup, (double)s->backup_ns / 1e9);
    s->metrics->backups++;
  }
  if (rc == 0)
    kv_log_info("%s: backup copy at revision %llu: %zu bytes in %llu ms",
                s->dir, (unsigned long long)s->backup_rev,
                kv_image_len(img),
                (unsigned long long)(s->backup_ns / 1000000));
  else if (rc != KV_ESHUTDOWN)
    kv_log_warn("%s: cannot make a backup: %s", s->dir, kv_strerror(rc));
  while ((w = *pp) != NULL) {
    if (w->need_rev > s->backup_rev) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    w->next = NULL;
    *tail = w;
    tail = &w->next;
  }
  for (w = ready; w; w = ready) {
    ready = w->next;
    w->next = NULL;
    w->done(w, rc, rc == 0 ? kv_image_ref(img) : NULL);
  }
  kv_image_unref(img);
  kv__store_schedule(s);
}

void kv__backup_init(kv_store_t *s) {
  uv_async_init(s->loop, &s->backup_async, backup_done);
  s->backup_async.data = s;
}

int kv__backup_idle(const kv_store_t *s) { return !s->backing && !s->backups; }

void kv_store_backup(kv_store_t *s, kv_image_wait_t *w) {
  kv_image_wait_t **pp = &s->backups;

  w->need_rev = s->rev;
  w->next = NULL;
  while (*pp) pp = &(*pp)->next; /* first come, first served */
  *pp = w;
  kv__store_schedule(s);
}
