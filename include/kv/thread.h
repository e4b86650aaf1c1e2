/* thread.h - the store's own worker threads.
 *
 * Work that may take long (a checkpoint, an image, a listing, a backup
 * copy, a change feed catching up) runs on a short-lived detached thread
 * of its own rather than in libuv's pool, where it would hold up group
 * commits, and at a lower priority where it is background work, so that
 * on a busy core it yields to the listener.  A pool thread could not be
 * niced and restored without CAP_SYS_NICE.
 */
#ifndef KV_THREAD_H
#define KV_THREAD_H

/* Priorities (nice values) for the calling thread. */
enum {
  KV_NICE_CHECKPOINT = 5, /* must keep up with writes, but after them */
  KV_NICE_COPY = 10,      /* a backup copy, a feed catching up */
  KV_NICE_IMAGE = 19      /* a background image build */
};

/* Starts fn(arg) on a new detached thread.  Returns 0 or KV_ENOMEM. */
int kv_thread_start(void *(*fn)(void *), void *arg);

/* Lowers the calling thread's priority to nice (only ever lowers it;
 * failure costs only the lower priority). */
void kv_thread_nice(int nice);

#endif
