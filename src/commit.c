/* commit.c - group commit: forming a batch and writing it to the log.
 *
 * One batch is in flight at a time.  Writes that arrive meanwhile wait in
 * the pending batch, and the next commit takes all of them, so one write
 * and one fdatasync of the revision log serve everything that queued
 * behind it.  The append runs on libuv's thread pool; the listener keeps
 * serving reads from the map, which holds only acknowledged data.  When
 * the append returns, store.c applies the batch to the map in order and
 * only then answers.
 */
#include <stdlib.h>
#include <string.h>

#include "kv/error.h"
#include "kv/log.h"
#include "store_int.h"

static void commit_work(uv_work_t *req) {
  kv_store_t *s = req->data;
  uint64_t t0 = uv_hrtime();

  s->commit_rc = s->commit_pre ? s->commit_pre
                               : kv_revlog_append(s->log, s->ops, s->ops_n);
  s->commit_ns = uv_hrtime() - t0;
}

/* Detaches the batch before reporting it: answering may resume a
 * connection whose next pipelined write must land in the pending batch. */
static void commit_done(uv_work_t *req, int uvstatus) {
  kv_store_t *s = req->data;
  kv_write_t *batch = s->fly;

  s->fly = NULL;
  s->committing = 0;
  kv__store_committed(s, batch, uvstatus != 0 ? KV_ESTORE : s->commit_rc);
}

/* The state of the keys met so far in the batch being formed: an
 * open-addressed table over the batch's keys, so a write's "existed" (and
 * any condition on it) counts the writes before it in the same batch. */
struct kv_seen {
  const char *key; /* NULL: an empty slot */
  size_t klen;
  int exists;
  uint64_t rev; /* the value's revision, when it exists */
};

/* Sizes the table for a batch of n writes: the allocation is kept for
 * the largest batch so far, but only the part this batch uses is cleared
 * and probed, so a small batch after a huge one costs little. */
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
  s->seen_mask = cap - 1;
  memset(s->seen, 0, cap * sizeof *s->seen);
  return 0;
}

static struct kv_seen *seen_slot(kv_store_t *s, const char *key,
                                 size_t klen) {
  size_t mask = s->seen_mask;
  size_t i = kv_map_hash(s->map, key, klen) & mask;

  while (s->seen[i].key &&
         (s->seen[i].klen != klen || memcmp(s->seen[i].key, key, klen)))
    i = (i + 1) & mask;
  return &s->seen[i];
}

static kv_op_t *op_add(kv_store_t *s, size_t *i, int type, const char *key,
                       size_t klen, uint64_t rev) {
  kv_op_t *op = &s->ops[(*i)++];

  op->op = type;
  op->rev = rev;
  op->batch = s->rev + 1;
  op->expires = 0;
  op->key.ptr = key;
  op->key.len = klen;
  op->val.ptr = NULL;
  op->val.len = 0;
  return op;
}

/* Decides each pending write against the map and the writes before it,
 * numbers the ones that change the store, and lists their ops.  A DELETE
 * of a missing key takes no revision and writes nothing.  A key whose
 * expiry time has passed is missing: the first write of the batch that
 * meets it writes its removal first, with its own revision, so every
 * expiry is in the log as one (the expirer's own writes are only the way
 * this happens when no client touches the key). */
