#ifndef OPENSHELL_LOOP_H
#define OPENSHELL_LOOP_H
/*
 * loop: a thin layer over one libevent event_base per process.
 *
 * loop_new() creates the base and routes libevent's allocations (through
 * x-wrappers: OOM aborts) and its internal messages (through log.h).
 * Signals and timers are loop-owned objects: a signal handler registered with
 * loop_on_signal() lives until loop_free(); a timer from loop_timer_new() is
 * owned by the caller and released with loop_timer_free() (NULL is fine).
 * Callbacks run on the loop thread and must not block. loop_stop() makes
 * loop_run() return after the current callbacks finish.
 * Modules needing libevent directly (bufferevents, evdns) use loop_base().
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct loop;
struct loop_timer;

typedef void (*loop_signal_cb)(int signo, void *arg);
typedef void (*loop_timer_cb)(void *arg);

/* A new loop; never NULL (aborts if libevent cannot create a backend). */
struct loop *loop_new(void);
void loop_free(struct loop *l);
struct event_base *loop_base(struct loop *l);

/* The allocator libevent uses (a cache of 4 KiB-1 MiB blocks in front of
 * malloc, see loop.c), for other bulk buffers of the same traffic (nghttp2).
 * Aborts on OOM; loop_mem_free() takes any malloc'd pointer. */
void *loop_mem_alloc(size_t n);
void *loop_mem_realloc(void *p, size_t n);
void loop_mem_free(void *p);

/* Run until loop_stop() or until nothing is pending. Returns 0 or -EIO. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

/* Call CB(signo, ARG) on the loop whenever SIGNO arrives. Returns 0 or
 * -errno. The handler lives until loop_free(). */
int loop_on_signal(struct loop *l, int signo, loop_signal_cb cb, void *arg);

/* Monotonic milliseconds (cached per loop iteration). */
uint64_t loop_now_ms(struct loop *l);

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_cb cb, void *arg);
/* (Re)arm: fire after MS milliseconds, then every MS if REPEAT. */
void loop_timer_start(struct loop_timer *t, uint64_t ms, bool repeat);
void loop_timer_stop(struct loop_timer *t);
bool loop_timer_pending(const struct loop_timer *t);
void loop_timer_free(struct loop_timer *t);

#endif
