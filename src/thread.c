/* thread.c - detached worker threads and their priority. */
#include "kv/thread.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kv/error.h"

int kv_thread_start(void *(*fn)(void *), void *arg) {
  pthread_attr_t attr;
  pthread_t tid;
  int rc;

  if (pthread_attr_init(&attr) != 0) return KV_ENOMEM;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  rc = pthread_create(&tid, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return rc == 0 ? 0 : KV_ENOMEM;
}

void kv_thread_nice(int nice) {
  /* Per thread on Linux: PRIO_PROCESS with a thread id. */
  (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}
