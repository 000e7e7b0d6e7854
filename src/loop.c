/* loop.c: the process's libevent base, signals and timers (see include/loop.h). */
#include "loop.h"

#include <errno.h>
#include <event2/event.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "xfuncs.h"

struct loop_sig {
    struct event *ev;
    loop_signal_cb cb;
    void *arg;
    struct loop_sig *next;
};

struct loop {
    struct event_base *base;
    struct loop_sig *sigs;
};

struct loop_timer {
    struct event *ev;
    loop_timer_cb cb;
    void *arg;
    struct timeval tv;
    bool repeat;
};

/*
 * libevent's allocations go through a small cache of large blocks. Every
 * buffer chain of a relay (16 KiB and up) is allocated when data arrives and
 * freed once written, and musl's allocator returns such blocks to the kernel
 * at once: a 256 MiB transfer through the gateway cost about 48,000 mmap and
 * munmap and 92,000 madvise calls, half of its system time. Blocks of 4 KiB
 * to 1 MiB are kept instead, by power-of-two class, up to LOOP_CACHE_MAX
 * bytes in all, and handed out again. Sizes come from malloc_usable_size(),
 * so a block allocated before or outside the cache is freed correctly too.
 * Sanitizer builds pass straight through (their checks stay meaningful).
 */
#define LOOP_CACHE_MIN_SHIFT 12 /* 4 KiB */
#define LOOP_CACHE_MAX_SHIFT 20 /* 1 MiB */
#define LOOP_CACHE_MAX (2u << 20)
#define LOOP_CACHE_CLASSES (LOOP_CACHE_MAX_SHIFT - LOOP_CACHE_MIN_SHIFT + 1)

#if defined(__SANITIZE_ADDRESS__)
#define LOOP_CACHE_ON 0
#else
#define LOOP_CACHE_ON 1
#endif

struct loop_block {
    struct loop_block *next;
};

static struct {
    struct loop_block *free[LOOP_CACHE_CLASSES];
    size_t bytes;
    int lock;
} loop_cache;

static void
loop_cache_lock(void)
{
    while (__atomic_exchange_n(&loop_cache.lock, 1, __ATOMIC_ACQUIRE))
        ;
}

static void
loop_cache_unlock(void)
{
    __atomic_store_n(&loop_cache.lock, 0, __ATOMIC_RELEASE);
}

/* The class whose blocks hold N bytes (rounding up), or -1 outside. */
static int
loop_class_up(size_t n)
{
    int k = LOOP_CACHE_MIN_SHIFT;

    if (!LOOP_CACHE_ON || n < (3u << (LOOP_CACHE_MIN_SHIFT - 2)) ||
        n > (1u << LOOP_CACHE_MAX_SHIFT))
        return -1;
    while (((size_t)1 << k) < n)
        k++;
    return k - LOOP_CACHE_MIN_SHIFT;
}

void *
loop_mem_alloc(size_t n)
{
    int c = loop_class_up(n);
    struct loop_block *b = NULL;

    if (c < 0)
        return xmalloc(n);
    loop_cache_lock();
    if ((b = loop_cache.free[c]) != NULL) {
        loop_cache.free[c] = b->next;
        loop_cache.bytes -= (size_t)1 << (c + LOOP_CACHE_MIN_SHIFT);
    }
    loop_cache_unlock();
    return b ? (void *)b : xmalloc((size_t)1 << (c + LOOP_CACHE_MIN_SHIFT));
}

void
loop_mem_free(void *p)
{
    size_t u, size;
    int c;

    if (!p)
        return;
    u = LOOP_CACHE_ON ? malloc_usable_size(p) : 0;
    if (u < ((size_t)1 << LOOP_CACHE_MIN_SHIFT) || u > ((size_t)2 << LOOP_CACHE_MAX_SHIFT)) {
        free(p);
        return;
    }
    /* The largest class whose size the block holds. */
    for (c = LOOP_CACHE_CLASSES - 1; ((size_t)1 << (c + LOOP_CACHE_MIN_SHIFT)) > u; c--)
        ;
    size = (size_t)1 << (c + LOOP_CACHE_MIN_SHIFT);
    loop_cache_lock();
    if (loop_cache.bytes + size <= LOOP_CACHE_MAX) {
        struct loop_block *b = p;

        b->next = loop_cache.free[c];
        loop_cache.free[c] = b;
        loop_cache.bytes += size;
        p = NULL;
    }
    loop_cache_unlock();
    free(p);
}

