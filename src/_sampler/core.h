/*
 * core.h - the sampler: a native timer thread ticks at a jittered rate, and
 * each tick becomes one sampling event (a sample of every thread). This file
 * orchestrates; the parts live beside it:
 *
 *   reader.h    the GIL-free stack reader (3.11+) and the head lock
 *   saferead.h  copies of memory that cannot fault
 *   cpu.h       the attribution model: who gets a sample, what it weighs
 *   codes.h     the objects frames refer to, and pinning code objects
 *   tables.h    interning maps and sample columns
 *   pyframes.h  version-specific frames (GIL held), thread identities
 *   tasks.h     asyncio task stacks
 *
 * Two ways a tick becomes samples
 * -------------------------------
 * The reader path (CPython 3.11+, asyncio=False, and a safe copy works on
 * this system): the timer thread itself reads every thread's stack without
 * the GIL (reader.h) and records the samples (cpu.h). No sample waits for the
 * GIL or makes the program switch threads, so the rate holds whatever the
 * program's threads do (measured, 2 cores, 1 kHz, main thread in join:
 * 4 and 16 busy workers get >= 99% of the ticks; the path that needs the
 * GIL got 6%). Code objects and thread names need the GIL: the timer queues
 * them and a pinning step holding the GIL handles them (codes.h), run by a
 * pending call (3.12+: by whichever thread runs Python next; 3.11: by the
 * main thread) or, when that is not served within PS_PIN_WAIT_NS, by the
 * fallback thread (at most every PS_PIN_FALLBACK_GAP_NS). Nothing new seen,
 * no pinning: steady state takes the GIL never. The tables have a single
 * writer, the timer; stop() joins it before reading them.
 *
 * The GIL-holding path (3.9/3.10, asyncio=True, or no safe copy): on each
 * tick the timer queues a pending call (Py_AddPendingCall) and wakes the
 * main thread's eval breaker (pyframes.h); the main thread, at its next safe
 * point between two bytecodes, runs ps_pending_sample holding the GIL it
 * already has. Pending calls only run on the main thread, and only while it
 * runs Python code: when a tick is still unserved one period later, the
 * timer rings the fallback thread, which takes the GIL itself (waiting up to
 * the switch interval when another thread runs Python) and records the
 * overdue sample. `owed` makes each tick count once whichever side serves
 * it; `queued` keeps at most one of our calls in the interpreter's queue.
 * With the GIL held every other thread is parked, so one walk sees a
 * consistent set of stacks; the thread list itself is copied under the
 * runtime's head lock first (threads can be deleted without the GIL).
 */
#ifndef PYSAMPLER_CORE_H
#define PYSAMPLER_CORE_H

#include "pyframes.h"
#include "platform.h"
#include "reader.h"
#include "placement.h"
#include "tables.h"
#include "codes.h"
#include "cpu.h"

#if PY_VERSION_HEX >= 0x030C0000
/* 3.12+: _PyEval_AddPendingCall (exported, internal): a call any thread of
 * the interpreter may serve, not only the main thread */
#  ifndef Py_BUILD_CORE
#    define Py_BUILD_CORE 1
#    define PYSAMPLER_CORE_BUILD_CORE 1
#  endif
#  include "internal/pycore_ceval.h"
#  ifdef PYSAMPLER_CORE_BUILD_CORE
#    undef Py_BUILD_CORE
#    undef PYSAMPLER_CORE_BUILD_CORE
#  endif
#endif

/* Queue a pending call in our interpreter from a thread that has no thread
 * state and does not hold the GIL (the timer).
 *
 * Py_AddPendingCall (3.9-3.11) finds the interpreter through the GIL
 * holder's thread state, which it reads without the GIL: a holder that
 * exits at that moment leaves it reading freed memory. Seen: a segfault in
 * _PyEval_AddPendingCall(interp=NULL) from the timer, once in a few hundred
 * runs of threads starting and exiting 4 at a time under a 2 kHz session.
 * _PyEval_AddPendingCall takes the interpreter we already know; Linux and
 * macOS builds of 3.9-3.11 export it (internal, not in the limited API).
 * Windows exports it from 3.12 only: there, before 3.12, the race remains.
 * Before 3.12 the call is served by the main thread alone, which is woken
 * (its eval breaker set); 3.12+ serve it from whichever thread runs Python
 * next (3.13+ signal the GIL holder's eval breaker; 3.12's is per
 * interpreter). Returns 0 when queued. */
#if PY_VERSION_HEX < 0x030C0000 && !defined(_WIN32)
extern int _PyEval_AddPendingCall(PyInterpreterState *interp, int (*func)(void *), void *arg);
#endif

static int ps_add_pending_call(PyInterpreterState *interp, int (*func)(void *), int wake)
{
#if PY_VERSION_HEX >= 0x030C0000
    (void)wake;
    return (int)_PyEval_AddPendingCall(interp, func, NULL, 0);
#else
#  if defined(_WIN32)
    int rc = Py_AddPendingCall(func, NULL);
#  else
    int rc = _PyEval_AddPendingCall(interp, func, NULL);
#  endif
    if (rc == 0 && wake) {
        ps_wake_main_thread(interp);
    }
    return rc;
#endif
}

enum { PS_MODE_CPU = 0, PS_MODE_WALL = 1 };
enum { PS_IDLE = 0, PS_STARTING = 1, PS_RUNNING = 2, PS_STOPPING = 3 };
enum { PS_MECH_GIL = 0, PS_MECH_READER = 1 };

/* start() errors, turned into exceptions by the Cython layer */
enum {
    PS_OK = 0,
    PS_ERR_RUNNING = -1,
    PS_ERR_NOT_RUNNING = -2,
    PS_ERR_MEMORY = -3,
    PS_ERR_THREAD = -4,
    PS_ERR_FINALIZING = -5,
};

#define PS_THREAD_NAME_TRIES 64
#define PS_TASKS_THREAD_KEY 0xFFFFFFFFFFFFFFFFULL  /* the asyncio pseudo-thread */
#define PS_OTHER_THREAD_KEY 0xFFFFFFFFFFFFFFFEULL  /* CPU outside sampled stacks */
#define PS_FRAME_OTHER (-1002)  /* tag of its synthetic frame */
#define PS_PIN_WAIT_NS 10000000LL            /* a pin request unserved this long: fallback */
#define PS_PIN_FALLBACK_GAP_NS 50000000LL    /* fallback pins at most this often */

/* A thread, as the profile names it. Written once at registration. */
typedef struct {
    uint64_t key;            /* tstate->id: unique per thread state */
    unsigned long ident;
    unsigned long native;
} ps_thread_info;

