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
 * Idle threads cost almost nothing
 * --------------------------------
 * A thread's Python stack changes only while it holds the GIL. A thread that
 * is not the holder, was not the last holder, and whose frame pointer,
 * data-stack top and exception state (direct reads of its thread state under
 * the head lock) did not change since its last walk, keeps the stack of that
 * walk; when the GIL's switch count did not move either, that is exact.
 * Otherwise its CPU clock, read with exponential back-off (every 1, 2, 4 ...
 * up to 32 ticks while it stays idle), catches a thread that ran and came
 * back to the same frame address: a clock that moved means walk again.
 *   - wall mode: such a thread extends its previous sample row (weight +w,
 *     one more sample in the row) instead of appending one;
 *   - CPU mode: it records nothing, and costs one clock reading now and then.
 *
 * Wall mode: every thread gets w at every tick, sleeping or not.
 */
#ifndef PYSAMPLER_CPU_H
#define PYSAMPLER_CPU_H

#include <stdint.h>

#include "platform.h"

#define PS_BACKOFF_MAX 32      /* ticks between clock readings of an idle thread */
#define PS_C_CALL_SHARE 0.6    /* clock advance / wall time that means "computing in C" */

/* What the sampler knows of one thread, kept by the timer thread. */
typedef struct {
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
    uint64_t seen_tick;            /* last tick it was in the thread list */
    int was_holder;                /* held the GIL at its last tick */
} ps_tmodel;

static inline void ps_tmodel_init(ps_tmodel *m, int64_t baseline_cpu, int64_t now)
{
    memset(m, 0, sizeof(*m));
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

/* How much of the wall time the GIL holder is really on CPU.
 *
 * On a loaded machine the OS preempts the holder while it holds the GIL,
 * and a sample weighing the full interval overstates CPU (measured: +16% to
 * +25% of the total, 4 busy workers, load average 5 on 2 cores). When the
 * interval was one holder's alone (same holder at both ticks, no switch),
 * its clock delta is the exact weight. For the other samples a running
 * calibration keeps the total true to the process's CPU clock:
 *
 *     share = (process CPU - the sampler's own threads' CPU - CPU already
 *              weighed exactly or attributed to C calls)
 *           / (wall time of the other holder samples)
 *
 * over decaying sums, read every PS_CALIBRATE_NS, clipped to [0, 1]. The
 * process clock counts threads that exited between two ticks (the
 * short-lived threads whose own clocks can no longer be read), which is why
 * it, and not the sum of the threads' clocks, is the reference. Clipped at
 * 1: a GIL holder cannot run longer than the interval, and CPU of threads
 * that never hold the GIL (native pools of C libraries, system calls made
 * with the GIL released) must not inflate the Python stacks. Estimating
 * the share from one-holder intervals only was tried first: at 100 Hz those
 * are mostly intervals in which the holder was preempted (a running holder
 * hands the GIL over within the 5 ms switch interval), and the total came
 * out 30% low. */
#define PS_CALIBRATE_NS 10000000LL

typedef struct {
    double cpu, wall;             /* decaying sums */
    int64_t pending_wall;         /* wall of scaled holder samples since the last read */
    int64_t pending_known;        /* CPU weighed exactly since the last read */
    int64_t last_read_ns;         /* when the clocks were last read, 0: never */
    int64_t last_process;         /* the process CPU clock then */
    int64_t last_own;             /* the sampler's own threads' CPU then */
} ps_oncpu;

static inline double ps_oncpu_share(const ps_oncpu *f)
{
    double r;
    if (f->wall <= 0) {
        return 1.0;
    }
    r = f->cpu / f->wall;
    return r < 0 ? 0 : (r > 1 ? 1 : r);
}

/* Every PS_CALIBRATE_NS: fold the clocks' advance into the sums. */
static inline void ps_oncpu_update(ps_oncpu *f, int64_t now, int64_t process, int64_t own)
{
    if (process < 0 || own < 0) {
        return;
    }
    if (f->last_read_ns != 0) {
        double cpu = (double)(process - f->last_process) - (double)(own - f->last_own) -
                     (double)f->pending_known;
        if (cpu < 0) {
            cpu = 0;
        }
        f->cpu = f->cpu * 0.9 + cpu;
        f->wall = f->wall * 0.9 + (double)f->pending_wall;
    }
    f->pending_wall = 0;
    f->pending_known = 0;
    f->last_read_ns = now;
    f->last_process = process;
    f->last_own = own;
}

/* Weight of the GIL holder's CPU sample (see above). */
static inline int64_t ps_holder_weight(ps_oncpu *f, int64_t w, int64_t cpu_delta, int clean)
{
    if (clean && cpu_delta >= 0) {
        int64_t d = cpu_delta < w ? cpu_delta : w;
        f->pending_known += d;
        return d;
    }
    f->pending_wall += w;
    return (int64_t)((double)w * ps_oncpu_share(f));
}

/* Is a non-holder's clock advance a C call running without the GIL? */
static inline int ps_in_c_call(int64_t cpu_delta, int64_t elapsed)
{
    return elapsed > 0 && (double)cpu_delta >= PS_C_CALL_SHARE * (double)elapsed;
}

#endif /* PYSAMPLER_CPU_H */
