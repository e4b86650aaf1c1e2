/* commit.c - group commit.
 *
 * One commit is in flight at a time.  Writes that arrive meanwhile wait in
 * the pending batch, and the next commit takes all of them, so the fsync
 * cost is shared by everything that queued behind it.  The LMDB transaction
 * runs on libuv's thread pool; the listener keeps serving reads from the
 * map, which still holds only durable data.  When the commit returns, the
 * listener applies the batch to the map in order and only then answers.
 */
#include <stdlib.h>
#include <string.h>

#include "kv/error.h"
#include "kv/log.h"
#include "kv/store.h"

static void commit_work(uv_work_t *req) {
  kv_store_t *s = req->data;
  uint64_t t0 = uv_hrtime();

  s->commit_rc = s->commit_pre ? s->commit_pre
                               : kv_ckpt_commit(s->ckpt, s->ops, s->ops_n);
  s->commit_ns = uv_hrtime() - t0;
}

static void commit_done(uv_work_t *req, int uvstatus);

/* Grows the LMDB map after KV_EMAPFULL and commits the same batch again.
 * LMDB allows resizing only with no transaction open in the process, so
 * this waits for an image build's snapshot to close (image_done calls it
 * again); the batch stays in flight meanwhile, unanswered. */
void kv__commit_grow(kv_store_t *s) {
  size_t now;
  int rc;

  if (!s->grow_wanted || s->imaging) return;
  s->grow_wanted = 0;
  rc = kv_ckpt_grow(s->ckpt, &now);
  if (rc != 0) {
    kv_log_error("%s: cannot grow the LMDB map: %s", s->dir,
                 kv_strerror(rc));
    s->commit_rc = rc;
    commit_done(&s->commit_work, 0);
    return;
  }
  kv_log_info("%s: LMDB map grown to %zu KiB", s->dir, now >> 10);
  uv_queue_work(s->loop, &s->commit_work, commit_work, commit_done);
}

/* Applies a committed batch to the map and answers each write in order.
 * The batch is detached first: a done callback may resume a connection
 * whose next pipelined request submits a new write, which must land in the
 * pending batch, not in the one being answered. */
static void commit_done(uv_work_t *req, int uvstatus) {
  kv_store_t *s = req->data;
  kv_write_t *batch, *w, *next;
  int rc = uvstatus != 0 ? KV_ESTORE : s->commit_rc;

  if (rc == KV_EMAPFULL) {
    s->grow_wanted = 1;
    kv__commit_grow(s);
    return;
  }
  if (s->metrics && rc == 0) {
    kv_hist_observe(&s->metrics->batch, (double)s->ops_n);
    kv_hist_observe(&s->metrics->commit, (double)s->commit_ns / 1e9);
  }
  if (s->metrics && rc != 0) kv_metrics_error(s->metrics, rc);
  batch = s->fly;
  s->fly = NULL;
  s->ops_n = 0;
  if (rc == 0) {
    s->commits++;
  } else if (rc == KV_EIO) {
    /* After a failed fsync the kernel may have dropped the dirty pages,
     * so a retry could report success for data that is not on disk (the
     * PostgreSQL "fsyncgate" lesson).  Stop taking writes; the map still
     * holds exactly the durable state, so reads go on. */
    s->failed = 1;
    kv_log_error("%s: commit failed (%s): writes are disabled until kvd is "
                 "restarted; check the disk", s->dir, kv_strerror(rc));
  } else if (rc != KV_EREADONLY) {
    kv_log_warn("%s: commit failed: %s", s->dir, kv_strerror(rc));
  }
  /* Apply everything first, so each answer's Kvd-Revision covers the
   * whole batch as the client's next read will see it. */
  for (w = batch; w && rc == 0; w = w->next) {
    kv_rec_t *old;
    if (w->rev == 0) continue; /* a DELETE of a missing key */
    if (w->op == KV_OP_PUT) {
      kv_map_put(s->map, kv_rec_ref(w->rec), &old);
    } else {
      old = kv_map_del(s->map, w->key.ptr, w->key.len);
    }
    kv_rec_unref(old);
    s->rev = w->rev;
  }
  for (w = batch; w; w = next) {
    next = w->next;
    w->next = NULL;
    if (w->op == KV_OP_PUT) kv_rec_unref(w->rec);
    w->rec = NULL;
    w->done(w, rc, rc == 0 && w->existed);
  }
  /* The map and LMDB agree only here, between two commits: the imager
   * takes its snapshot now, before the next commit can start. */
  s->committing = 0;
  if (rc == 0) kv__imager_changed(s);
  kv__imager_kick(s);
  if (s->pend_head) kv__commit_start(s);
  kv__store_maybe_drained(s);
}

