/*
 * cpu.h - who gets a sample, and what it weighs, on the reader path
 * (reader.h): the attribution model, per thread and per tick.
 *
 * CPU mode: period-weighted on-CPU sampling
 * -----------------------------------------
 * The statistical model of perf, pprof and SIGPROF profilers, with the GIL
 * saying who is on CPU. At each tick (w = wall time since the previous
 * tick):
 *   - The thread holding the GIL is running Python code (or C code called
 *     from it that keeps the GIL). It gets one sample with its current stack,
 *     weighing w. When the same thread held the GIL at the previous tick and
 *     no other thread took it in between (the GIL's switch count did not
 *     move), its own CPU clock says exactly how much of w it ran (it may have
 *     been preempted by the OS, or have waited in a system call): the sample
 *     weighs that instead.
 *   - A thread that is blocked (select, a socket write, Condition.wait,
 *     sleep) does not hold the GIL and gets nothing, whatever CPU it used
 *     before it blocked: that CPU was sampled, while it ran, as GIL-holder
 *     samples. This is what keeps blocking calls out of a CPU profile.
 *   - A thread that lives a few milliseconds is the holder at about as many
 *     ticks as its lifetime spans: counted statistically, unbiased, nothing
 *     lost at its exit.
 *   - Threads computing in C with the GIL released (zlib, hashlib, numpy)
 *     are on CPU without holding the GIL. Their CPU clock tells: a thread
 *     that is not the holder, did not hold the GIL at the tick before, whose
 *     innermost frame (code, instruction) is where it was at its previous
 *     clock reading, and whose clock advanced by at least 60% of the wall
 *     time since that reading, is computing in that call; the clock's
 *     advance is attributed to its stack. (A Python thread that merely
 *     waited for the GIL between two readings moved its instruction
 *     pointer, or used well under 60%: two threads sharing the GIL get at
 *     most half each when neither holds it at either reading.)
 *
 * Whatever CPU no sample took (system calls made without the GIL, GIL
 * hand-offs, thread start/exit, native threads) is recorded under one
 * synthetic frame, from the process's CPU clock (ps_other below).
 *
 * Idle threads cost almost nothing
 * --------------------------------
 * A thread's Python stack changes only while it holds the GIL. A thread that
 * is not the holder, was not the last holder, and whose frame pointer,
 * data-stack top and exception state (direct reads of its thread state under
 * the head lock) did not change since its last walk, keeps the stack of that
 * walk; when the GIL's switch count did not move either, that is exact.
 * Otherwise its CPU clock, read with exponential back-off (every 1, 2, 4 ...
 * up to 128 ticks while it stays idle), catches a thread that ran and came
 * back to the same frame address: a clock that moved means walk again.
 *   - wall mode: such a thread extends its previous sample row (weight +w,
 *     one more sample in the row) instead of appending one;
 *   - CPU mode: it records nothing, and costs one clock reading now and then.
 * With many threads, even looking at each one per tick costs more than
 * the rest of the tick (a cache miss or two per thread state): while the
 * switch count does not move, ticks read the holder alone and the others
 * are dealt with in bulk at the next full walk of the list (core.h,
 * "quiet ticks").
 *
 * Wall mode: every thread gets w at every tick, sleeping or not.
 */
#ifndef PYSAMPLER_CPU_H
#define PYSAMPLER_CPU_H

#include <stdint.h>
#include <string.h>

#include "platform.h"

#define PS_BACKOFF_MAX 128     /* ticks between clock readings of an idle thread */
#define PS_C_CALL_SHARE 0.6    /* clock advance / wall time that means "computing in C" */

/* What the sampler knows of one thread, kept by the timer thread. */
typedef struct {
    ps_clock clock;                /* its CPU clock, opened at registration */
    /* thread-state fields at the last walk (the stack "signature") */
    uintptr_t frame, top, chunk, exc;
    unsigned long walk_switches;   /* GIL switch count at the last walk */
    int32_t node;                  /* leaf of the last walk's stack, -1: none */
    int64_t row;                   /* this thread's last sample row, -1: none */
    uint64_t row_tick;             /* the tick that row belongs to (or was extended at) */
    /* CPU clock */
    int64_t cpu;                   /* at the last reading, -1: never read */
    int64_t cpu_at;                /* monotonic time of that reading */
    uint32_t backoff;              /* ticks between readings while idle */
    uint64_t next_read;            /* tick of the next reading */
    uintptr_t leaf_code, leaf_instr; /* innermost frame at the last C-call check */
    unsigned long read_switches;   /* GIL switch count at the last reading */
    int read_last;                 /* it was the GIL's last holder at that reading */
    int read_known;                /* the two above are set */
    uint64_t seen_tick;            /* last tick it was in the thread list */
    int was_holder;                /* held the GIL at its last tick */
    /* wall mode: the sampler's quiet-tick totals when this thread was
     * last credited with them (core.h, ps_quiet_credit) */
    int64_t quiet_w;
    uint32_t quiet_n;
} ps_tmodel;

