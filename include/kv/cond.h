/* cond.h - RFC 9110 preconditions: If-Match and If-None-Match.
 *
 * An entity tag of kvd is a revision in quotes, "12".  A list is "*" or
 * comma-separated tags, each maybe weak (W/"12"); a tag that is not a
 * revision is valid and matches nothing.  If-Match compares strongly (a
 * weak tag never matches), If-None-Match weakly.
 */
#ifndef KV_COND_H
#define KV_COND_H

#include <stddef.h>
#include <stdint.h>

#define KV_COND_TAGS 32 /* tags one header may list */

/* Kept with every connection, so packed: tag k is rev[k], a revision when
 * bit k of num is set (else it matches nothing), weak when bit k of weak
 * is. */
typedef struct {
  unsigned present : 1;
  unsigned any : 1; /* "*" */
  uint8_t n;
  uint32_t num, weak;
  uint64_t rev[KV_COND_TAGS];
} kv_cond_list_t;

typedef struct {
  kv_cond_list_t match; /* If-Match */
  kv_cond_list_t none;  /* If-None-Match */
} kv_cond_t;

/* Parses one header's value (several fields joined by commas).  Returns 0,
 * or KV_EBADCOND for anything but "*" or a list of 1 to KV_COND_TAGS
 * entity tags. */
int kv_cond_parse(const char *s, size_t len, kv_cond_list_t *out);

/* Evaluates c against a key (or the image) that exists or not, at
 * revision rev, in RFC 9110's order: If-Match first.  Returns 0 when the
 * request may go on, KV_EPRECOND (412), or, for a read (GET or HEAD)
 * whose If-None-Match fails, 1: answer 304 Not Modified. */
int kv_cond_eval(const kv_cond_t *c, int exists, uint64_t rev, int read);

#endif
