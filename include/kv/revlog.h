/* revlog.h - the revision log: every acknowledged write, in order.
 *
 * Group commit appends a whole batch to the log with one write and one
 * fdatasync; only then is the batch applied to the map and answered.  The
 * log lives in DIR/log/ as segments named by the first revision they may
 * hold (0000000000000001.seg).  A segment is created at full size and
 * zero-filled, and synced, before it takes records, so appending is a pure
 * overwrite of allocated blocks: no file size or extent changes for the
 * file system to journal at each flush.
 *
 * A segment starts with a 32-byte header: "KVDLOG01", the first revision
 * (8 bytes), an xxh3 of those 16 bytes, 8 zero bytes.  Records follow,
 * each 8-byte aligned, little-endian:
 *
 *   u32 len    bytes of the body
 *   u32 0
 *   u64 sum    xxh3 of the body, seeded with len
 *   body:  u64 rev, u64 batch (the first revision of its group commit),
 *          u64 expires (Unix ms, 0: none), u8 op, u8 0, u16 klen,
 *          u32 vlen, key, value
 *   zeros to the next multiple of 8
 *
 * A record of length 0 ends the segment's data.  At start-up a bad record
 * with nothing valid after it is a torn tail, from a batch that was never
 * acknowledged: it is zeroed.  A bad record followed by a later batch is
 * damage: the log is refused, with one line that says where.
 *
 * Threads: append, prepare and trim may run on different worker threads at
 * once (the segment list is locked inside); open, replay and close run
 * alone.
 */
#ifndef KV_REVLOG_H
#define KV_REVLOG_H

#include <stddef.h>
#include <stdint.h>

#include "kv/op.h"

typedef enum {
  KV_SYNC_ALWAYS = 0, /* fdatasync the log before a batch is answered */
  KV_SYNC_NONE = 1    /* no flush: survives a crash of kvd, not of the OS */
} kv_sync_t;

#define KV_REVLOG_DIR "log"
#define KV_REVLOG_SEGMENT ((uint64_t)64 << 20)

typedef struct kv_revlog kv_revlog_t;

/* Opens DIR/log, creating it (and syncing DIR) unless readonly; leftover
 * spare segments are removed.  The first segment is 1 MiB, and each next
 * one twice the last, up to seg_size (0: KV_REVLOG_SEGMENT); a batch
 * larger than that gets a segment of its own size.  On failure writes a one-line reason to err.
 * Returns 0, KV_ENOMEM or KV_EIO. */
int kv_revlog_open(const char *dir, kv_sync_t sync, uint64_t seg_size,
                   int readonly, kv_revlog_t **out, char *err, size_t errlen);

void kv_revlog_close(kv_revlog_t *l);

/* Calls fn for every record with a revision above after, in order, and
 * leaves the log ready to append after the last valid record.  A torn
 * tail is zeroed (or, read-only, ignored); damage, a gap in the
 * revisions, or a log that starts after after + 1 fails with KV_ECORRUPT
 * and one line in err.  *last is the last revision in the log (after, if
 * none is above it).  op's slices point into the log and are valid only
 * during the call.  Returns 0, KV_ECORRUPT, KV_EIO, KV_ENOMEM or fn's
 * error. */
typedef int (*kv_revlog_fn)(void *ctx, const kv_op_t *op);
int kv_revlog_replay(kv_revlog_t *l, uint64_t after, kv_revlog_fn fn,
                     void *ctx, uint64_t *last, char *err, size_t errlen);

/* Appends ops (consecutive revisions) with one write and, unless sync is
 * none, one fdatasync.  Returns 0; KV_ENOSPACE when a new segment could
 * not be allocated (nothing was written); or KV_EIO when the write or the
 * flush failed: the records were overwritten with zeros, so a restart of
 * a machine that did not crash never replays them, and the log refuses
 * every later append. */
int kv_revlog_append(kv_revlog_t *l, const kv_op_t *ops, size_t n);

/* Bytes a batch of ops takes in the log. */
uint64_t kv_revlog_size(const kv_op_t *ops, size_t n);

/* True when the current segment is past half full and no spare segment
 * is ready: call kv_revlog_prepare on a worker. */
int kv_revlog_wants_spare(kv_revlog_t *l);

/* Creates and zero-fills the spare segment the next switch will use.
 * Returns 0, KV_ENOSPACE or KV_EIO. */
int kv_revlog_prepare(kv_revlog_t *l);

/* Removes the segments that hold only revisions up to rev (never the one
 * being appended to), then syncs the directory.  Returns 0 or KV_EIO. */
int kv_revlog_trim(kv_revlog_t *l, uint64_t rev);

/* Calls fn for each logged write with a revision from `from` to `to`, in
 * order, from a thread beside the appender, the spare maker and trim.
 * Every revision up to `to` must be durable (appended and flushed).  fn
 * may stop the scan by returning KV_ESTOP (then the scan returns 0).
 * op's slices are valid only during the call.  Returns 0; KV_ENOTFOUND
 * when the log no longer holds `from` (a checkpoint trimmed it); or
 * KV_EIO or KV_ECORRUPT. */
int kv_revlog_scan(kv_revlog_t *l, uint64_t from, uint64_t to,
                   kv_revlog_fn fn, void *ctx);

/* The first revision the log holds, or 0 when it holds none. */
uint64_t kv_revlog_first(kv_revlog_t *l);

/* Segments on disk now. */
size_t kv_revlog_segments(kv_revlog_t *l);

#endif