static inline void ps_tmodel_init(ps_tmodel *m, int64_t baseline_cpu, int64_t now)
{
    ps_clock clock = m->clock;  /* opened by the caller */
    memset(m, 0, sizeof(*m));
    m->clock = clock;
    m->node = -1;
    m->row = -1;
    m->cpu = baseline_cpu;
    m->cpu_at = now;
    m->backoff = 1;
}

/* Did the thread's stack possibly change since its last walk? */
static inline int ps_tmodel_changed(const ps_tmodel *m, uintptr_t frame, uintptr_t top,
                                    uintptr_t chunk, uintptr_t exc)
{
    return m->node < 0 || m->frame != frame || m->top != top || m->chunk != chunk ||
           m->exc != exc;
}

/* Is a clock reading due at this tick? (idle threads back off) */
static inline int ps_tmodel_read_due(const ps_tmodel *m, uint64_t tick)
{
    return tick >= m->next_read;
}

/* After a clock reading: keep reading every tick while the thread uses CPU,
 * back off while it does not. `moved` is "used a noticeable share". */
static inline void ps_tmodel_schedule(ps_tmodel *m, uint64_t tick, int moved)
{
    if (moved) {
        m->backoff = 1;
    } else if (m->backoff < PS_BACKOFF_MAX) {
        m->backoff *= 2;
    }
    m->next_read = tick + m->backoff;
}

/* Weights of CPU samples, and the CPU no sample took.
 *
 * When the interval was the holder's alone (same holder at both ticks, GIL
 * switch count unchanged), its clock delta over the interval is the exact
 * weight of its sample. Other holder samples weigh the wall interval w,
 * scaled by a calibration share: on a loaded machine the OS preempts the
 * holder while it holds the GIL, and w then overstates its CPU (measured:
 * +16% to +25% of the total, 4 busy workers, load average 5 on 2 cores).
 * Every period (ps_other_period, 10 ms or more) the process's CPU clock
 * (which counts threads that have exited too), less the sampler's own
 * threads and the CPU weighed exactly, is compared with the wall weight of
 * the scaled samples of that period:
 *
 *     share = min(1, that CPU / their wall weight)    (decaying sums)
 *
 * and whatever CPU the samples of the period did not take (system calls
 * made with the GIL released, GIL hand-offs, the start and end of threads
 * outside any Python frame, native threads that never run Python) is
 * recorded under a synthetic "[CPU outside sampled Python stacks]" frame:
 * the profile's total is the process's, and a function's share is its share
 * of all the CPU, not only of the part Python stacks ran.
 *
 * Two things tried and dropped: estimating the share from one-holder
 * intervals only (at 100 Hz those are mostly intervals in which the holder
 * was preempted, since a running holder hands the GIL over within the 5 ms
 * switch interval: totals came out 30% low), and reading the holder's clock
 * around its stack copy to see whether it is on CPU at that instant (on a
 * saturated machine the timer's own wake-up is what preempts it: weights
 * came out 60% low). */
#define PS_OTHER_NS 10000000LL

/* The process CPU clock costs one look at every thread of the process
 * (Linux sums them at each reading, exited threads apart: measured 0.8 us
 * with one thread, 26 us with 500, 100 us with 2,000), so with many
 * threads it is read less often: every PS_OTHER_NS, or every 100 us per
 * listed thread when that is longer (50 ms with 500 threads), which keeps
 * it near 0.5 us per tick at 1 kHz whatever the thread count. The share
 * above then follows load changes over more ticks; the CPU no sample took
 * is recorded just as completely, in longer periods. */
#define PS_OTHER_NS_PER_THREAD 100000LL

static inline int64_t ps_other_period(int nthreads)
{
    int64_t p = (int64_t)nthreads * PS_OTHER_NS_PER_THREAD;
    return p > PS_OTHER_NS ? p : PS_OTHER_NS;
}

