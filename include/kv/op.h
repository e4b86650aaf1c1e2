/* op.h - one write as the log and the checkpoint store it. */
#ifndef KV_OP_H
#define KV_OP_H

#include <stdint.h>

#include "kv/slice.h"

/* An expiry removes its key as a DELETE does, but is its own kind of
 * write: the change feed names it. */
enum { KV_OP_PUT = 1, KV_OP_DEL = 2, KV_OP_EXPIRE = 3 };

typedef struct {
  int op; /* KV_OP_PUT, KV_OP_DEL or KV_OP_EXPIRE */
  kv_slice_t key;
  kv_slice_t val;  /* KV_OP_PUT only */
  uint64_t rev;    /* the write's revision */
  uint64_t batch;  /* the first revision of the write's group commit */
  uint64_t expires; /* Unix milliseconds; 0: never */
} kv_op_t;

#endif
