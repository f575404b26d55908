/*
 * priority.h - when the timer thread runs at raised (real-time) priority.
 *
 * Why raise it at all
 * -------------------
 * A tick must land when it is due, not when a core happens to free up. On
 * a machine with more runnable threads than cores, a timer at normal
 * priority runs mostly right after one of the program's threads blocks,
 * which is when the GIL is with code that holds it long: measured, shares
 * of such code +0.05 to +0.08 too high.
 *
 * Why not always
 * --------------
 * Linux wakes a real-time thread on the CPU it last ran on, and preempts
 * whatever runs there, even with another CPU idle (it looks elsewhere only
 * when that CPU runs a real-time thread too). In a threaded program the GIL
 * holder moves between cores and is often on that CPU; every such tick
 * stops the holder, and with it all the program's Python code, for the
 * tick's length plus two context switches, and leaves the holder's caches
 * to the timer. Measured (2 vCPUs, 1 kHz, main in join, run as root): one
 * busy worker was preempted at every tick; with 4 workers, 42% of ticks
 * preempted one (their forced context switches 140 -> 730 in 1.3 s). At
 * normal priority the OS wakes the timer on the idle CPU when there is
 * one (0.01 per tick; 140, unchanged), on time.
 *
 * So
 * --
 * The timer starts at normal priority and measures, over windows of 32
 * ticks, how long it waited, runnable, for a CPU (Linux schedstat: only
 * this machine's threads count, not a hypervisor running the machine
 * late). When that wait reaches an eighth of the window (the OS had no CPU
 * free for it: an oversubscribed machine; without schedstat, when 4 of the
 * 32 ticks woke over a quarter of a period late), it raises its
 * priority for PS_HOLD_MIN_NS, then lowers it and measures again; a window
 * that fails again right away doubles the hold (up to PS_HOLD_MAX_NS), one
 * that passes resets it. Where raising is refused (not root, no
 * CAP_SYS_NICE, the usual container), it stays normal and stops asking.
 * Windows and macOS keep the raised priority for the whole session
 * (PS_PRIORITY_LOWERS 0): their schedulers place a readied high-priority
 * thread on an idle processor first.
 */
#ifndef PYSAMPLER_PRIORITY_H
#define PYSAMPLER_PRIORITY_H

#include <stdint.h>

#include "platform.h"

/* Ticks measured at normal priority. The timer's wait for a CPU that
 * raises it: an eighth of the window's time. Measured (2 vCPUs, 1 kHz):
 * 3 us per tick with one busy worker (bursts of ~1 ms in a window now and
 * then), 0.1 ms per tick with two other processes busy on both CPUs (the
 * scheduler still runs a thread that slept almost at once); an idle CPU
 * runs it within ~10-60 us. Late wake-ups are no such sign: under a busy
 * hypervisor even an idle virtual machine woke 15% of 1 ms sleeps over
 * 250 us late (measured), with no thread waiting for its CPUs. */
#define PS_PRIO_WINDOW 32
#define PS_WAIT_SHARE 4        /* raised when wait >= window time / 4 */
#define PS_PRIO_LATE_MAX 4     /* without schedstat: late ticks that raise it */
#define PS_HOLD_MIN_NS 1000000000LL
#define PS_HOLD_MAX_NS 16000000000LL

typedef struct {
    int raised;        /* running at raised priority now */
    int refused;       /* the OS refused to raise it: do not ask again */
    int wait_fd;       /* ps_wait_open(), -1: count late ticks instead */
    int64_t wait0;     /* the wait for a CPU when the window began, -1: unknown */
    int64_t period;    /* the timer's mean period */
    uint32_t n, late;  /* ticks and late ticks in the current window */
    int64_t until;     /* raised: when to lower it and measure again */
    int64_t hold;      /* how long the next raise lasts */
    uint64_t raised_ticks; /* ticks taken at raised priority */
} ps_priority;

static inline void ps_priority_window(ps_priority *p)
{
    p->n = p->late = 0;
    p->wait0 = ps_wait_ns(p->wait_fd);
}

/* On the timer thread, before its first tick. */
static inline void ps_priority_init(ps_priority *p, int64_t period)
{
    p->period = period;
    p->raised = p->refused = 0;
    p->until = 0;
    p->hold = PS_HOLD_MIN_NS;
    p->raised_ticks = 0;
    p->wait_fd = -1;
    if (!PS_PRIORITY_LOWERS) {
        p->raised = ps_thread_raise() == 0;
        p->refused = !p->raised;
        return;
    }
    ps_thread_precise_wake();
    p->wait_fd = ps_wait_open();
    ps_priority_window(p);
}

/* On the timer thread, when it ends. */
static inline void ps_priority_end(ps_priority *p)
{
    ps_wait_close(p->wait_fd);
    p->wait_fd = -1;
}

/* Did the window now ending find no CPU free for the timer? */
static inline int ps_priority_starved(ps_priority *p)
{
    if (p->wait0 >= 0) {
        int64_t w = ps_wait_ns(p->wait_fd);
        if (w >= 0) {
            return (w - p->wait0) * PS_WAIT_SHARE >= PS_PRIO_WINDOW * p->period;
        }
    }
    return p->late >= PS_PRIO_LATE_MAX;
}

/* After each tick: `now` the time it woke, `late` how long after its
 * deadline. */
static inline void ps_priority_tick(ps_priority *p, int64_t now, int64_t late)
{
    if (p->raised) {
        p->raised_ticks++;
        if (PS_PRIORITY_LOWERS && now >= p->until) {
            ps_thread_lower();
            p->raised = 0;
            ps_priority_window(p);
        }
        return;
    }
    if (p->refused) {
        return;
    }
    p->n++;
    if (late * 4 > p->period) {
        p->late++;
    }
    if (p->n < PS_PRIO_WINDOW) {
        return;
    }
    if (!ps_priority_starved(p)) {
        p->hold = PS_HOLD_MIN_NS;  /* on time: the next raise starts short */
    } else if (ps_thread_raise() == 0) {
        p->raised = 1;
        p->until = now + p->hold;
        p->hold = p->hold * 2 > PS_HOLD_MAX_NS ? PS_HOLD_MAX_NS : p->hold * 2;
    } else {
        p->refused = 1;
    }
    ps_priority_window(p);
}

#endif /* PYSAMPLER_PRIORITY_H */
