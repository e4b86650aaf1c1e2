/* store_int.h - the store's own parts: commit.c, imager.c and store.c.
 *
 * They report to store.c, the one scheduler of the log, the checkpoint and
 * the image; nothing outside the store calls these.
 */
#ifndef KV_STORE_INT_H
#define KV_STORE_INT_H

#include "kv/store.h"

void kv__store_schedule(kv_store_t *s);
void kv__store_committed(kv_store_t *s, kv_write_t *batch, int rc);
int kv__commit_start(kv_store_t *s, int pre);
void kv__expirer_landed(kv_store_t *s, int rc);
void kv__expirer_free(kv_store_t *s);
void kv__expirer_init(kv_store_t *s);
void kv__expirer_arm(kv_store_t *s);
void kv__lister_init(kv_store_t *s);
void kv__lister_start(kv_store_t *s);
int kv__lister_idle(const kv_store_t *s);
int kv__feed_init(kv_store_t *s);
void kv__feed_free(kv_store_t *s);
void kv__feed_close(kv_store_t *s);
void kv__feed_publish(kv_store_t *s, const kv_op_t *op);
void kv__feed_notify(kv_store_t *s);
int kv__feed_idle(const kv_store_t *s);
void kv__backup_init(kv_store_t *s);
void kv__backup_start(kv_store_t *s);
int kv__backup_idle(const kv_store_t *s);
void kv__imager_init(kv_store_t *s);
void kv__imager_changed(kv_store_t *s);
int kv__imager_start(kv_store_t *s);
void kv__imager_fail(kv_store_t *s, int rc);
int kv__imager_idle(kv_store_t *s);

#endif
