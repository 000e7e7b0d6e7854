/* Unit tests for src/loop.c: timers (one-shot, repeating, re-armed) and signals. */
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "loop.h"
#include "tap.h"

struct counter {
    struct loop *l;
    struct loop_timer *t;
    int fired;
    int stop_after;
};

static void
count_cb(void *arg)
{
    struct counter *c = arg;

    if (++c->fired >= c->stop_after) {
        loop_timer_stop(c->t);
        loop_stop(c->l);
    }
}

static int
test_oneshot_timer(void)
{
    struct counter c = { 0 };
    uint64_t t0;

    c.l = loop_new();
    c.stop_after = 1;
    c.t = loop_timer_new(c.l, count_cb, &c);
    CHECK(!loop_timer_pending(c.t));
    loop_timer_start(c.t, 20, false);
    CHECK(loop_timer_pending(c.t));
    t0 = loop_now_ms(c.l);
    CHECK_INT(loop_run(c.l), 0);
    CHECK_INT(c.fired, 1);
    CHECK(loop_now_ms(c.l) >= t0); /* monotonic */
    loop_timer_free(c.t);
    loop_free(c.l);
    return TAP_PASS;
}

static int
test_repeating_timer(void)
{
    struct counter c = { 0 };

    c.l = loop_new();
    c.stop_after = 5;
    c.t = loop_timer_new(c.l, count_cb, &c);
    loop_timer_start(c.t, 1, true);
    CHECK_INT(loop_run(c.l), 0);
    CHECK_INT(c.fired, 5);
    /* Re-arm as one-shot: fires exactly once more, then the loop runs dry. */
    c.stop_after = 100;
    loop_timer_start(c.t, 1, false);
    CHECK_INT(loop_run(c.l), 0);
    CHECK_INT(c.fired, 6);
    loop_timer_free(c.t);
    loop_timer_free(NULL);
    loop_free(c.l);
    loop_free(NULL);
    return TAP_PASS;
}

static int got_signo;

static void
sig_cb(int signo, void *arg)
{
    got_signo = signo;
    loop_stop(arg);
}

static void
raise_cb(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR1);
}

static int
test_signal(void)
{
    struct loop *l = loop_new();
    struct loop_timer *t = loop_timer_new(l, raise_cb, NULL);

    CHECK_INT(loop_on_signal(l, SIGUSR1, sig_cb, l), 0);
    loop_timer_start(t, 1, false);
    CHECK_INT(loop_run(l), 0);
    CHECK_INT(got_signo, SIGUSR1);
    loop_timer_free(t);
    loop_free(l);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_oneshot_timer), TAP_TEST(test_repeating_timer), TAP_TEST(test_signal))
