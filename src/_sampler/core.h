/*
 * core.h - the sampler: a native timer thread that asks for a sample at a
 * jittered rate, and the code that records one (all threads, one snapshot).
 *
 * How a sample gets taken
 * -----------------------
 * A background thread that takes the GIL to sample (PyGILState_Ensure)
 * waits up to the switch interval (5 ms) whenever another thread runs
 * Python code: that caps it near 190 Hz and costs the program two context
 * switches per sample. Instead, on each tick the timer thread queues a
 * pending call (Py_AddPendingCall) and wakes the main thread's eval breaker
 * (pyframes.h); the main thread, at its next safe point between two
 * bytecodes, runs ps_pending_sample *holding the GIL it already has*, and
 * records the sample with no hand-off at all.
 *
 * Pending calls only run on the main thread, and only while it runs Python
 * code. When a tick is still unserved one period later (the main thread is
 * blocked in C: sleep, join, select, a lock; or waiting for the GIL), the
 * timer rings a second native thread, the fallback, which takes the GIL
 * itself and records the overdue sample. The GIL is then usually free, or
 * about one switch interval away. The timer itself never waits for the
 * GIL, so its schedule holds whatever the program does.
 *
 * `owed` makes each tick count once whichever side serves it; `queued`
 * keeps at most one of our calls in the interpreter's small queue.
 *
 * With the GIL held every other Python thread is parked at a safe point or
 * in C code with the GIL released, so one walk of the thread list sees a
 * consistent set of stacks.
 *
 * Locking: every table is touched only with the GIL held; the GIL is the
 * lock. The timer thread touches only atomics, the waker and the bell, and
 * holds no Python thread state at all.
 */
#ifndef PYSAMPLER_CORE_H
#define PYSAMPLER_CORE_H

#include "pyframes.h"
#include "platform.h"
#include "tables.h"

enum { PS_MODE_CPU = 0, PS_MODE_WALL = 1 };
enum { PS_IDLE = 0, PS_STARTING = 1, PS_RUNNING = 2, PS_STOPPING = 3 };

/* start() errors, turned into exceptions by the Cython layer */
enum {
    PS_OK = 0,
    PS_ERR_RUNNING = -1,
    PS_ERR_NOT_RUNNING = -2,
    PS_ERR_MEMORY = -3,
    PS_ERR_THREAD = -4,
    PS_ERR_FINALIZING = -5,
};

#define PS_TRUNCATED_CODE 0   /* key of the synthetic "truncated" frame */
#define PS_THREAD_NAME_TRIES 64

typedef struct {
    /* shared with the timer thread */
    ps_atomic_t state;
    ps_atomic_t owed;         /* a tick waits to be sampled */
    ps_atomic_t queued;       /* our call sits in the pending-call queue */
    ps_atomic_t fallback_ready;
    ps_atomic_t fallback_streak; /* the last tick was served by the fallback */  /* the fallback thread has its thread state */

    /* configuration, fixed while running */
    int mode;
    int max_depth;
    int64_t period_ns;
    PyInterpreterState *interp;
    PyObject *thread_registry;   /* threading._active: ident -> Thread */

    /* timer and fallback threads */
    ps_thread_t timer;
    ps_thread_t fallback;
    ps_waker waker;             /* the timer sleeps on it; stop() wakes it */
    ps_bell bell;               /* the timer rings it for a fallback sample */
    int sync_ok;                /* waker and bell are initialised */
    PyThreadState *fallback_tstate;

    /* tables */
    ps_intern frames;       /* (code object, byte offset) -> frame id */
    ps_intern nodes;        /* (parent node + 1, frame id) -> node id */
    ps_intern threads;      /* (ident, native id) -> thread index */
    int64_t *thread_cpu;    /* by thread index: CPU clock at its last sample */
    PyObject **thread_obj;  /* by thread index: threading.Thread or NULL */
    int32_t *thread_tries;  /* by thread index: name look-ups left */
    uint32_t thread_cap;
    ps_samples samples;
    uint32_t *walk;         /* scratch: frame ids of one stack, leaf first */

    /* clocks and counters */
    int64_t start_ns;
    int64_t stop_ns;
    int64_t last_sample_ns;
    uint64_t ticks;             /* timer ticks */
    uint64_t missed_ticks;      /* ticks skipped because the timer fell behind */
    uint64_t served_pending;    /* sampling events run by the main thread */
    uint64_t served_fallback;   /* sampling events run by the timer thread */
    uint64_t dropped_samples;   /* thread samples lost to full tables */
    uint64_t truncated_stacks;  /* samples deeper than max_depth */
    int64_t sampling_ns;        /* time spent recording samples (our cost) */
} ps_sampler;