/* The state of the keys written so far in the batch being formed: an
 * open-addressed table over the batch's keys, so a write's "existed" (and
 * any condition on it) counts the writes before it in the same batch. */
struct kv_seen {
  const char *key; /* NULL: an empty slot */
  size_t klen;
  int exists;
};

static int seen_prepare(kv_store_t *s, size_t n) {
  size_t cap = 16;

  while (cap < 2 * n) cap *= 2;
  if (cap > s->seen_cap) {
    struct kv_seen *t = malloc(cap * sizeof *t);
    if (!t) return KV_ENOMEM;
    free(s->seen);
    s->seen = t;
    s->seen_cap = cap;
  }
  memset(s->seen, 0, s->seen_cap * sizeof *s->seen);
  return 0;
}

static struct kv_seen *seen_slot(kv_store_t *s, const char *key,
                                 size_t klen) {
  size_t mask = s->seen_cap - 1;
  size_t i = kv_map_hash(s->map, key, klen) & mask;

  while (s->seen[i].key &&
         (s->seen[i].klen != klen || memcmp(s->seen[i].key, key, klen)))
    i = (i + 1) & mask;
  return &s->seen[i];
}

/* Decides each pending write against the map and the writes before it,
 * numbers the ones that change the store, and lists their ops.  A DELETE
 * of a missing key takes no revision and writes nothing. */
static int commit_form(kv_store_t *s) {
  uint64_t rev = s->rev;
  size_t i = 0;
  kv_write_t *w;
  int rc;

  if (s->ops_cap < s->pend_n) {
    size_t cap = s->pend_n < 64 ? 64 : s->pend_n * 2;
    kv_ckpt_op_t *ops = realloc(s->ops, cap * sizeof(*ops));
    if (!ops) return KV_ENOMEM;
    s->ops = ops;
    s->ops_cap = cap;
  }
  rc = seen_prepare(s, s->pend_n);
  if (rc != 0) return rc;
  for (w = s->pend_head; w; w = w->next) {
    const char *key = w->op == KV_OP_PUT ? kv_rec_key(w->rec) : w->key.ptr;
    size_t klen = w->op == KV_OP_PUT ? w->rec->klen : w->key.len;
    struct kv_seen *e = seen_slot(s, key, klen);
    kv_ckpt_op_t *op;

    w->existed = e->key ? e->exists : kv_map_get(s->map, key, klen) != NULL;
    e->key = key;
    e->klen = klen;
    e->exists = w->op == KV_OP_PUT;
    if (w->op == KV_OP_DEL && !w->existed) {
      w->rev = 0;
      continue;
    }
    w->rev = ++rev;
    op = &s->ops[i++];
    op->op = w->op;
    op->rev = w->rev;
    op->key.ptr = key;
    op->key.len = klen;
    if (w->op == KV_OP_PUT) {
      w->rec->rev = w->rev;
      op->val.ptr = kv_rec_value(w->rec);
      op->val.len = w->rec->vlen;
    } else {
      op->val.ptr = NULL;
      op->val.len = 0;
    }
  }
  s->ops_n = i;
  return 0;
}

/* Moves the pending batch in flight and hands it to the thread pool.  A
 * batch that cannot be committed (writes disabled, no memory for the op
 * list) still takes the trip through the pool and fails there, so answers
 * are never given from inside kv_store_submit and keep their order. */
void kv__commit_start(kv_store_t *s) {
  int pre = s->failed ? KV_EREADONLY : 0;

  if (s->committing || !s->pend_head) return;
  if (!pre) pre = commit_form(s);
  if (pre) s->ops_n = 0;
  s->commit_pre = pre;
  s->fly = s->pend_head;
  s->pend_head = NULL;
  s->pend_tail = &s->pend_head;
  s->pend_n = 0;
  s->committing = 1;
  s->commit_work.data = s;
  uv_queue_work(s->loop, &s->commit_work, commit_work, commit_done);
}

void kv_store_submit(kv_store_t *s, kv_write_t *w) {
  w->next = NULL;
  w->rev = 0;
  w->existed = 0;
  *s->pend_tail = w;
  s->pend_tail = &w->next;
  s->pend_n++;
  kv__commit_start(s);
}
