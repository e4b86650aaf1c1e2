/* container.h - the structure that holds a member.
 *
 * Callbacks from libuv, llhttp and the store hand back a pointer to a
 * member embedded in a bigger structure (a uv_write_t in a connection, the
 * llhttp_t in a kv_http_t).  KV_CONTAINER_OF recovers the structure, as
 * the Linux kernel's container_of does, and is the only place kvd does that
 * pointer arithmetic.
 */
#ifndef KV_CONTAINER_H
#define KV_CONTAINER_H

#include <stddef.h>

/* The type that holds *ptr as its member.  ptr must point to that member
 * of a live type; the result is never NULL. */
#define KV_CONTAINER_OF(ptr, type, member)                                    \
  ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
