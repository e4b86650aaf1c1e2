/* checkpoint.h - the durable copy of the map, in LMDB.
 *
 * This is the only module that includes lmdb.h.  A kvd data directory holds
 * an LMDB environment (data.mdb, lock.mdb) with two named databases: "meta",
 * whose key "format" identifies the directory as kvd's ("kvd-2") and whose
 * key "rev" is the last revision the checkpoint holds (8 bytes,
 * little-endian); and "data", the keys sorted by key bytes, each value
 * behind a 16-byte header: its modification revision and its expiry time
 * in Unix milliseconds (0: none), little-endian.  A "kvd-1" directory
 * (values without a header) is migrated when opened for writing.
 *
 * Every commit is synced (no MDB_NOSYNC, whatever kvd's --sync): the log
 * replays onto LMDB, so a power cut must never leave it half written.
 *
 * Threads: kv_ckpt_commit may run on any one thread at a time (the
 * checkpoint worker).  Snapshots are read-only transactions opened with
 * MDB_NOTLS, so one may be opened on the listener thread and read on a
 * worker, as long as one thread at a time uses it.
 */
#ifndef KV_CHECKPOINT_H
#define KV_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "kv/op.h"
#include "kv/slice.h"

#define KV_CKPT_READONLY 0x1 /* open for reading only (kvdump) */
/* The path names one data file, such as a backup, rather than a data
 * directory: no lock file is made or used, so only this process may have
 * it open; it must exist. */
#define KV_CKPT_FILE 0x2
/* LMDB's reader table: one slot per open snapshot of any process (kvd's
 * image builds, every kvdump).  LMDB's default is 126. */
#define KV_CKPT_READERS 1024

typedef struct kv_ckpt kv_ckpt_t;

/* Opens the data directory dir (with KV_CKPT_FILE, the data file dir).
 * max_readers sizes LMDB's reader table
 * when this process is the first to open it (0: KV_CKPT_READERS).  Without
 * KV_CKPT_READONLY a missing dir is created, and an empty one is
 * initialised, with the new directory entries fsynced; a directory that holds anything
 * else and no kvd environment is refused with KV_ENOTKVD.  With it, the
 * directory must already be a kvd directory, nothing is created, and the
 * existing lock.mdb is used as is (never recreated, so its owner is kept).
 * On failure a one-line reason, without dir, is written to errbuf.  Returns
 * 0, KV_ENOTKVD, KV_ECORRUPT, KV_EIO, KV_ENOMEM, KV_ENOSPACE (the first
 * commit of a new directory did not fit) or KV_ESTORE. */
int kv_ckpt_open(const char *dir, int flags, unsigned max_readers,
                 kv_ckpt_t **out, char *errbuf, size_t errlen);

void kv_ckpt_close(kv_ckpt_t *c);

/* Drops this process's mapping of the pages read so far (after the
 * reload); they stay in the page cache and fault back in if read. */
void kv_ckpt_release_pages(kv_ckpt_t *c);

/* Sets the LMDB map size (address space, not disk space); a size below
 * the data's is raised to it.  No transaction of this process may be
 * open.  Returns 0 or KV_ESTORE. */
int kv_ckpt_set_mapsize(kv_ckpt_t *c, size_t bytes);

/* Grows the map after KV_EMAPFULL: doubles it up to 1 GiB, then adds
 * 1 GiB at a time.  No transaction of this process may be open.  Returns
 * 0 with the new size in *now, or KV_ENOSPACE. */
int kv_ckpt_grow(kv_ckpt_t *c, size_t *now);

/* Frees the reader slots of dead processes first, then applies ops in
 * order in one write transaction that also records the last op's
 * revision as the checkpoint's, and commits it, synced.  Deleting a missing key is not an error.  On
 * failure nothing of the batch is applied.  Returns 0; KV_EMAPFULL (grow
 * the map and retry) or KV_ENOSPACE (no disk blocks for the batch), when
 * nothing of it reached the disk; KV_EIO when the flush itself failed,
 * after which the caller must not write again (see commit.c); or
 * KV_ESTORE. */