static ps_sampler ps_S;

/* ------------------------------------------------------------------ */
/* Thread table                                                       */
/* ------------------------------------------------------------------ */
static int ps_threads_reserve(ps_sampler *s, uint32_t need)
{
    uint32_t cap = s->thread_cap ? s->thread_cap : 16;
    int64_t *cpu;
    PyObject **obj;
    int32_t *tries;
    if (need <= s->thread_cap) {
        return 0;
    }
    while (cap < need) {
        cap *= 2;
    }
    cpu = (int64_t *)realloc(s->thread_cpu, cap * sizeof(int64_t));
    if (!cpu) {
        return -1;
    }
    s->thread_cpu = cpu;
    obj = (PyObject **)realloc(s->thread_obj, cap * sizeof(PyObject *));
    if (!obj) {
        return -1;
    }
    s->thread_obj = obj;
    tries = (int32_t *)realloc(s->thread_tries, cap * sizeof(int32_t));
    if (!tries) {
        return -1;
    }
    s->thread_tries = tries;
    s->thread_cap = cap;
    return 0;
}

/* Look up threading.Thread for a thread ident. A thread shows up here
 * before threading registers it, so we retry a bounded number of times.
 * Allocates one int, only for threads not yet named. */
static void ps_thread_find_object(ps_sampler *s, uint32_t ti, unsigned long ident)
{
    PyObject *key, *obj;
    if (s->thread_obj[ti] != NULL || s->thread_tries[ti] <= 0 || s->thread_registry == NULL) {
        return;
    }
    s->thread_tries[ti]--;
    key = PyLong_FromUnsignedLong(ident);
    if (key == NULL) {
        PyErr_Clear();
        return;
    }
    obj = PyDict_GetItem(s->thread_registry, key);  /* borrowed, never raises */
    Py_DECREF(key);
    if (obj != NULL) {
        Py_INCREF(obj);
        s->thread_obj[ti] = obj;
    }
}

/* Thread index for a tstate, registering it on first sight; UINT32_MAX when
 * the table is full. `baseline_cpu` is the CPU clock its first sample counts
 * from: its clock at start() for threads that existed then, else 0. */
static uint32_t ps_thread_index(ps_sampler *s, PyThreadState *t, int64_t baseline_cpu)
{
    int added;
    unsigned long ident = ps_thread_ident(t);
    uint32_t ti;
    /* room for one more record first, so a new id always has one */
    if (ps_threads_reserve(s, s->threads.count + 1) != 0) {
        return UINT32_MAX;
    }
    ti = ps_intern_get(&s->threads, ident, ps_thread_native_id(t), &added);
    if (ti == PS_INTERN_FULL) {
        return UINT32_MAX;
    }
    if (added) {
        s->thread_cpu[ti] = baseline_cpu;
        s->thread_obj[ti] = NULL;
        s->thread_tries[ti] = PS_THREAD_NAME_TRIES;
    }
    ps_thread_find_object(s, ti, ident);
    return ti;
}

/* ------------------------------------------------------------------ */
/* Recording one sampling event (GIL held)                            */
/* ------------------------------------------------------------------ */
static uint32_t ps_intern_frame(ps_sampler *s, PyCodeObject *code, int lasti)
{
    int added;
    uint32_t id = ps_intern_get(&s->frames, (uint64_t)(uintptr_t)code, (uint64_t)(int64_t)lasti, &added);
    if (added && code != NULL) {
        /* keep the code object alive until the profile is built, so a
         * pointer in the table never comes to mean a different object */
        Py_INCREF(code);
    }
    return id;
}

#include "tasks.h"  /* asyncio task stacks; needs the helpers above */