typedef struct {
    double cpu, wall;       /* decaying sums for the share */
    int64_t exact;          /* CPU weighed exactly since the last reading */
    int64_t scaled_wall;    /* wall of the scaled samples since then */
    int64_t recorded;       /* CPU all samples weighed since then */
    int64_t last_read_ns;   /* when the clocks were last read, 0: never */
    int64_t last_process;   /* the process CPU clock then */
    int64_t last_own;       /* the sampler's own threads' CPU then */
    int64_t carry;          /* samples weighed more than was spent: absorbed first (<= 0) */
    int64_t held;           /* not yet recorded: below the noise floor so far */
    int64_t held_spent;     /* the CPU spent over the periods held */
    int64_t session_spent;  /* the CPU spent since the session started */
} ps_other;

static inline double ps_other_share(const ps_other *o)
{
    double r;
    if (o->wall <= 0) {
        return 1.0;
    }
    r = o->cpu / o->wall;
    return r < 0 ? 0 : (r > 1 ? 1 : r);
}

/* Weight of the GIL holder's CPU sample (see above). */
static inline int64_t ps_holder_weight(ps_other *o, int64_t w, int64_t interval_cpu, int clean)
{
    int64_t weight;
    if (clean && interval_cpu >= 0) {
        weight = interval_cpu < w ? interval_cpu : w;
        o->exact += weight;
    } else {
        weight = (int64_t)((double)w * ps_other_share(o));
        o->scaled_wall += w;
    }
    o->recorded += weight;
    return weight;
}

/* CPU attributed from a thread's own clock (C calls without the GIL). */
static inline void ps_other_exact(ps_other *o, int64_t cpu)
{
    o->exact += cpu;
    o->recorded += cpu;
}

/* Every ps_other_period(): update the share, and return the CPU to record as
 * "outside sampled stacks" for the period ending now (0 if none). */
static inline int64_t ps_other_update(ps_other *o, int64_t now, int64_t process, int64_t own,
                                      int last)
{
    int64_t out = 0;
    if (process < 0 || own < 0) {
        return 0;
    }
    if (o->last_read_ns != 0) {
        int64_t spent = (process - o->last_process) - (own - o->last_own);
        double scalable = (double)(spent - o->exact);
        o->cpu = o->cpu * 0.9 + (scalable > 0 ? scalable : 0);
        o->wall = o->wall * 0.9 + (double)o->scaled_wall;
        out = spent - o->recorded + o->carry;
        if (out < 0) {
            o->carry = out;  /* the periods' samples overshot: net it out later */
            out = 0;
        } else {
            o->carry = 0;
        }
        /* a noise floor: record it once it is 2% of the CPU spent over the
         * periods it gathered in (and at least 0.2 ms), so that a program
         * whose CPU all ran in Python stacks gets no such row for the
         * microseconds of its thread starts and our pinning steps */
        o->held += out;
        o->held_spent += spent;
        o->session_spent += spent;
        out = 0;
        /* the last call, at stop, covers the few milliseconds since the
         * last tick, which no sample took: held to the session's total */
        if (o->held > 200000 &&
            (double)o->held > 0.02 * (double)(last ? o->session_spent : o->held_spent)) {
            out = o->held;
            o->held = o->held_spent = 0;
        }
    }
    o->exact = o->scaled_wall = o->recorded = 0;
    o->last_read_ns = now;
    o->last_process = process;
    o->last_own = own;
    return out;
}

/* Note a clock reading and the GIL's state at that moment. */
static inline void ps_tmodel_read(ps_tmodel *m, int64_t clock, int64_t now, unsigned long switches,
                                  int is_last_holder)
{
    m->cpu = clock;
    m->cpu_at = now;
    m->read_switches = switches;
    m->read_last = is_last_holder;
    m->read_known = 1;
}

/* Certain that the thread did not hold the GIL since its last reading?
 * Only a thread that takes the GIL from another moves the switch count, so
 * with at most one move (from the holder at that reading to the holder
 * now) and the thread being neither, it ran without the GIL throughout:
 * its Python stack could not change, and all the CPU it used belongs to
 * the C call (or system call) it is in now. */
static inline int ps_tmodel_gil_free(const ps_tmodel *m, unsigned long switches,
                                     int is_last_holder)
{
    return m->read_known && !m->read_last && !is_last_holder && switches - m->read_switches <= 1;
}

/* Is a non-holder's clock advance a C call running without the GIL? */
static inline int ps_in_c_call(int64_t cpu_delta, int64_t elapsed)
{
    return elapsed > 0 && (double)cpu_delta >= PS_C_CALL_SHARE * (double)elapsed;
}

#endif /* PYSAMPLER_CPU_H */
