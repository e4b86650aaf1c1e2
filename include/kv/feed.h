/* feed.h - the change feed's data: watches and the changes they deliver.
 *
 * A watch follows the acknowledged writes under a prefix, or to one key,
 * after a revision.  The store feeds each applied write to the watches
 * that match it, found through an index by key and by prefix, so a write
 * that matches none costs no per-watch work.  A watch that is behind
 * (it starts in the past, or stopped reading long enough to drop what was
 * queued for it) catches up on a thread of its own from the revision log,
 * then follows live writes again; it never holds more than
 * KV_WATCH_BUF bytes of queued changes.  Framing (NDJSON, Server-Sent
 * Events, long poll) is the router's.  Listener thread only.
 */
#ifndef KV_FEED_H
#define KV_FEED_H

#include <stddef.h>
#include <stdint.h>

/* One change, encoded once for every watch it goes to: the JSON object of
 * the contract's section 5, without a newline.  Reference-counted on the
 * listener. */
typedef struct kv_change {
  uint32_t refs;
  uint8_t op;  /* KV_OP_PUT, KV_OP_DEL or KV_OP_EXPIRE */
  uint64_t rev;
  size_t len;
  char json[];
} kv_change_t;

void kv_change_unref(kv_change_t *c); /* accepts NULL */

/* The most change bytes queued for one watch; past it the queue is
 * dropped and the watch catches up from the log instead. */
#define KV_WATCH_BUF ((size_t)1 << 20)

typedef struct kv_watch kv_watch_t;

/* Changes are ready to take, or the watch failed (take says how). */
typedef void (*kv_watch_cb)(void *data);

typedef struct {
  const char *key; /* the prefix, or with exact the one key */
  size_t klen;
  int exact;
  uint64_t since;  /* changes after this revision */
  kv_watch_cb ready;
  void *data;
} kv_watch_opts_t;

#endif