/* Record one sample of every thread. Never raises, never blocks; when a
 * table is full the thread's sample is dropped and counted. */
static void ps_sample_threads(ps_sampler *s, int64_t now, int64_t wall);

static void ps_sample_all(ps_sampler *s)
{
    int64_t now = ps_monotonic_ns();
    int64_t wall = now - s->last_sample_ns;

    s->last_sample_ns = now;
    ps_sample_threads(s, now, wall);
    s->sampling_ns += ps_monotonic_ns() - now;
}

static void ps_sample_threads(ps_sampler *s, int64_t now, int64_t wall)
{
    PyThreadState *t;
    for (t = PyInterpreterState_ThreadHead(s->interp); t != NULL; t = PyThreadState_Next(t)) {
        ps_frame *f;
        uint32_t ti, node, n = 0;
        uint64_t parent;
        int64_t cpu = 0;
        int truncated = 0, full, added, i;

        if (t == s->fallback_tstate || !ps_thread_bound(t)) {
            continue;
        }
        f = ps_thread_top_frame(t);
        if (f == NULL) {
            continue;  /* not running Python code: nothing to attribute */
        }
        ti = ps_thread_index(s, t, 0);
        if (ti == UINT32_MAX) {
            s->dropped_samples++;
            continue;
        }
        {
            /* read the clock in both modes: CPU mode weights by it, and
             * wall mode keeps it as a second column */
            int64_t now_cpu = ps_thread_cpu_ns(ps_thread_ident(t), ps_thread_native_id(t));
            if (now_cpu >= 0) {
                cpu = now_cpu - s->thread_cpu[ti];
                s->thread_cpu[ti] = now_cpu;
            }
            if (cpu < 0) {
                cpu = 0;
            }
        }
        if (s->mode == PS_MODE_CPU && cpu == 0) {
            continue;  /* CPU mode: a thread that used no CPU records nothing */
        }

        /* walk leaf -> root, keeping the innermost max_depth frames */
        for (; f != NULL; f = ps_frame_back(f)) {
            uint32_t fid;
            if (n == (uint32_t)s->max_depth) {
                truncated = 1;
                break;
            }
            fid = ps_intern_frame(s, ps_frame_code(f), ps_frame_lasti_bytes(f));
            if (fid == PS_INTERN_FULL) {
                break;
            }
            s->walk[n++] = fid;
        }
        if (f != NULL && !truncated) {
            s->dropped_samples++;  /* frame table full */
            continue;
        }

        /* intern the path root -> leaf in the stack tree; node keys are
         * (parent + 1, frame) so that 0 means "no parent" */
        parent = 0;
        node = 0;
        full = 0;
        if (truncated) {
            /* a visible marker at the root, never a silent cut */
            uint32_t tf = ps_intern_frame(s, NULL, PS_TRUNCATED_CODE);
            node = tf == PS_INTERN_FULL ? PS_INTERN_FULL : ps_intern_get(&s->nodes, 0, tf, &added);
            full = node == PS_INTERN_FULL;
            parent = (uint64_t)node + 1;
            s->truncated_stacks++;
        }
        for (i = (int)n - 1; i >= 0 && !full; i--) {
            node = ps_intern_get(&s->nodes, parent, s->walk[i], &added);
            full = node == PS_INTERN_FULL;
            parent = (uint64_t)node + 1;
        }
        if (full || parent == 0 ||
            ps_samples_append(&s->samples, (int32_t)node, (int32_t)ti, now, cpu, wall) != 0) {
            s->dropped_samples++;
        }
    }
    if (ps_T.on) {
        ps_sample_tasks(s, now, wall);  /* asyncio=True: waiting tasks too */
    }
}

/* The pending call: runs on the main thread, GIL held, between bytecodes. */
static int ps_pending_sample(void *arg)
{
    ps_sampler *s = &ps_S;
    (void)arg;
    ps_atomic_store(&s->queued, 0);
    ps_atomic_store(&s->fallback_streak, 0);
    if (ps_atomic_load(&s->state) == PS_RUNNING && ps_atomic_exchange(&s->owed, 0)) {
        s->served_pending++;
        ps_sample_all(s);
    }
    return 0;  /* never raise into the program */
}

