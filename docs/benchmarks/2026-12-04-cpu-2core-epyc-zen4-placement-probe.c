// Core-to-core round trip (ns) between threads pinned to CPU 0 and CPU 1: a cache line bounced
// N times. Built by ...-placement-probe.py with `cc -O2 -shared -fPIC -pthread`.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
static _Alignas(64) atomic_int flag;
static int N;
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void *partner(void *a) { pin(1); atomic_store(&flag, 2); for (int i = 0; i < N; i++) { while (atomic_load(&flag) != 1) ; atomic_store(&flag, 0); } return 0; }
static void *driver(void *out) {
  pin(0); pthread_t t; atomic_store(&flag, 3); pthread_create(&t, 0, partner, 0);
  while (atomic_load(&flag) != 2) ;
  atomic_store(&flag, 0);
  double t0 = now();
  for (int i = 0; i < N; i++) { atomic_store(&flag, 1); while (atomic_load(&flag) != 0) ; }
  *(double *)out = (now() - t0) / N * 1e9;
  pthread_join(t, 0); return 0;
}
double c2c_ns(int n) { double out; N = n; pthread_t t; pthread_create(&t, 0, driver, &out); pthread_join(t, 0); return out; }