typedef struct {
    /* shared with the timer thread */
    ps_atomic_t state;
    ps_atomic_t owed;         /* GIL path: a tick waits to be sampled */
    ps_atomic_t queued;       /* our call sits in the pending-call queue */
    ps_atomic_t fallback_ready;
    ps_atomic_t fallback_streak; /* GIL path: the last tick was served by the fallback */
    ps_atomic_t pin_queued;   /* reader path: our pin call is queued */
    ps_atomic_t names_retry;  /* reader path: a pin step could not check which
                               * threads are alive (head lock busy): again */
    ps_atomic_t closed;       /* the interpreter is shutting down: no more sessions */

    /* configuration, fixed while running */
    int mode;
    int mech;
    int max_depth;
    int64_t period_ns;
    PyInterpreterState *interp;
    PyObject *thread_registry;   /* threading._active: ident -> Thread */

    /* timer and fallback threads */
    ps_thread_t timer;
    ps_thread_t fallback;
    ps_waker waker;             /* the timer sleeps on it; stop() wakes it */
    ps_bell bell;               /* the timer rings it for the fallback */
    int sync_ok;                /* waker and bell are initialised */
    PyThreadState *fallback_tstate;
    unsigned long fallback_ident;   /* to read its CPU clock (calibration) */
    unsigned long fallback_native;

    /* tables (one writer: see the top comment) */
    ps_codes objs;          /* object id -> code object (or asyncio label) */
    ps_intern frames;       /* (object id, byte offset) -> frame id */
    ps_intern nodes;        /* (parent node + 1, frame id) -> node id */
    ps_chunked tinfo;       /* thread index -> ps_thread_info */
    ps_ptrmap tindex;       /* thread key -> thread index */
    ps_tmodel *tm;          /* thread index -> model state (writer's) */
    uint32_t tm_cap;
    PyObject **tobj;        /* thread index -> threading.Thread (GIL side) */
    int32_t *ttries;        /* thread index -> name look-ups left (GIL side) */
    uint32_t tnamed;        /* thread indexes with a slot in tobj/ttries */
    ps_samples samples;
    uint32_t *walk;         /* scratch: frame ids of one stack, leaf first */
    ps_tsnap *snap;         /* scratch: the thread list of one tick */
    int snap_cap;
    int snap_n;             /* threads in snap at the last snapshot */
    uint64_t *hint_id;      /* reader: thread key at each list position last tick */
    uint32_t *hint_ti;      /* reader: its thread index */
    int hint_cap;
#ifdef PS_HAVE_READER
    ps_rawframe *raw;       /* scratch: raw frames of one walk */
#endif

    /* reader path, per tick */
    uint64_t tick_no;
    unsigned long prev_switches;
    uintptr_t prev_holder;
    uint64_t full_tick;         /* tick_no of the last full tick (list walked) */
    int last_holder_k;          /* snap index of the GIL's last holder then, -1: none */
    uint32_t last_holder_ti;    /* its thread index */
    uint64_t loud_until;        /* CPU mode: no quiet ticks before this tick (a thread
                                   other than the holder was seen using CPU) */
    int64_t quiet_w;            /* wall mode: wall of all quiet ticks so far */
    uint32_t quiet_n;           /* wall mode: quiet ticks so far */
    int quiet_pending;          /* wall mode: quiet ticks since the last full tick */
    ps_other other;             /* CPU no sample took (cpu.h) */
    int32_t other_node;         /* its synthetic stack, -1: not yet */
    int64_t other_row;          /* its last row, -1: none */
    int64_t pin_requested_ns;   /* when the queued pin request was made, 0 none */
    int64_t fallback_pin_ns;    /* when the fallback last pinned */
    ps_atomic_t fallback_pin;   /* the bell rang for a pin, not a sample */
    int main_holds;             /* the main thread held the GIL at the last tick */
    ps_placement place;         /* reader: the timer off the GIL holder's CPU */

    /* clocks and counters */
    int64_t start_ns;
    int64_t stop_ns;
    int64_t last_sample_ns;
    uint64_t ticks;             /* timer ticks */
    uint64_t missed_ticks;      /* ticks skipped because the timer fell behind */
    uint64_t served_pending;    /* GIL path: sampling events run by a program thread */
    uint64_t served_fallback;   /* GIL path: sampling events run by the fallback thread */
    uint64_t served_reader;     /* reader path: sampling events recorded by the timer */
    uint64_t busy_ticks;        /* reader path: ticks dropped, head lock busy */
    uint64_t holder_left;       /* reader path: the holder let go of the GIL during its walk */
    uint64_t safe_reads;        /* reader path: safe copies made (each a system call) */
    uint64_t dropped_samples;   /* thread samples lost to full tables or bad reads */
    uint64_t truncated_stacks;  /* samples deeper than max_depth */
    uint64_t pins;              /* pinning steps run */
    int64_t sampling_ns;        /* time spent recording samples (our cost) */
    int64_t timer_cpu_ns;       /* CPU the timer thread used (read as it ends) */
    int64_t fallback_cpu_ns;    /* CPU the fallback thread used (read as it ends) */
} ps_sampler;

static ps_sampler ps_S;

/* ------------------------------------------------------------------ */
/* Thread table                                                       */
/* ------------------------------------------------------------------ */
static int ps_tm_reserve(ps_sampler *s, uint32_t need)
{
    uint32_t cap = s->tm_cap ? s->tm_cap : 16;
    ps_tmodel *tm;
    if (need <= s->tm_cap) {
        return 0;
    }
    while (cap < need) {
        cap *= 2;
    }
    tm = (ps_tmodel *)realloc(s->tm, cap * sizeof(ps_tmodel));
    if (!tm) {
        return -1;
    }
    s->tm = tm;
    s->tm_cap = cap;
    return 0;
}

/* Writer (timer, or the GIL holder on the GIL path, or prepare): the index
 * of the thread with `key`, registering it on first sight with the CPU
 * clock its first sample counts from. UINT32_MAX when a table is full. */
static uint32_t ps_thread_register(ps_sampler *s, uint64_t key, unsigned long ident,
                                   unsigned long native, int64_t baseline_cpu, int64_t now)
{
    uint32_t ti = ps_ptrmap_get(&s->tindex, key);
    ps_thread_info *info;
    if (ti != UINT32_MAX) {
        return ti;
    }
    info = (ps_thread_info *)ps_chunked_next(&s->tinfo);
    if (info == NULL || ps_tm_reserve(s, (uint32_t)s->tinfo.count + 1) != 0) {
        return UINT32_MAX;
    }
    info->key = key;
    info->ident = ident;
    info->native = native;
    ti = (uint32_t)s->tinfo.count;
    /* open its clock now, while it is known alive (it is in the list we
     * just copied, or the GIL holder's), and keep it */
    s->tm[ti].clock.ok = 0;
    if (key < PS_OTHER_THREAD_KEY) {
        (void)ps_clock_open(&s->tm[ti].clock, ident, native);
    }
    ps_tmodel_init(&s->tm[ti], baseline_cpu, now);
    s->tm[ti].quiet_w = s->quiet_w;  /* quiet ticks before it existed are not its */
    s->tm[ti].quiet_n = s->quiet_n;
    if (ps_ptrmap_put(&s->tindex, key, ti) != 0) {
        return UINT32_MAX;
    }
    ps_chunked_publish(&s->tinfo);
    return ti;
}

static inline ps_thread_info *ps_thread_at(ps_sampler *s, uint32_t ti)
{
    return (ps_thread_info *)ps_chunked_at(&s->tinfo, ti);
}

/* GIL held: slots for names up to the published thread count. */
static int ps_names_reserve(ps_sampler *s)
{
    uint32_t n = ps_chunked_count(&s->tinfo), i;
    PyObject **obj;
    int32_t *tries;
    if (n <= s->tnamed) {
        return 0;
    }
    obj = (PyObject **)realloc(s->tobj, n * sizeof(PyObject *));
    if (!obj) {
        return -1;
    }
    s->tobj = obj;
    tries = (int32_t *)realloc(s->ttries, n * sizeof(int32_t));
    if (!tries) {
        return -1;
    }
    s->ttries = tries;
    for (i = s->tnamed; i < n; i++) {
        s->tobj[i] = NULL;
        s->ttries[i] = ps_thread_at(s, i)->key >= PS_OTHER_THREAD_KEY ? 0 : PS_THREAD_NAME_TRIES;
    }
    s->tnamed = n;
    return 0;
}

/* GIL held: look up threading.Thread for a thread that is alive now (its
 * ident cannot belong to another thread meanwhile). A thread shows up
 * before threading registers it, so this is retried a bounded number of
 * times. Allocates one int, only for threads not yet named. */
