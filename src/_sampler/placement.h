/*
 * placement.h - keep the timer thread off the CPU where the GIL holder runs
 * (Linux, reader path).
 *
 * Why
 * ---
 * The timer runs at real-time priority where it may (platform.h,
 * ps_thread_prefer_on_time): a tick must land when it is due. Linux wakes a
 * real-time thread on the CPU it last ran on and preempts whatever normal
 * thread runs there, even when another CPU is idle (select_task_rq_rt only
 * looks elsewhere when a real-time thread runs there). Once the timer has
 * run next to a busy thread, it keeps landing on that thread's CPU: measured
 * as root on 2 vCPUs at 1 kHz, one busy worker with the main thread in
 * `join` was preempted at 1.00 ticks in 1, four workers at 0.56-0.65. When
 * the preempted thread holds the GIL, all of the program's Python code
 * stops for the tick (tens of microseconds).
 *
 * How
 * ---
 * At each check the timer compares the CPU it runs on (sched_getcpu) with
 * the CPU the GIL holder last ran on, which the kernel keeps in the
 * holder's rseq area (struct rseq's cpu_id, updated whenever the thread
 * returns to user space on a CPU). The area sits at a fixed offset from
 * each thread's pointer: glibc 2.35+ publishes it as `__rseq_offset` and
 * `__rseq_size` (looked up with dlsym: older glibc and musl have none, and
 * then nothing here runs). CPython's thread ident is the thread's
 * pthread_t, which is at a fixed distance from its thread pointer; that
 * distance is measured once in the timer thread itself. The holder may
 * exit at any moment, so its cpu_id is copied with ps_safe_read.
 *
 * On a match the timer takes that CPU out of its own affinity mask (one
 * system call, made only on a match) and moves at once; its next wake-ups
 * land on a CPU of the rest. At most one CPU is left out at a time, so the
 * timer never runs short of CPUs. Only when the timer is real-time: at
 * normal priority the scheduler already prefers an idle CPU for it.
 */
#ifndef PYSAMPLER_PLACEMENT_H
#define PYSAMPLER_PLACEMENT_H

#include "saferead.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#  define PS_HAVE_PLACEMENT 1
#  include <dlfcn.h>
#  include <pthread.h>
#  include <sched.h>
#endif

/* a check when the holder changed, else once in this many ticks (a busy
 * holder rarely changes CPU) */
#define PS_PLACEMENT_EVERY 8

typedef struct {
    int on;                 /* real-time timer, rseq published, 2+ CPUs */
    uint64_t moves;         /* times the timer left a holder's CPU */
#ifdef PS_HAVE_PLACEMENT
    ptrdiff_t cpu_id_at;    /* pthread_t -> that thread's rseq cpu_id */
    cpu_set_t allowed;      /* the timer's CPUs when the session started */
    int avoided;            /* the CPU left out of its mask, -1: none */
    unsigned long checked;  /* the holder checked last */
    uint64_t checked_tick;  /* when */
#endif
} ps_placement;

#ifdef PS_HAVE_PLACEMENT
static inline void *ps_thread_pointer(void)
{
    void *tp;
#  if defined(__x86_64__)
    __asm__("mov %%fs:0, %0" : "=r"(tp));  /* the TCB's pointer to itself */
#  else
    __asm__("mrs %0, tpidr_el0" : "=r"(tp));
#  endif
    return tp;
}
#endif

/* Called by the timer thread once it has its priority. */
static void ps_placement_init(ps_placement *p)
{
    memset(p, 0, sizeof(*p));
#ifdef PS_HAVE_PLACEMENT
    {
        const ptrdiff_t *offset = (const ptrdiff_t *)dlsym(RTLD_DEFAULT, "__rseq_offset");
        const unsigned int *size = (const unsigned int *)dlsym(RTLD_DEFAULT, "__rseq_size");
        struct sched_param sp;
        int policy, tries;
        p->avoided = -1;
        if (offset == NULL || size == NULL || *size < 8 ||
            pthread_getschedparam(pthread_self(), &policy, &sp) != 0 || policy != SCHED_RR ||
            sched_getaffinity(0, sizeof(p->allowed), &p->allowed) != 0 ||
            CPU_COUNT(&p->allowed) < 2) {
            return;
        }
        /* cpu_id is the second 32-bit field of struct rseq */
        p->cpu_id_at = ((char *)ps_thread_pointer() - (char *)pthread_self()) + *offset + 4;
        for (tries = 0; tries < 3; tries++) {
            /* the kernel really keeps it: our own cpu_id matches our CPU
             * (a migration between the two reads makes a try fail) */
            uint32_t mine = 0;
            int cpu = sched_getcpu();
            if (ps_safe_read(&mine, (const char *)pthread_self() + p->cpu_id_at, 4) == 0 &&
                cpu >= 0 && mine == (uint32_t)cpu) {
                p->on = 1;
                return;
            }
        }
    }
#endif
}

/* Called by the timer at a tick with the ident of the thread holding the
 * GIL (0: none known). */
static void ps_placement_check(ps_placement *p, unsigned long holder, uint64_t tick)
{
#ifdef PS_HAVE_PLACEMENT
    uint32_t its;
    int mine;
    cpu_set_t mask;
    if (!p->on || holder == 0 ||
        (holder == p->checked && tick - p->checked_tick < PS_PLACEMENT_EVERY)) {
        return;
    }
    p->checked = holder;
    p->checked_tick = tick;
    mine = sched_getcpu();
    if (mine < 0 || mine == p->avoided ||
        ps_safe_read(&its, (const char *)holder + p->cpu_id_at, 4) != 0 ||
        its != (uint32_t)mine) {
        return;
    }
    memcpy(&mask, &p->allowed, sizeof(mask));
    CPU_CLR(mine, &mask);
    if (sched_setaffinity(0, sizeof(mask), &mask) == 0) {
        p->avoided = mine;
        p->moves++;
    } else {
        p->on = 0;  /* refused (a sandbox, a changed cpuset): not again */
    }
#else
    (void)p;
    (void)holder;
    (void)tick;
#endif
}

#endif /* PYSAMPLER_PLACEMENT_H */
