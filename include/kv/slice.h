/* slice.h - the one plain value type: a pointer and a length. */
#ifndef KV_SLICE_H
#define KV_SLICE_H

#include <stddef.h>

typedef struct {
  const char *ptr;
  size_t len;
} kv_slice_t;

#endif