static int commit_form(kv_store_t *s) {
  uint64_t rev = s->rev, now = kv_ttl_now();
  size_t i = 0;
  kv_write_t *w;
  int rc;

  if (s->ops_cap < 2 * s->pend_n + s->exp_n) {
    size_t cap = 2 * (2 * s->pend_n + s->exp_n);
    if (cap < 64) cap = 64;
    kv_op_t *ops = realloc(s->ops, cap * sizeof(*ops));
    if (!ops) return KV_ENOMEM;
    s->ops = ops;
    s->ops_cap = cap;
  }
  rc = seen_prepare(s, s->pend_n + s->exp_n);
  if (rc != 0) return rc;
  /* The expirer's records first: each one's removal, if it is still its
   * key's and still expired (not if the clock went back: then it goes
   * back into the heap). */
  for (size_t k = 0; k < s->exp_n; k++) {
    kv_rec_t *r = s->exp_due[k];
    struct kv_seen *e = seen_slot(s, kv_rec_key(r), r->klen);
    const kv_rec_t *cur;
    if (e->key) continue; /* an earlier one of the same key */
    cur = kv_map_get(s->map, kv_rec_key(r), r->klen);
    e->key = kv_rec_key(r);
    e->klen = r->klen;
    e->exists = cur != NULL;
    e->rev = cur ? cur->rev : 0;
    if (cur != r) continue;
    if (!kv_rec_expired(r, now)) {
      if (!r->heap) (void)kv_ttl_add(&s->ttl, r);
      continue;
    }
    op_add(s, &i, KV_OP_EXPIRE, e->key, e->klen, ++rev);
    e->exists = 0;
    e->rev = 0;
  }
  for (w = s->pend_head; w; w = w->next) {
    const char *key = w->op == KV_OP_PUT ? kv_rec_key(w->rec) : w->key.ptr;
    size_t klen = w->op == KV_OP_PUT ? w->rec->klen : w->key.len;
    struct kv_seen *e = seen_slot(s, key, klen);
    uint64_t expired_rev = 0;
    kv_op_t *op;

    if (!e->key) {
      const kv_rec_t *cur = kv_map_get(s->map, key, klen);
      e->key = key;
      e->klen = klen;
      e->exists = cur != NULL;
      e->rev = cur ? cur->rev : 0;
      if (cur && kv_rec_expired(cur, now)) {
        expired_rev = ++rev;
        op_add(s, &i, KV_OP_EXPIRE, key, klen, expired_rev);
        e->exists = 0;
        e->rev = 0;
      }
    }
    w->existed = e->exists;
    /* The condition sees every write applied before this one, those of
     * this batch included; a failed one writes nothing and takes no
     * revision. */
    if (w->cond && kv_cond_eval(w->cond, w->existed, e->rev, 0) != 0) {
      w->cond_rc = KV_EPRECOND;
      w->rev = 0;
      continue;
    }
    if (w->op == KV_OP_DEL && !w->existed) {
      w->rev = 0;
      continue;
    }
    e->exists = w->op == KV_OP_PUT;
    w->rev = ++rev;
    e->rev = w->rev;
    op = op_add(s, &i, w->op, key, klen, w->rev);
    if (w->op == KV_OP_PUT) {
      /* The TTL counts from now, when the write is numbered: its append
       * and apply follow within the commit. */
      w->rec->rev = w->rev;
      w->rec->expires = w->ttl ? now + (uint64_t)w->ttl * 1000 : 0;
      op->expires = w->rec->expires;
      op->val.ptr = kv_rec_value(w->rec);
      op->val.len = w->rec->vlen;
    }
  }
  s->ops_n = i;
  return 0;
}

/* Moves the pending batch in flight and hands it to the thread pool.  A
 * batch that cannot be committed (writes disabled, the log full, no memory
 * for the op list) still takes the trip through the pool and fails there,
 * so answers are never given from inside kv_store_submit and keep their
 * order.  pre is such an error decided by the caller, or 0.  Returns 1 if
 * a batch went in flight. */
int kv__commit_start(kv_store_t *s, int pre) {
  kv_rec_t **t;

  if (s->committing || (!s->pend_head && !s->exp_n)) return 0;
  if (!pre && s->failed) pre = KV_EREADONLY;
  if (!pre) pre = commit_form(s);
  if (pre) s->ops_n = 0;
  s->commit_pre = pre;
  /* The expired records go in flight with the batch. */
  t = s->exp_fly;
  s->exp_fly = s->exp_due;
  s->exp_fly_n = s->exp_n;
  s->exp_due = t;
  s->exp_n = 0;
  s->fly = s->pend_head;
  s->pend_head = NULL;
  s->pend_tail = &s->pend_head;
  s->pend_n = 0;
  s->committing = 1;
  s->commit_work.data = s;
  uv_queue_work(s->loop, &s->commit_work, commit_work, commit_done);
  return 1;
}

void kv_store_submit(kv_store_t *s, kv_write_t *w) {
  w->next = NULL;
  w->rev = 0;
  w->existed = 0;
  w->cond_rc = 0;
  *s->pend_tail = w;
  s->pend_tail = &w->next;
  s->pend_n++;
  kv__store_schedule(s);
}
