/* router.h - routes and handlers.
 *
 * Raw paths that start with "/_" are kvd's own endpoints; "/" is the whole
 * map; anything else is a key, percent-decoded.  The head is routed as soon
 * as it is complete, so a body is sized, streamed into its record, or
 * refused before it is read.
 */
#ifndef KV_ROUTER_H
#define KV_ROUTER_H

#include "kv/conn.h"

enum {
  KV_ROUTE_NONE = 0,
  KV_ROUTE_KEY,
  KV_ROUTE_ROOT,
  KV_ROUTE_HEALTH,
  KV_ROUTE_READY,
  KV_ROUTE_METRICS
};

/* Routes a complete head: checks the target, key and method, and chooses
 * where the body goes.  Errors land in req->err (answered at the end of
 * the message, connection kept) or req->fatal (answered now, connection
 * closed).  Returns 0, or -1 when req->fatal is set. */
int kv_route_head(kv_conn_t *c);

/* Handles a complete message.  Returns 0 if the answer is queued, or 1 if
 * the request now waits for the store (the parser must pause). */
int kv_route_message(kv_conn_t *c);

#endif