int kv_ckpt_commit(kv_ckpt_t *c, const kv_op_t *ops, size_t n);

/* Deletions are remembered as tombstones for the change feed.  Before a
 * kv_ckpt_commit (on its thread): deletions at or below keep_rev that
 * were checkpointed before before_ms (Unix ms) are forgotten; now_ms
 * dates the new ones.  A commit of no op only forgets. */
void kv_ckpt_set_prune(kv_ckpt_t *c, uint64_t keep_rev, uint64_t before_ms,
                       uint64_t now_ms);

typedef struct {
  uint64_t forgot;    /* the newest deletion forgotten, or 0 */
  uint64_t first_rev; /* the oldest one remembered, or 0 */
  uint64_t first_ms;  /* and when it was checkpointed */
} kv_ckpt_tombs_t;

/* As of the open or the last commit (read it on the commit's thread or
 * after its completion). */
kv_ckpt_tombs_t kv_ckpt_tombs(const kv_ckpt_t *c);

/* Number of keys in "data" and the revision the checkpoint holds, from a
 * fresh read txn.  Returns 0, KV_EIO, KV_ECORRUPT or KV_ESTORE. */
int kv_ckpt_stat(kv_ckpt_t *c, uint64_t *keys, uint64_t *rev);

/* Writes a compacted copy of the environment to fd, from its current
 * offset (normally 0): a data.mdb file holding one read snapshot's pages
 * and no free ones, which kv_ckpt_open takes as the data.mdb of a new
 * directory or, with KV_CKPT_FILE, as it is.  It takes a reader slot while
 * it runs, and may run on any thread; fd is neither synced nor closed.
 * Commits may go on meanwhile, but then only the copy itself says which
 * revision it holds: kvd holds its checkpoints during a copy, so that it
 * is the checkpoint's.  Returns 0, KV_ENOSPACE (the disk under fd is
 * full), KV_EIO, KV_EREADERS, KV_ENOMEM or KV_ESTORE. */
int kv_ckpt_copy(kv_ckpt_t *c, int fd);

typedef struct kv_ckpt_snap kv_ckpt_snap_t;

/* Opens a consistent read-only snapshot, positioned before the first key
 * that starts with prefix (plen may be 0).  Returns 0, KV_ENOMEM,
 * KV_EREADERS (no reader slot is free) or KV_ESTORE. */
int kv_ckpt_snap_open(kv_ckpt_t *c, const char *prefix, size_t plen,
                      kv_ckpt_snap_t **out);

/* Returns the next record in key order through item, whose bytes stay
 * valid until the snapshot is closed.  Returns 1 for a record, 0 at the end
 * (or past the prefix), or a negative error (KV_ECORRUPT for a value too
 * short for its header). */
int kv_ckpt_snap_next(kv_ckpt_snap_t *s, kv_item_t *item);

/* Moves the snapshot's start to the first key at or after key (within its
 * prefix) when key sorts after the prefix; the first kv_ckpt_snap_next
 * returns from there.  key must stay valid until then. */
void kv_ckpt_snap_seek(kv_ckpt_snap_t *s, const char *key, size_t klen);

/* The revision the snapshot holds: every write up to it, none after. */
int kv_ckpt_snap_rev(kv_ckpt_snap_t *s, uint64_t *rev);

/* Calls fn, in no particular order, for the latest change of each key
 * under the snapshot's prefix whose revision is in (after, upto]: a PUT
 * with its value for a stored key, a DELETE or EXPIRE for a remembered
 * deletion.  Rewinds the snapshot.  Returns 0, fn's error, KV_ECORRUPT or
 * KV_ESTORE. */
int kv_ckpt_snap_changes(kv_ckpt_snap_t *s, uint64_t after, uint64_t upto,
                         int (*fn)(void *ctx, const kv_op_t *op), void *ctx);

/* Positions the snapshot before its first record again. */
void kv_ckpt_snap_rewind(kv_ckpt_snap_t *s);


void kv_ckpt_snap_close(kv_ckpt_snap_t *s);

#endif