void *
loop_mem_realloc(void *p, size_t n)
{
    size_t u;
    void *q;

    if (!p)
        return loop_mem_alloc(n);
    u = malloc_usable_size(p);
    if (loop_class_up(n) < 0 && loop_class_up(u) < 0)
        return xrealloc(p, n);
    if (n <= u && n > u / 4)
        return p;
    q = loop_mem_alloc(n);
    memcpy(q, p, n < u ? n : u);
    loop_mem_free(p);
    return q;
}

/* libevent's own diagnostics, mapped onto our levels. */
static void
loop_log_cb(int severity, const char *msg)
{
    switch (severity) {
    case EVENT_LOG_DEBUG: log_debug("libevent: %s", msg); break;
    case EVENT_LOG_MSG: log_info("libevent: %s", msg); break;
    case EVENT_LOG_WARN: log_warnx("libevent: %s", msg); break;
    default: log_error("libevent: %s", msg); break;
    }
}

/* libevent's fatal path: it must not return, and we must not log through
 * anything that could re-enter the loop. */
static void
loop_fatal_cb(int err)
{
    log_error("libevent: fatal internal error %d", err);
    abort();
}

struct loop *
loop_new(void)
{
    static bool configured;
    struct loop *l;

    if (!configured) {
        /* Before any other libevent call: allocations then abort on OOM. */
        event_set_mem_functions(loop_mem_alloc, loop_mem_realloc, loop_mem_free);
        event_set_log_callback(loop_log_cb);
        event_set_fatal_callback(loop_fatal_cb);
        configured = true;
    }
    l = xcalloc(1, sizeof(*l));
    l->base = event_base_new();
    if (!l->base)
        fatalx("libevent: cannot create an event base");
    return l;
}

void
loop_free(struct loop *l)
{
    struct loop_sig *s, *next;

    if (!l)
        return;
    for (s = l->sigs; s; s = next) {
        next = s->next;
        event_free(s->ev);
        free(s);
    }
    event_base_free(l->base);
    free(l);
}

struct event_base *
loop_base(struct loop *l)
{
    return l->base;
}

int
loop_run(struct loop *l)
{
    return event_base_dispatch(l->base) < 0 ? -EIO : 0;
}

void
loop_stop(struct loop *l)
{
    event_base_loopbreak(l->base);
}

static void
loop_sig_fire(evutil_socket_t signo, short what, void *arg)
{
    struct loop_sig *s = arg;

    (void)what;
    s->cb((int)signo, s->arg);
}

int
loop_on_signal(struct loop *l, int signo, loop_signal_cb cb, void *arg)
{
    struct loop_sig *s = xcalloc(1, sizeof(*s));

    s->cb = cb;
    s->arg = arg;
    s->ev = evsignal_new(l->base, signo, loop_sig_fire, s);
    if (!s->ev || evsignal_add(s->ev, NULL) < 0) {
        if (s->ev)
            event_free(s->ev);
        free(s);
        return -EINVAL;
    }
    s->next = l->sigs;
    l->sigs = s;
    return 0;
}

uint64_t
loop_now_ms(struct loop *l)
{
    struct timeval tv;

    if (event_base_gettimeofday_cached(l->base, &tv) < 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    }
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static void
loop_timer_fire(evutil_socket_t fd, short what, void *arg)
{
    struct loop_timer *t = arg;

    (void)fd;
    (void)what;
    t->cb(t->arg);
}

struct loop_timer *
loop_timer_new(struct loop *l, loop_timer_cb cb, void *arg)
{
    struct loop_timer *t = xcalloc(1, sizeof(*t));

    t->cb = cb;
    t->arg = arg;
    t->ev = event_new(l->base, -1, 0, loop_timer_fire, t);
    if (!t->ev)
        fatalx("libevent: cannot create a timer");
    return t;
}

void
loop_timer_start(struct loop_timer *t, uint64_t ms, bool repeat)
{
    struct event_base *base = event_get_base(t->ev);

    event_del(t->ev);
    if (repeat != t->repeat) {
        event_free(t->ev);
        t->ev = event_new(base, -1, repeat ? EV_PERSIST : 0, loop_timer_fire, t);
        if (!t->ev)
            fatalx("libevent: cannot create a timer");
        t->repeat = repeat;
    }
    t->tv.tv_sec = (time_t)(ms / 1000);
    t->tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    event_add(t->ev, &t->tv);
}

void
loop_timer_stop(struct loop_timer *t)
{
    event_del(t->ev);
}

bool
loop_timer_pending(const struct loop_timer *t)
{
    return event_pending(t->ev, EV_TIMEOUT, NULL) != 0;
}

void
loop_timer_free(struct loop_timer *t)
{
    if (!t)
        return;
    event_free(t->ev);
    free(t);
}