/* A no-op call whose only purpose is to make the interpreter run its
 * pending calls once more, which recomputes the eval breaker (see stop). */
static int ps_pending_noop(void *arg)
{
    (void)arg;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The timer thread                                                   */
/* ------------------------------------------------------------------ */
static int64_t ps_jittered(int64_t period, uint64_t *rng)
{
    /* irregular interval, uniform in [0.5, 1.5) periods, to avoid aliasing
     * with periodic work; the mean stays the requested period. +-10% was
     * not enough: a workload alternating functions every 2 periods was
     * misattributed by up to 15 points (phase drifts too slowly). */
    return (int64_t)((double)period * (0.5 + ps_random_unit(rng)));
}

/* The timer thread: never takes the GIL and has no Python thread state,
 * so nothing the program does can delay its schedule. */
static PS_THREAD_RETURN ps_timer_main(void *arg)
{
    ps_sampler *s = &ps_S;
    uint64_t rng = (uint64_t)ps_monotonic_ns() ^ 0x9E3779B97F4A7C15ULL;
    int64_t next;
    (void)arg;

    next = ps_monotonic_ns() + ps_jittered(s->period_ns, &rng);
    for (;;) {
        int64_t now;
        if (ps_waker_wait_until(&s->waker, next)) {
            break;  /* stop() asked us to finish */
        }
        s->ticks++;
        /* The previous tick still unserved means the main thread is not
         * running Python code (blocked in C, or waiting for the GIL), so
         * the fallback thread takes the GIL for it. If the fallback served
         * the previous tick, the main thread is likely still blocked:
         * ring for this tick at once, or a blocked main thread would get
         * only every other tick sampled. */
        int unserved = ps_atomic_exchange(&s->owed, 1) != 0;
        if (unserved || ps_atomic_load(&s->fallback_streak)) {
            ps_bell_ring(&s->bell);
        }
        /* Py_AddPendingCall may be called without the GIL or a thread state */
        if (ps_atomic_exchange(&s->queued, 1) == 0) {
            if (Py_AddPendingCall(ps_pending_sample, NULL) == 0) {
                ps_wake_main_thread(s->interp);
            } else {
                ps_atomic_store(&s->queued, 0);  /* queue full: fallback covers it */
            }
        }
        next += ps_jittered(s->period_ns, &rng);
        now = ps_monotonic_ns();
        if (next < now) {
            /* fell behind (a suspended process, an overloaded machine):
             * skip the missed ticks rather than sample in a burst */
            s->missed_ticks += (uint64_t)((now - next) / s->period_ns) + 1;
            next = now + ps_jittered(s->period_ns, &rng);
        }
    }
    return 0;
}

/* The fallback thread: takes the GIL to record a tick the main thread did
 * not serve. Taking the GIL may wait for a hand-off (up to the switch
 * interval, longer when several threads compete), which is why this is a
 * thread of its own: a timer that waited here would stop ticking, and the
 * main thread would get no pending calls meanwhile (measured: 38 samples/s
 * of 500 requested with two busy threads, when the timer did both jobs). */
static PS_THREAD_RETURN ps_fallback_main(void *arg)
{
    ps_sampler *s = &ps_S;
    PyGILState_STATE gil;
    PyThreadState *saved;
    (void)arg;

    /* one thread state for the whole session: creating one per fallback
     * sample would allocate and take the runtime's head lock each time */
    gil = PyGILState_Ensure();
    s->fallback_tstate = PyThreadState_Get();
    saved = PyEval_SaveThread();
    ps_atomic_store(&s->fallback_ready, 1);

    while (ps_bell_wait(&s->bell)) {
        if (ps_finalizing()) {
            continue;  /* a native thread must not wait for the GIL now */
        }
        PyEval_RestoreThread(saved);
        if (ps_atomic_load(&s->state) == PS_RUNNING && ps_atomic_exchange(&s->owed, 0)) {
            ps_atomic_store(&s->fallback_streak, 1);
            s->served_fallback++;
            ps_sample_all(s);
        }
        saved = PyEval_SaveThread();
    }

    if (!ps_finalizing()) {
        PyEval_RestoreThread(saved);
        s->fallback_tstate = NULL;
        PyGILState_Release(gil);  /* deletes our thread state, drops the GIL */
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Session lifecycle (called from Cython, GIL held unless noted)      */
/* ------------------------------------------------------------------ */
static void ps_tables_free(ps_sampler *s)
{
    uint32_t i;
    for (i = 0; i < s->frames.count; i++) {
        PyObject *code = (PyObject *)(uintptr_t)s->frames.key_a[i];
        Py_XDECREF(code);
    }
    for (i = 0; i < s->threads.count; i++) {
        Py_XDECREF(s->thread_obj[i]);
    }
    ps_intern_free(&s->frames);
    ps_intern_free(&s->nodes);
    ps_intern_free(&s->threads);
    free(s->thread_cpu);
    free(s->thread_obj);
    free(s->thread_tries);
    free(s->walk);
    s->thread_cpu = NULL;
    s->thread_obj = NULL;
    s->thread_tries = NULL;
    s->walk = NULL;
    s->thread_cap = 0;
    ps_samples_free(&s->samples);
    Py_CLEAR(s->thread_registry);
    ps_tasks_free();
}

/* Prepare tables and baselines; the caller then starts the timer with the
 * GIL released (ps_start_timer) and marks the session running. */
static int ps_prepare(double hz, int mode, int max_depth, size_t max_samples,
                      uint32_t max_frames, uint32_t max_nodes, PyObject *registry)
{
    ps_sampler *s = &ps_S;
    PyThreadState *t;
    uint32_t max_threads = 65536;

    if (ps_atomic_load(&s->state) != PS_IDLE) {
        return PS_ERR_RUNNING;
    }
    if (ps_finalizing()) {
        return PS_ERR_FINALIZING;
    }
    ps_tables_free(s);
    s->mode = mode;
    s->max_depth = max_depth;
    s->period_ns = (int64_t)(1e9 / hz);
    s->interp = PyInterpreterState_Main();
    s->ticks = s->missed_ticks = s->served_pending = s->served_fallback = 0;
    s->dropped_samples = s->truncated_stacks = 0;
    s->sampling_ns = 0;
    s->fallback_tstate = NULL;
    ps_atomic_store(&s->owed, 0);
    ps_atomic_store(&s->fallback_ready, 0);
    ps_atomic_store(&s->fallback_streak, 0);

    s->walk = (uint32_t *)malloc((size_t)max_depth * sizeof(uint32_t));
    if (!s->walk ||
        ps_intern_init(&s->frames, 1024, max_frames) != 0 ||
        ps_intern_init(&s->nodes, 4096, max_nodes) != 0 ||
        ps_intern_init(&s->threads, 16, max_threads) != 0 ||
        ps_threads_reserve(s, 16) != 0 ||
        ps_samples_init(&s->samples, max_samples) != 0) {
        ps_tables_free(s);
        return PS_ERR_MEMORY;
    }
    Py_XINCREF(registry);
    s->thread_registry = registry;

    /* CPU baselines: time a thread used before start() is not ours */
    for (t = PyInterpreterState_ThreadHead(s->interp); t != NULL; t = PyThreadState_Next(t)) {
        int64_t cpu;
        if (!ps_thread_bound(t)) {
            continue;
        }
        cpu = ps_thread_cpu_ns(ps_thread_ident(t), ps_thread_native_id(t));
        if (ps_thread_index(s, t, cpu < 0 ? 0 : cpu) == UINT32_MAX) {
            ps_tables_free(s);
            return PS_ERR_MEMORY;
        }
    }
    if (!s->sync_ok) {
        if (ps_waker_init(&s->waker) != 0) {
            ps_tables_free(s);
            return PS_ERR_THREAD;
        }
        if (ps_bell_init(&s->bell) != 0) {
            ps_waker_destroy(&s->waker);
            ps_tables_free(s);
            return PS_ERR_THREAD;
        }
        s->sync_ok = 1;
    }
    s->start_ns = s->last_sample_ns = ps_monotonic_ns();
    s->stop_ns = 0;
    ps_atomic_store(&s->state, PS_STARTING);
    return PS_OK;
}

/* GIL released: start the fallback thread, wait until it holds its
 * thread state (it needs the GIL once to create it), then start the timer.
 * Returns PS_OK or PS_ERR_THREAD. */
static int ps_start_timer(void)
{
    ps_sampler *s = &ps_S;
    /* fresh wake-up state: a stop from a previous session must not end
     * this one */
#if !defined(_WIN32)
    pthread_mutex_lock(&s->waker.mutex);
    s->waker.signalled = 0;
    pthread_mutex_unlock(&s->waker.mutex);
#else
    ResetEvent(s->waker.stop_event);
#endif
    ps_bell_reopen(&s->bell);
    if (ps_thread_start(&s->fallback, ps_fallback_main, NULL) != 0) {
        return PS_ERR_THREAD;
    }
    while (ps_atomic_load(&s->fallback_ready) == 0) {
#if defined(_WIN32)
        Sleep(0);
#else
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
#endif
    }
    if (ps_thread_start(&s->timer, ps_timer_main, NULL) != 0) {
        ps_bell_close(&s->bell);
        ps_thread_join(s->fallback);
        return PS_ERR_THREAD;
    }
    return PS_OK;
}

/* GIL held: the session is live. */
static void ps_mark_running(void)
{
    ps_atomic_store(&ps_S.state, PS_RUNNING);
}

/* GIL held: leave RUNNING; returns PS_ERR_NOT_RUNNING if not running. */
static int ps_begin_stop(void)
{
    ps_sampler *s = &ps_S;
    if (ps_atomic_load(&s->state) != PS_RUNNING) {
        return PS_ERR_NOT_RUNNING;
    }
    ps_atomic_store(&s->state, PS_STOPPING);
    s->stop_ns = ps_monotonic_ns();
    return PS_OK;
}

/* GIL released: end the timer, then the fallback thread (which may be
 * waiting for the GIL; the caller has released it), and wait for both. */
static void ps_join_timer(void)
{
    ps_waker_signal(&ps_S.waker);
    ps_thread_join(ps_S.timer);
    ps_bell_close(&ps_S.bell);
    ps_thread_join(ps_S.fallback);
}

/* GIL held, timer joined: the tables stay readable until ps_reset(), and
 * the state stays STOPPING until then, so that a start() made while the
 * caller copies them (from a signal handler: the copy runs Python code)
 * is refused instead of freeing them. */
static void ps_end_stop(void)
{
    ps_sampler *s = &ps_S;
    ps_atomic_store(&s->owed, 0);
#if PY_VERSION_HEX < 0x030D0000
    /* Our last wake-up may have raced with the main thread's own recompute
     * of the eval breaker and left it set with nothing to do, which would
     * send every later safe point through the slow path. One more queued
     * call makes the interpreter recompute it after we are gone. */
    if (Py_AddPendingCall(ps_pending_noop, NULL) == 0) {
        ps_wake_main_thread(s->interp);
    }
#endif
}

/* GIL held: the line a code object executes at a byte offset. */
static int ps_code_line(PyObject *code, int offset)
{
    return PyCode_Addr2Line((PyCodeObject *)code, offset);
}

/* GIL held, after ps_end_stop(): drop the tables (and the code objects
 * they keep alive: their deallocation may run Python code, still inside
 * STOPPING), then the session is over. */
static void ps_reset(void)
{
    ps_tables_free(&ps_S);
    ps_atomic_store(&ps_S.state, PS_IDLE);
}

/* In a child after fork(): there is no timer or fallback thread here;
 * forget the session without joining anything. The GIL is held. */
static void ps_after_fork_child(void)
{
    ps_sampler *s = &ps_S;
    /* the interpreter deleted the fallback's thread state already */
    s->fallback_tstate = NULL;
    ps_tables_free(s);
    ps_atomic_store(&s->owed, 0);
    ps_atomic_store(&s->queued, 0);
    ps_atomic_store(&s->state, PS_IDLE);
    /* the timer may have held the waker's or the bell's mutex at the
     * fork: start over with fresh ones instead of destroying locked ones */
    s->sync_ok = 0;
}

#endif /* PYSAMPLER_CORE_H */