static void ps_thread_find_object(ps_sampler *s, uint32_t ti)
{
    PyObject *key, *obj;
    if (ti >= s->tnamed || s->tobj[ti] != NULL || s->ttries[ti] <= 0 ||
        s->thread_registry == NULL) {
        return;
    }
    s->ttries[ti]--;
    key = PyLong_FromUnsignedLong(ps_thread_at(s, ti)->ident);
    if (key == NULL) {
        PyErr_Clear();
        return;
    }
    obj = PyDict_GetItem(s->thread_registry, key);  /* borrowed, never raises */
    Py_DECREF(key);
    if (obj != NULL) {
        Py_INCREF(obj);
        s->tobj[ti] = obj;
    }
}

/* ------------------------------------------------------------------ */
/* Interning a stack                                                  */
/* ------------------------------------------------------------------ */
/* GIL path: the frame id of (code object, byte offset), keeping the object
 * alive until the profile is built. `code` NULL is the truncation marker;
 * tasks.h passes other objects (task names, awaited types) with tags. */
static uint32_t ps_intern_frame(ps_sampler *s, PyCodeObject *code, int lasti)
{
    int added;
    uint32_t oid = code == NULL ? PS_NO_OBJECT : ps_codes_pinned(&s->objs, (PyObject *)code);
    if (code != NULL && oid == PS_NO_OBJECT) {
        return PS_INTERN_FULL;
    }
    return ps_intern_get(&s->frames, oid, (uint64_t)(int64_t)lasti, &added);
}

/* The leaf node of the stack s->walk[0..n) (leaf first), with a visible
 * truncation marker at the root when `truncated`; PS_INTERN_FULL when a
 * table is full. */
