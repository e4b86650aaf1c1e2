/* out_int.h - out.c's helpers for the other request-path modules. */
#ifndef KV_OUT_INT_H
#define KV_OUT_INT_H

#include <stddef.h>

/* Grows the array *p of *cap elements of elem bytes to hold need, doubling
 * from min.  Returns 0 or KV_ENOMEM, leaving *p and *cap as they were. */
int kv__out_grow(void **p, size_t *cap, size_t need, size_t elem,
                 size_t min);

#endif