static uint32_t ps_intern_stack(ps_sampler *s, uint32_t n, int truncated)
{
    uint64_t parent = 0;
    uint32_t node = PS_INTERN_FULL;
    int added, i;
    if (truncated) {
        uint32_t tf = ps_intern_get(&s->frames, PS_NO_OBJECT, 0, &added);
        if (tf == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        node = ps_intern_get(&s->nodes, 0, tf, &added);
        if (node == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        parent = (uint64_t)node + 1;
        s->truncated_stacks++;
    }
    /* root -> leaf; node keys are (parent + 1, frame): 0 is "no parent" */
    for (i = (int)n - 1; i >= 0; i--) {
        node = ps_intern_get(&s->nodes, parent, s->walk[i], &added);
        if (node == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        parent = (uint64_t)node + 1;
    }
    return node;
}

static int ps_record(ps_sampler *s, uint32_t node, uint32_t ti, int64_t now, int64_t cpu,
                     int64_t wall)
{
    if (node == PS_INTERN_FULL ||
        ps_samples_append(&s->samples, (int32_t)node, (int32_t)ti, now, cpu, wall) != 0) {
        s->dropped_samples++;
        return -1;
    }
    return 0;
}

#include "tasks.h"  /* asyncio task stacks; needs the helpers above */

/* ------------------------------------------------------------------ */
/* The GIL-holding path: record one sampling event (GIL held)         */
/* ------------------------------------------------------------------ */
static int ps_snap_reserve(ps_sampler *s, int need)
{
    ps_tsnap *v;
    int cap = s->snap_cap ? s->snap_cap : 64;
    if (need <= s->snap_cap) {
        return 0;
    }
    while (cap < need) {
        cap *= 2;
    }
    v = (ps_tsnap *)realloc(s->snap, (size_t)cap * sizeof(ps_tsnap));
    if (!v) {
        return -1;
    }
    s->snap = v;
    s->snap_cap = cap;
    /* position hints (reader path): start empty at the new size */
    free(s->hint_id);
    free(s->hint_ti);
    s->hint_id = (uint64_t *)calloc((size_t)cap, sizeof(uint64_t));
    s->hint_ti = (uint32_t *)calloc((size_t)cap, sizeof(uint32_t));
    s->hint_cap = s->hint_id && s->hint_ti ? cap : 0;
    return 0;
}

/* The thread list, copied under the head lock; the count, or -1. */
static int ps_take_snapshot(ps_sampler *s)
{
    int n = ps_reader_snapshot(s->interp, s->snap, s->snap_cap, (uintptr_t)s->fallback_tstate);
    if (n > s->snap_cap) {
        /* more threads than room: grow (outside the lock) and copy again */
        if (ps_snap_reserve(s, n + n / 2) != 0) {
            return s->snap_cap;
        }
        n = ps_reader_snapshot(s->interp, s->snap, s->snap_cap, (uintptr_t)s->fallback_tstate);
        if (n > s->snap_cap) {
            n = s->snap_cap;
        }
    }
    s->snap_n = n < 0 ? 0 : n;
    return n;
}

static void ps_sample_threads(ps_sampler *s, int64_t now, int64_t wall)
{
    int k, n = ps_take_snapshot(s);
    for (k = 0; k < n; k++) {
        const ps_tsnap *t = &s->snap[k];
        ps_frame *f;
        uint32_t ti, nf = 0;
        int64_t cpu = 0, now_cpu;
        int truncated = 0;

        /* frames are safe to follow: the GIL parks their thread, and a
         * thread state is cleared (frames released) only under the GIL */
#if PY_VERSION_HEX >= 0x030D0000
        f = ps_frame_settle((ps_frame *)t->frame);
#elif PY_VERSION_HEX >= 0x030B0000
        f = t->frame == 0 ? NULL : ps_frame_settle(((_PyCFrame *)t->frame)->current_frame);
#else
        f = (ps_frame *)t->frame;
#endif
        if (f == NULL) {
            continue;  /* not running Python code: nothing to attribute */
        }
        ti = ps_thread_register(s, t->id, t->ident, t->native, 0, now);
        if (ti == UINT32_MAX || ps_names_reserve(s) != 0) {
            s->dropped_samples++;
            continue;
        }
        ps_thread_find_object(s, ti);
        /* read the clock in both modes: CPU mode weights by it, and wall
         * mode keeps it as a second column */
        now_cpu = ps_clock_read(&s->tm[ti].clock);
        if (now_cpu >= 0) {
            cpu = now_cpu - s->tm[ti].cpu;
            s->tm[ti].cpu = now_cpu;
        }
        if (cpu < 0) {
            cpu = 0;
        }
        if (s->mode == PS_MODE_CPU && cpu == 0) {
            continue;  /* CPU mode: a thread that used no CPU records nothing */
        }
        /* walk leaf -> root, keeping the innermost max_depth frames */
        for (; f != NULL; f = ps_frame_back(f)) {
            uint32_t fid;
            if (nf == (uint32_t)s->max_depth) {
                truncated = 1;
                break;
            }
            fid = ps_intern_frame(s, ps_frame_code(f), ps_frame_lasti_bytes(f));
            if (fid == PS_INTERN_FULL) {
                break;
            }
            s->walk[nf++] = fid;
        }
        if (f != NULL && !truncated) {
            s->dropped_samples++;  /* frame table full */
            continue;
        }
        if (nf == 0) {
            continue;
        }
        ps_record(s, ps_intern_stack(s, nf, truncated), ti, now, cpu, wall);
    }
    if (ps_T.on) {
        ps_sample_tasks(s, now, wall);  /* asyncio=True: waiting tasks too */
    }
}

static void ps_sample_all(ps_sampler *s)
{
    int64_t now = ps_monotonic_ns();
    int64_t wall = now - s->last_sample_ns;

    s->last_sample_ns = now;
    ps_sample_threads(s, now, wall);
    s->sampling_ns += ps_monotonic_ns() - now;
}

/* The pending call: runs on the main thread (3.12+: on whichever thread
 * runs Python), GIL held, between bytecodes. */
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
/* The reader path: the pinning step (GIL held)                       */
/* ------------------------------------------------------------------ */
/* Name the threads registered since the last step that are still alive
 * (checked under the head lock, so an ident cannot belong to a newer
 * thread), and pin the code objects seen since (codes.h). */
static void ps_pin_step(ps_sampler *s)
{
#ifdef PS_HAVE_READER
    uint32_t i, n;
    int k, alive;
    s->pins++;
    ps_codes_pin(&s->objs);
    if (ps_names_reserve(s) != 0) {
        return;
    }
    ps_atomic_store(&s->names_retry, 0);
    n = s->tnamed;
    for (i = 0; i < n && s->tobj != NULL; i++) {
        PyThreadState *t;
        uint64_t key;
        if (s->tobj[i] != NULL || s->ttries[i] <= 0) {
            continue;
        }
        /* is it alive? (a scratch copy of the list: the timer owns s->snap).
         * A head lock held past ps_head_lock's patience (the timer, say,
         * preempted while it reads the list) says nothing of that: ask for
         * another step rather than take the thread for gone, which would
         * lose its name for good */
        if (!ps_head_lock()) {
            ps_atomic_store(&s->names_retry, 1);
            break;
        }
        alive = 0;
        key = ps_thread_at(s, i)->key;
        for (t = PyInterpreterState_ThreadHead(s->interp); t != NULL; t = PyThreadState_Next(t)) {
            if (t->id == key) {
                alive = 1;
                break;
            }
        }
        ps_head_unlock();
        if (alive) {
            ps_thread_find_object(s, i);
        } else {
            s->ttries[i] = 0;  /* gone: its name is lost with it */
        }
    }
    (void)k;
#else
    (void)s;
#endif
}

/* The pin request as a pending call (any thread on 3.12+, else the main). */
static int ps_pending_pin(void *arg)
{
    ps_sampler *s = &ps_S;
    (void)arg;
    ps_atomic_store(&s->pin_queued, 0);
    if (ps_atomic_load(&s->state) == PS_RUNNING) {
        ps_pin_step(s);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The reader path: one tick (timer thread, no GIL)                   */
/* ------------------------------------------------------------------ */
#ifdef PS_HAVE_READER
/* One walk of a thread, interned: see ps_reader_stack. */
static int64_t ps_reader_stack_once(ps_sampler *s, const ps_tsnap *t, int *new_code,
                                    uintptr_t *leaf_code, uintptr_t *leaf_instr)
{
    int truncated = 0, i, n;
    uint32_t nf = 0, node;
    n = ps_reader_walk(&ps_R, t, s->raw, s->max_depth, &truncated);
    if (n < 0) {
        return -2;
    }
    if (leaf_code != NULL) {
        *leaf_code = n > 0 ? s->raw[0].code : 0;
        *leaf_instr = n > 0 ? s->raw[0].instr : 0;
    }
    for (i = 0; i < n; i++) {
        const ps_rawframe *r = &s->raw[i];
        uint32_t oid = ps_codes_seen(&s->objs, r->code, new_code);
        ps_object *o;
        intptr_t lasti;
        int added;
        if (oid == PS_NO_OBJECT) {
            return -2;  /* not a code object: a torn read */
        }
        o = ps_codes_at(&s->objs, oid);
        lasti = ((intptr_t)r->instr - (intptr_t)ps_code_start(r->code)) /
                (intptr_t)sizeof(_Py_CODEUNIT);
        /* set up but not yet started (before its first RESUME): skip */
        if (!r->generator && lasti < o->print.firsttraceable) {
            continue;
        }
        if (lasti < -1 || lasti >= o->print.units) {
            return -2;  /* an instruction pointer outside the code: torn */
        }
        if (lasti < 0) {
            lasti = 0;
        }
        s->walk[nf] = ps_intern_get(&s->frames, oid, (uint64_t)(lasti * (intptr_t)sizeof(_Py_CODEUNIT)),
                                    &added);
        if (s->walk[nf] == PS_INTERN_FULL) {
            return -2;
        }
        nf++;
    }
    if (nf == 0) {
        return -1;
    }
    node = ps_intern_stack(s, nf, truncated);
    return node == PS_INTERN_FULL ? -2 : (int64_t)node;
}

/* Walks of a thread per sample before it is dropped. */
#define PS_WALK_TRIES 4

/* Walk a thread and intern its stack; the leaf node, -1 when it has no
 * Python frame, -2 when the read failed or looked wrong (drop). Sets
 * *new_code when a code object was seen for the first time. A running
 * thread's copy can disagree with itself (reader.h); a walk that failed is
 * tried again at once from a fresh copy of the thread state. Measured at
 * 1 kHz: 10-25% of first walks failed in call-heavy code (go, chaos,
 * raytrace in 4 threads; calls to functions of many frame sizes), each
 * retry failing about as often; after four, 0-0.3% of samples are dropped
 * (13-34% were, with one walk and the old copy). A dropped sample is not a
 * random one (it is taken while calls and returns follow each other
 * fast), so this matters for the shares, not only the count. */
static int64_t ps_reader_stack(ps_sampler *s, const ps_tsnap *t, int *new_code,
                               uintptr_t *leaf_code, uintptr_t *leaf_instr)
{
    ps_tsnap fresh;
    int64_t node = ps_reader_stack_once(s, t, new_code, leaf_code, leaf_instr);
    int tries;
    for (tries = 1; node == -2 && tries < PS_WALK_TRIES; tries++) {
        fresh = *t;
        if (ps_reader_refresh(s->interp, &fresh) != 0) {
            break;  /* gone */
        }
        node = ps_reader_stack_once(s, &fresh, new_code, leaf_code, leaf_instr);
    }
    return node;
}

/* A new row for thread ti, or (wall mode, same stack as its last row, and
 * that row is the last one it has) the same row extended. */
static void ps_reader_record(ps_sampler *s, uint32_t ti, ps_tmodel *m, int32_t node, int64_t now,
                             int64_t cpu, int64_t wall, int merge)
{
    if (merge && m->row >= 0 && m->node == node && s->samples.stack[m->row] == node) {
        s->samples.wall_ns[m->row] += wall;
        s->samples.cpu_ns[m->row] += cpu;
        s->samples.nsamples[m->row] += 1;
        return;
    }
    if (ps_record(s, (uint32_t)node, ti, now, cpu, wall) == 0) {
        m->row = (int64_t)s->samples.count - 1;
    }
}

/* After walking a thread: its stack (-1: none or unreadable) and the
 * thread-state fields it was read with, to tell later whether it changed. */
static inline void ps_note_walk(ps_tmodel *m, const ps_tsnap *t, unsigned long switches,
                                int64_t node)
{
    m->node = node >= 0 ? (int32_t)node : -1;
    if (node == -2) {
        return;  /* unreadable: walk again next time */
    }
    m->frame = t->frame;
    m->top = t->top;
    m->chunk = t->chunk;
    m->exc = t->exc;
    m->walk_switches = switches;
}

/* CPU mode: record the CPU no sample took since the last call (cpu.h,
 * ps_other) as a row of the "other CPU" pseudo-thread. */
static void ps_record_other(ps_sampler *s, int64_t now, int64_t w, int last)
{
    int64_t own = ps_self_cpu_ns(), fb, rest;
    uint32_t ti;
    int added;
    fb = ps_thread_cpu_ns(s->fallback_ident, s->fallback_native);
    rest = ps_other_update(&s->other, now, ps_process_cpu_ns(),
                           own < 0 ? -1 : own + (fb < 0 ? 0 : fb), last);
    if (rest <= 0) {
        return;
    }
    ti = ps_thread_register(s, PS_OTHER_THREAD_KEY, 0, 0, 0, now);
    if (ti == UINT32_MAX) {
        return;
    }
    if (s->other_node < 0) {
        uint32_t f = ps_intern_get(&s->frames, PS_NO_OBJECT, (uint64_t)(int64_t)PS_FRAME_OTHER, &added);
        uint32_t node = f == PS_INTERN_FULL ? PS_INTERN_FULL : ps_intern_get(&s->nodes, 0, f, &added);
        if (node == PS_INTERN_FULL) {
            s->dropped_samples++;
            return;
        }
        s->other_node = (int32_t)node;
    }
    ps_reader_record(s, ti, &s->tm[ti], s->other_node, now, rest, w, 1);
    s->tm[ti].node = s->other_node;
}

/* At the end of a CPU session: if the samples still weigh more CPU than
 * the process spent (the calibration share lags behind load changes),
 * scale every row down by that much, so the total is the process's. */
static void ps_net_out_overshoot(ps_sampler *s)
{
    double total = 0, keep;
    size_t i;
    if (s->other.carry >= 0) {
        return;
    }
    for (i = 0; i < s->samples.count; i++) {
        total += (double)s->samples.cpu_ns[i];
    }
    if (total <= 0) {
        return;
    }
    keep = (total + (double)s->other.carry) / total;
    if (keep < 0) {
        keep = 0;
    }
    for (i = 0; i < s->samples.count; i++) {
        s->samples.cpu_ns[i] = (int64_t)((double)s->samples.cpu_ns[i] * keep);
    }
    s->other.carry = 0;
}

/* CPU mode: the GIL holder's sample (cpu.h, "CPU mode"). */
static void ps_cpu_holder(ps_sampler *s, const ps_tsnap *t, uint32_t ti, ps_tmodel *m,
                          int was_holder, int switched, const ps_gil_view *gil, int64_t now,
                          int64_t w, int *new_code)
{
    int64_t node, clock, d, weight;
    int clean;
    uintptr_t holder = gil->last_holder;
    node = ps_reader_stack(s, t, new_code, NULL, NULL);
    {
        /* did it let go of the GIL while we read its stack? */
        ps_gil_view after;
        ps_gil_read(s->interp, &after);
        if (!after.locked || after.last_holder != holder) {
            s->holder_left++;
        }
    }
    clock = ps_clock_read(&m->clock);
    d = clock >= 0 && m->cpu >= 0 ? clock - m->cpu : -1;
    if (clock >= 0) {
        ps_tmodel_read(m, clock, now, gil->switches, 1);
    }
    ps_tmodel_schedule(m, s->tick_no, 1);
    clean = was_holder && !switched && t->ts == s->prev_holder;
    if (node < 0) {
        /* a holder with no Python frame (starting or ending in C) or a
         * stack that could not be read: its time still counts as sampled
         * wall, so that the calibration does not hand it to other samples
         * (it goes to "outside") */
        if (!clean) {
            s->other.scaled_wall += w;
        }
        if (node == -2) {
            s->dropped_samples++;
        }
        ps_note_walk(m, t, gil->switches, node);
        return;
    }
    ps_note_walk(m, t, gil->switches, node);
    weight = ps_holder_weight(&s->other, w, d, clean);
    if (weight > 0) {
        ps_reader_record(s, ti, m, (int32_t)node, now, weight, w, 0);
    }
}

/* CPU mode: a thread that held the GIL at the last tick and does not now.
 * Its CPU up to here was sampled as the holder; count its next span from
 * now. */
static void ps_cpu_released(ps_sampler *s, const ps_tsnap *t, ps_tmodel *m,
                            const ps_gil_view *gil, int64_t now)
{
    int64_t clock = ps_clock_read(&m->clock);
    if (clock >= 0) {
        ps_tmodel_read(m, clock, now, gil->switches, t->ts == gil->last_holder);
    }
    ps_tmodel_schedule(m, s->tick_no, 1);
}

/* A quiet tick: no thread took the GIL from another since the last tick
 * (its switch count did not move), so no thread but the last holder can
 * have run Python code, and every other thread's stack is what it was.
 * Only the holder is read: its thread state through one safe copy
 * (reader.h, ps_reader_refresh), its stack as on a full tick. The others:
 *   - CPU mode: they get nothing at this tick anyway (not on CPU with the
 *     GIL); their clocks (C calls without the GIL, cpu.h) are read at the
 *     next full tick, over the whole span since their last reading;
 *   - wall mode: each gets this tick's wall on its last stack, credited in
 *     bulk later (ps_quiet_credit): at the next full tick, when it next
 *     holds the GIL, or at the end of the session.
 * In CPU mode there are no quiet ticks for PS_BACKOFF_MAX ticks after a
 * thread other than the holder was seen using CPU without the GIL (a C
 * call: its clock is read at every tick then, as before; read only at
 * full ticks, spans of many ticks in which the GIL changed hands often
 * failed the C-call test of cpu.h on a loaded machine and lost that CPU
 * to "outside").
 * The list is walked again (a full tick) when the count moves, when the
 * holder's state cannot be re-read, and at least every PS_QUIET_MAX_TICKS
 * ticks, so new threads are found and idle threads' clocks read no later
 * than that. With few threads the walk costs less than the copy, and
 * every tick is a full one.
 * Measured (500 idle threads 30 frames deep, busy main thread, 1 kHz,
 * sampling_ns per event, python benchmarks/idle_threads.py, medians of
 * three interleaved runs on a 2-vCPU VM): CPU mode 45.8 us before, 18.4
 * after; wall mode 43.3 before, 15.5 after (docs/sampling.md). */
#define PS_QUIET_MIN_THREADS 32
#define PS_QUIET_MAX_TICKS 32

/* Wall mode: credit thread ti with the quiet ticks since it was last
 * credited, on the stack it had throughout them (its last walk). */
static void ps_quiet_credit(ps_sampler *s, uint32_t ti, int64_t now)
{
    ps_tmodel *m = &s->tm[ti];
    int64_t w = s->quiet_w - m->quiet_w;
    uint32_t n = s->quiet_n - m->quiet_n;
    m->quiet_w = s->quiet_w;
    m->quiet_n = s->quiet_n;
    if (n == 0 || m->node < 0) {
        return;
    }
    if (m->row >= 0 && s->samples.stack[m->row] == m->node) {
        s->samples.wall_ns[m->row] += w;
        s->samples.nsamples[m->row] += (int32_t)n;
    } else if (ps_record(s, (uint32_t)m->node, ti, now, 0, w) == 0) {
        m->row = (int64_t)s->samples.count - 1;
        s->samples.nsamples[m->row] = (int32_t)n;
    }
}

/* Wall mode: credit every thread seen (an exited one included: it was
 * alive, and idle, through the quiet ticks before it took the GIL to exit). */
static void ps_quiet_credit_all(ps_sampler *s, int64_t now)
{
    uint32_t ti, count = ps_chunked_count(&s->tinfo);
    if (!s->quiet_pending) {
        return;
    }
    for (ti = 0; ti < count; ti++) {
        ps_quiet_credit(s, ti, now);
    }
    s->quiet_pending = 0;
}

/* The last snapshot's entry of the thread the GIL names as its last
 * holder, NULL when that snapshot did not see it there. */
static ps_tsnap *ps_last_holder_snap(ps_sampler *s, const ps_gil_view *gil)
{
    int k = s->last_holder_k;
    if (k < 0 || k >= s->snap_n || s->snap[k].ts != gil->last_holder) {
        return NULL;
    }
    return &s->snap[k];
}

static int ps_reader_quiet_tick(ps_sampler *s, const ps_gil_view *gil, int64_t now, int64_t w,
                                int *new_code)
{
    int k = s->last_holder_k;
    uint32_t ti;
    ps_tmodel *m;
    int was_holder;
    if (s->snap_n < PS_QUIET_MIN_THREADS || s->tick_no < s->loud_until ||
        gil->switches != s->prev_switches || s->tick_no - s->full_tick >= PS_QUIET_MAX_TICKS ||
        ps_last_holder_snap(s, gil) == NULL) {
        return -1;
    }
    ti = s->last_holder_ti;
    m = &s->tm[ti];
    was_holder = m->was_holder;
    if (gil->locked && ps_reader_refresh(s->interp, &s->snap[k]) != 0) {
        return -1;
    }
    s->tick_no++;
    s->served_reader++;
    m->was_holder = gil->locked;
    if (s->mode == PS_MODE_CPU) {
        if (gil->locked) {
            ps_cpu_holder(s, &s->snap[k], ti, m, was_holder, 0, gil, now, w, new_code);
        } else if (was_holder) {
            ps_cpu_released(s, &s->snap[k], m, gil, now);
        }
        return 0;
    }
    s->quiet_pending = 1;
    if (gil->locked) {
        int64_t node;
        ps_quiet_credit(s, ti, now);  /* the earlier quiet ticks, on its earlier stack */
        s->quiet_w += w;
        s->quiet_n++;
        m->quiet_w = s->quiet_w;      /* this one is recorded here */
        m->quiet_n = s->quiet_n;
        node = ps_reader_stack(s, &s->snap[k], new_code, NULL, NULL);
        ps_note_walk(m, &s->snap[k], gil->switches, node);
        if (node < 0) {
            s->dropped_samples += node == -2;
        } else {
            ps_reader_record(s, ti, m, (int32_t)node, now, 0, w, 0);
        }
    } else {
        s->quiet_w += w;
        s->quiet_n++;
    }
    return 0;
}

static void ps_reader_tick(ps_sampler *s, int64_t now, int64_t w)
{
    ps_gil_view gil;
    uintptr_t holder;
    int k, n, new_code = 0, new_thread = 0;
    int switched;

    ps_gil_read(s->interp, &gil);
    if (gil.locked) {
        /* first, so that a timer that preempted the holder leaves at once */
        const ps_tsnap *h = ps_last_holder_snap(s, &gil);
        ps_placement_check(&s->place, h != NULL ? h->ident : 0, s->tick_no);
    }
    if (ps_reader_quiet_tick(s, &gil, now, w, &new_code) == 0) {
        n = s->snap_n;
        goto done;
    }
    n = ps_take_snapshot(s);
    if (n < 0) {
        s->busy_ticks++;
        s->main_holds = 0;
        return;
    }
    ps_gil_read(s->interp, &gil);
    holder = gil.locked ? gil.last_holder : 0;
    switched = gil.switches != s->prev_switches;
    s->tick_no++;
    s->served_reader++;
    s->full_tick = s->tick_no;
    s->last_holder_k = -1;
    ps_quiet_credit_all(s, now);  /* before this tick's rows (wall mode) */
    /* the holder first: its stack is copied as soon after the GIL was read
     * as possible (it runs on meanwhile, and may block a moment later) */
    for (k = 1; k < n && holder != 0; k++) {
        if (s->snap[k].ts == holder) {
            ps_tsnap tmp = s->snap[0];
            s->snap[0] = s->snap[k];
            s->snap[k] = tmp;
            break;
        }
    }
    if (holder != 0 && (n == 0 || s->snap[0].ts != holder) && s->mode == PS_MODE_CPU) {
        /* the GIL is held by a thread with no frame yet (starting in C):
         * sampled wall without a sample (see the holder branch below) */
        s->other.scaled_wall += w;
    }

    for (k = 0; k < n; k++) {
        const ps_tsnap *t = &s->snap[k];
        uint32_t ti;
        ps_tmodel *m;
        int is_holder = t->ts == holder && holder != 0;
        int changed, was_holder;
        int64_t node;

        /* the list keeps its order from tick to tick: the same position
         * usually holds the same thread as last time (no hash look-up) */
        if (k < s->hint_cap && s->hint_id[k] == t->id) {
            ti = s->hint_ti[k];
        } else {
            ti = ps_ptrmap_get(&s->tindex, t->id);
            if (ti == UINT32_MAX) {
                ti = ps_thread_register(s, t->id, t->ident, t->native, 0, now);
                if (ti == UINT32_MAX) {
                    s->dropped_samples++;
                    continue;
                }
                new_thread = 1;
            }
            if (k < s->hint_cap) {
                s->hint_id[k] = t->id;
                s->hint_ti[k] = ti;
            }
        }
        m = &s->tm[ti];
        m->seen_tick = s->tick_no;
        if (t->ts == gil.last_holder) {
            s->last_holder_k = k;  /* for the quiet ticks that may follow */
            s->last_holder_ti = ti;
        }
        was_holder = m->was_holder;
        m->was_holder = is_holder;
        changed = ps_tmodel_changed(m, t->frame, t->top, t->chunk, t->exc) ||
                  t->ts == gil.last_holder;

        if (s->mode == PS_MODE_CPU) {
            int64_t clock, d, weight, elapsed;
            int clean, gil_free;
            if (is_holder) {
                ps_cpu_holder(s, t, ti, m, was_holder, switched, &gil, now, w, &new_code);
                continue;
            }
            if (was_holder || !ps_tmodel_read_due(m, s->tick_no)) {
                if (was_holder) {
                    ps_cpu_released(s, t, m, &gil, now);
                }
                continue;
            }
            clock = ps_clock_read(&m->clock);
            if (clock < 0) {
                ps_tmodel_schedule(m, s->tick_no, 0);
                continue;
            }
            d = m->cpu >= 0 ? clock - m->cpu : 0;
            elapsed = now - m->cpu_at;
            gil_free = ps_tmodel_gil_free(m, gil.switches, t->ts == gil.last_holder);
            ps_tmodel_read(m, clock, now, gil.switches, t->ts == gil.last_holder);
            ps_tmodel_schedule(m, s->tick_no, d > elapsed / 50);
            if (d > elapsed / 50) {
                s->loud_until = s->tick_no + PS_BACKOFF_MAX;
            }
            if (d > 0 && (gil_free || ps_in_c_call(d, elapsed))) {
                /* CPU used with the GIL released: in a C call or a system
                 * call. Certain (gil_free), or, when the GIL changed hands
                 * too often to tell, a long C call whose innermost frame did
                 * not move since the last check. */
                uintptr_t lc = 0, li = 0;
                node = ps_reader_stack(s, t, &new_code, &lc, &li);
                if (node >= 0 && (gil_free || (lc == m->leaf_code && li == m->leaf_instr))) {
                    ps_other_exact(&s->other, d);
                    ps_reader_record(s, ti, m, (int32_t)node, now, d, elapsed, 0);
                }
                m->leaf_code = lc;
                m->leaf_instr = li;
                if (node >= 0) {
                    ps_note_walk(m, t, gil.switches, node);
                }
            }
            continue;
        }

        /* wall mode: every thread, every tick */
        if (!changed && m->walk_switches != gil.switches && ps_tmodel_read_due(m, s->tick_no)) {
            /* the GIL changed hands since its last walk: did this thread
             * run? (a thread that did may be back at the same addresses) */
            int64_t clock = ps_clock_read(&m->clock);
            int moved = clock >= 0 && m->cpu >= 0 && clock - m->cpu > 0;
            if (clock >= 0) {
                m->cpu = clock;
                m->cpu_at = now;
            }
            ps_tmodel_schedule(m, s->tick_no, moved);
            changed = moved;
            if (!moved) {
                m->walk_switches = gil.switches;
            }
        }
        if (!changed && m->node >= 0) {
            ps_reader_record(s, ti, m, m->node, now, 0, w, 1);
            continue;
        }
        node = ps_reader_stack(s, t, &new_code, NULL, NULL);
        ps_note_walk(m, t, gil.switches, node);
        if (node < 0) {
            s->dropped_samples += node == -2;
            continue;
        }
        /* a walked stack gets a row of its own (timelines keep the time of
         * each sample); only a stack known unchanged extends its row */
        ps_reader_record(s, ti, m, (int32_t)node, now, 0, w, 0);
    }
done:
#if PY_VERSION_HEX < 0x030C0000
    {
        const ps_tsnap *h = gil.locked ? ps_last_holder_snap(s, &gil) : NULL;
        s->main_holds = h != NULL && h->ident == _PyRuntime.main_thread;
    }
#endif
    if (s->mode == PS_MODE_CPU && now - s->other.last_read_ns >= ps_other_period(n)) {
        ps_record_other(s, now, w, 0);
    }
    s->prev_holder = gil.locked ? gil.last_holder : 0;
    s->prev_switches = gil.switches;
    if (new_code || new_thread) {
        if (s->pin_requested_ns == 0) {
            s->pin_requested_ns = now;
        }
    }
}

/* Ask for a pinning step: a pending call first; the fallback thread when
 * the call sat unserved too long (rate-limited: it takes the GIL). */
static void ps_reader_request_pin(ps_sampler *s, int64_t now)
{
    if (s->pin_requested_ns == 0) {
        if (!ps_atomic_load(&s->names_retry)) {
            return;
        }
        s->pin_requested_ns = now;  /* a step found the head lock busy */
    }
    if (ps_atomic_exchange(&s->pin_queued, 1) == 0) {
        if (ps_add_pending_call(s->interp, ps_pending_pin, 0) != 0) {
            ps_atomic_store(&s->pin_queued, 0);
        }
    }
#if PY_VERSION_HEX < 0x030C0000
    /* 3.11 serves the call on the main thread only, and the eval breaker
     * that wakes it is one per interpreter: set while a worker runs, it
     * sends every safe point of that worker through the slow path until
     * the GIL next changes hands (measured, 8 short threads with the main
     * thread in join: the breaker was set at 56% of the workers' checks at
     * 1 kHz). So it is set only when the main thread holds the GIL; a main
     * thread that does not sees the queued call when it next takes the GIL
     * (take_gil recomputes the breaker for it). Rechecked at each tick
     * while the call waits. */
    if (s->main_holds && ps_atomic_load(&s->pin_queued)) {
        ps_wake_main_thread(s->interp);
    }
#endif
    if (!ps_codes_unpinned(&s->objs) && s->tnamed >= ps_chunked_count(&s->tinfo) &&
        !ps_atomic_load(&s->names_retry)) {
        /* served (by the call or the fallback) */
        s->pin_requested_ns = 0;
        return;
    }
    if (now - s->pin_requested_ns >= PS_PIN_WAIT_NS &&
        now - s->fallback_pin_ns >= PS_PIN_FALLBACK_GAP_NS) {
        s->fallback_pin_ns = now;
        ps_atomic_store(&s->fallback_pin, 1);
        ps_bell_ring(&s->bell);
    }
}
#endif /* PS_HAVE_READER */

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

/* GIL path: queue the sample for the main thread; ring the fallback when
 * the previous tick is still unserved (the main thread is not running
 * Python code: blocked in C, or waiting for the GIL). If the fallback
 * served the previous tick, the main thread is likely still blocked: ring
 * for this tick at once, or a blocked main thread would get only every
 * other tick sampled. */
static void ps_gil_tick(ps_sampler *s)
{
    int unserved = ps_atomic_exchange(&s->owed, 1) != 0;
    if (unserved || ps_atomic_load(&s->fallback_streak)) {
        ps_bell_ring(&s->bell);
    }
    /* may be called without the GIL or a thread state */
    if (ps_atomic_exchange(&s->queued, 1) == 0) {
        if (ps_add_pending_call(s->interp, ps_pending_sample, 1) != 0) {
            ps_atomic_store(&s->queued, 0);  /* queue full: fallback covers it */
        }
    }
}

/* The timer thread: never takes the GIL and has no Python thread state,
 * so nothing the program does can delay its schedule. */
static PS_THREAD_RETURN ps_timer_main(void *arg)
{
    ps_sampler *s = &ps_S;
    uint64_t rng = (uint64_t)ps_monotonic_ns() ^ 0x9E3779B97F4A7C15ULL;
    int64_t next;
    (void)arg;

    ps_thread_prefer_on_time();
#ifdef PS_HAVE_READER
    if (s->mech == PS_MECH_READER) {
        ps_placement_init(&s->place);
    }
#endif
    next = ps_monotonic_ns() + ps_jittered(s->period_ns, &rng);
    for (;;) {
        int64_t now;
        if (ps_waker_wait_until(&s->waker, next)) {
            break;  /* stop() asked us to finish */
        }
        s->ticks++;
#ifdef PS_HAVE_READER
        if (s->mech == PS_MECH_READER) {
            int64_t t0 = ps_monotonic_ns();
            ps_reader_tick(s, t0, t0 - s->last_sample_ns);
            s->last_sample_ns = t0;
            ps_reader_request_pin(s, t0);
            s->sampling_ns += ps_monotonic_ns() - t0;
        } else
#endif
        {
            ps_gil_tick(s);
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
#ifdef PS_HAVE_READER
    if (s->mech == PS_MECH_READER && s->mode == PS_MODE_CPU) {
        int64_t t = ps_monotonic_ns();
        ps_record_other(s, t, t - s->last_sample_ns, 1);  /* the last partial period */
        ps_net_out_overshoot(s);
    }
    if (s->mech == PS_MECH_READER) {
        ps_quiet_credit_all(s, ps_monotonic_ns());  /* wall mode: the last quiet ticks */
    }
#endif
    s->timer_cpu_ns = ps_self_cpu_ns();
#ifdef PS_HAVE_READER
    s->safe_reads = ps_R.reads;
#endif
    return 0;
}

/* The fallback thread: takes the GIL to record a tick the main thread did
 * not serve (GIL path), or to run a pinning step nobody served (reader
 * path). Taking the GIL may wait for a hand-off (up to the switch interval,
 * longer when several threads compete), which is why this is a thread of
 * its own: a timer that waited here would stop ticking (measured: 38
 * samples/s of 500 requested with two busy threads, when the timer did both
 * jobs). */
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
    s->fallback_ident = s->fallback_tstate->thread_id;
    s->fallback_native = ps_thread_native_id(s->fallback_tstate);
    saved = PyEval_SaveThread();
    ps_atomic_store(&s->fallback_ready, 1);

    while (ps_bell_wait(&s->bell)) {
        if (ps_finalizing()) {
            continue;  /* a native thread must not wait for the GIL now */
        }
        PyEval_RestoreThread(saved);
        if (ps_atomic_load(&s->state) == PS_RUNNING) {
            if (ps_atomic_exchange(&s->fallback_pin, 0)) {
                ps_pin_step(s);
            } else if (s->mech == PS_MECH_GIL && ps_atomic_exchange(&s->owed, 0)) {
                ps_atomic_store(&s->fallback_streak, 1);
                s->served_fallback++;
                ps_sample_all(s);
            }
        }
        saved = PyEval_SaveThread();
    }

    s->fallback_cpu_ns = ps_self_cpu_ns();
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
    uint32_t i, n = ps_chunked_count(&s->tinfo);
    for (i = 0; i < n && i < s->tm_cap; i++) {
        ps_clock_close(&s->tm[i].clock);
    }
    for (i = 0; i < s->tnamed; i++) {
        Py_XDECREF(s->tobj[i]);
    }
    ps_codes_free(&s->objs);
    ps_intern_free(&s->frames);
    ps_intern_free(&s->nodes);
    ps_chunked_free(&s->tinfo);
    ps_ptrmap_free(&s->tindex);
    free(s->tm);
    free(s->tobj);
    free(s->ttries);
    free(s->walk);
    free(s->snap);
    free(s->hint_id);
    free(s->hint_ti);
    s->hint_id = NULL;
    s->hint_ti = NULL;
    s->hint_cap = 0;
    s->tm = NULL;
    s->tobj = NULL;
    s->ttries = NULL;
    s->walk = NULL;
    s->snap = NULL;
    s->tm_cap = s->tnamed = 0;
    s->snap_cap = 0;
    s->snap_n = 0;
#ifdef PS_HAVE_READER
    free(s->raw);
    s->raw = NULL;
#endif
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
    int k, n;
    int64_t now;

    if (ps_atomic_load(&s->state) != PS_IDLE) {
        return PS_ERR_RUNNING;
    }
    if (ps_finalizing() || ps_atomic_load(&s->closed)) {
        return PS_ERR_FINALIZING;
    }
    ps_tables_free(s);
    ps_fork_guard_install();  /* before the head lock is first taken (reader.h) */
    s->mode = mode;
    s->mech = PS_MECH_GIL;
    s->max_depth = max_depth;
    s->period_ns = (int64_t)(1e9 / hz);
    s->interp = PyInterpreterState_Main();
    s->ticks = s->missed_ticks = s->served_pending = s->served_fallback = 0;
    s->served_reader = s->busy_ticks = s->pins = s->holder_left = s->safe_reads = 0;
    s->dropped_samples = s->truncated_stacks = 0;
    s->sampling_ns = 0;
    s->timer_cpu_ns = s->fallback_cpu_ns = 0;
    s->fallback_tstate = NULL;
    s->fallback_ident = s->fallback_native = 0;
    s->tick_no = 0;
    s->prev_switches = 0;
    s->prev_holder = 0;
    s->full_tick = 0;
    s->last_holder_k = -1;
    s->last_holder_ti = 0;
    s->loud_until = 0;
    s->quiet_w = 0;
    s->quiet_n = 0;
    s->quiet_pending = 0;
    memset(&s->other, 0, sizeof(s->other));
    s->other_node = -1;
    s->other_row = -1;
    s->pin_requested_ns = s->fallback_pin_ns = 0;
    s->main_holds = 0;
    ps_atomic_store(&s->names_retry, 0);
    ps_atomic_store(&s->owed, 0);
    ps_atomic_store(&s->fallback_ready, 0);
    ps_atomic_store(&s->fallback_streak, 0);
    ps_atomic_store(&s->fallback_pin, 0);
    ps_chunked_init(&s->tinfo, sizeof(ps_thread_info));

    s->walk = (uint32_t *)malloc((size_t)max_depth * sizeof(uint32_t));
#ifdef PS_HAVE_READER
    s->raw = (ps_rawframe *)malloc((size_t)max_depth * sizeof(ps_rawframe));
    if (!s->raw) {
        ps_tables_free(s);
        return PS_ERR_MEMORY;
    }
#endif
    if (!s->walk ||
        ps_codes_init(&s->objs) != 0 ||
        ps_intern_init(&s->frames, 1024, max_frames) != 0 ||
        ps_intern_init(&s->nodes, 4096, max_nodes) != 0 ||
        ps_ptrmap_init(&s->tindex, 64) != 0 ||
        ps_snap_reserve(s, 64) != 0 ||
        ps_samples_init(&s->samples, max_samples) != 0) {
        ps_tables_free(s);
        return PS_ERR_MEMORY;
    }
    Py_XINCREF(registry);
    s->thread_registry = registry;

    /* CPU baselines: time a thread used before start() is not ours */
    now = ps_monotonic_ns();
    n = ps_take_snapshot(s);
    for (k = 0; k < n; k++) {
        const ps_tsnap *t = &s->snap[k];
        uint32_t ti = ps_thread_register(s, t->id, t->ident, t->native, 0, now);
        int64_t cpu;
        if (ti == UINT32_MAX) {
            ps_tables_free(s);
            return PS_ERR_MEMORY;
        }
        cpu = ps_clock_read(&s->tm[ti].clock);
        s->tm[ti].cpu = cpu < 0 ? 0 : cpu;
    }
    if (ps_names_reserve(s) != 0) {
        ps_tables_free(s);
        return PS_ERR_MEMORY;
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

/* GIL held, after ps_prepare and ps_tasks_prepare: which path this session
 * takes (see the top comment). */
static void ps_choose_mechanism(ps_sampler *s)
{
#ifdef PS_HAVE_READER
    if (!ps_T.on && ps_saferead_init() != PS_SAFEREAD_NONE) {
        s->mech = PS_MECH_READER;
        return;
    }
#endif
    s->mech = PS_MECH_GIL;
}

/* GIL released: start the fallback thread, wait until it holds its
 * thread state (it needs the GIL once to create it), then start the timer.
 * Returns PS_OK or PS_ERR_THREAD. */
static int ps_start_timer(void)
{
    ps_sampler *s = &ps_S;
#ifdef PS_HAVE_READER
    ps_R.reads = 0;
#endif
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

/* GIL held, timer joined: pin what is left, name the threads still alive;
 * the tables stay readable until ps_reset(), and the state stays STOPPING
 * until then, so that a start() made while the caller copies them (from a
 * signal handler: the copy runs Python code) is refused instead of freeing
 * them. */
static void ps_end_stop(void)
{
    ps_sampler *s = &ps_S;
    ps_atomic_store(&s->owed, 0);
    if (s->mech == PS_MECH_READER && ps_atomic_load(&s->state) == PS_STOPPING) {
        ps_pin_step(s);
    }
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

/* GIL held, after stop: the object a frame refers to (borrowed), NULL for
 * the truncation marker; *freed set when it is a code object that died
 * before it could be pinned. */
static PyObject *ps_frame_object(uint32_t frame, int *freed)
{
    ps_sampler *s = &ps_S;
    uint64_t oid = s->frames.key_a[frame];
    ps_object *o;
    *freed = 0;
    if (oid == PS_NO_OBJECT) {
        return NULL;
    }
    o = ps_codes_at(&s->objs, (uint32_t)oid);
    if (ps_atomic_load(&o->status) != PS_CODE_PINNED) {
        *freed = 1;
        return NULL;
    }
    return (PyObject *)o->ptr;
}

/* GIL held, after ps_end_stop(): drop the tables (and the objects they
 * keep alive: their deallocation may run Python code, still inside
 * STOPPING), then the session is over. */
static void ps_reset(void)
{
    ps_tables_free(&ps_S);
    ps_atomic_store(&ps_S.state, PS_IDLE);
}

/* GIL held: pysampler's atexit hook ran; refuse every later start() so that
 * no timer thread can outlive the interpreter. */
static void ps_close(void)
{
    ps_atomic_store(&ps_S.closed, 1);
}

/* GIL held, at import: a fresh interpreter (after Py_FinalizeEx and a new
 * Py_Initialize in an embedding program) may start sessions again. */
static void ps_open(void)
{
    if (ps_atomic_load(&ps_S.state) == PS_IDLE) {
        ps_atomic_store(&ps_S.closed, 0);
    }
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
    ps_atomic_store(&s->pin_queued, 0);
    ps_atomic_store(&s->names_retry, 0);
    ps_atomic_store(&s->state, PS_IDLE);
    /* the timer may have held the waker's or the bell's mutex at the
     * fork: start over with fresh ones instead of destroying locked ones */
    s->sync_ok = 0;
}

#endif /* PYSAMPLER_CORE_H */

