/*
 * reader.h - the GIL-free stack reader (CPython 3.11+): the native timer
 * thread reads every thread's Python stack itself, holding no GIL and no
 * Python thread state, so that no sample waits for the GIL or makes the
 * program switch threads.
 *
 * What makes it safe
 * ------------------
 * 1. The thread list. The runtime's head lock (_PyRuntime.interpreters.mutex,
 *    HEAD_LOCK in CPython, what sys._current_frames takes) guards the list:
 *    a thread state is unlinked under it before it is freed, and its
 *    data-stack chunks are freed after the unlink (pystate.c,
 *    tstate_delete_common). While we hold it, every listed PyThreadState is
 *    mapped and its fields are loads of live memory. ps_reader_snapshot copies
 *    the few fields we need and lets go: no system call, no allocation, no
 *    other lock inside. We only ever *try* the lock (and skip the tick when
 *    it is busy), so the program cannot make us wait, and we never hold it
 *    across anything that could wait for the program.
 *      - fork: 3.13+ PyOS_BeforeFork takes the head lock itself (so a fork
 *        waits out our short hold); 3.11/3.12 re-create the lock in the child
 *        (_PyRuntimeState_ReInitThreads). The child has no timer either way.
 *      - finalization frees the lock (3.11/3.12) and the thread states; the
 *        session is stopped before it starts (pysampler's atexit hook, and
 *        start() is refused afterwards), so the timer never runs then.
 * 2. The frames. Nothing guards them: a thread pops frames and frees its
 *    data-stack chunks without locks, generator frames live (and die) inside
 *    generator objects, and 3.11/3.12 keep the pointer to the current frame
 *    in a _PyCFrame on the thread's C stack. Every frame, chunk and _PyCFrame
 *    is therefore read through a copy that cannot fault (saferead.h); the
 *    running thread's frames are copied with its whole used data-stack chunk,
 *    and its innermost-frame pointer, in one call (measured: one 4 KiB copy
 *    costs what 1.2 single-frame copies do; ps_reader_top_and_chunk) and
 *    walked inside the copy. A copy may be stale or torn (the thread ran on
 *    meanwhile): the walk checks each frame's owner, caps the depth, and the
 *    caller checks each code pointer against the code table (codes.h: a
 *    fingerprint read on first sight must say PyCode_Type) and each
 *    instruction offset against the code's length; a walk that fails is
 *    made again from a fresh copy, a few times (core.h, ps_reader_stack),
 *    then the thread's sample is dropped.
 * 3. Who runs. The GIL's `locked` and `last_holder` say which thread holds it
 *    (3.11: _PyRuntime.ceval.gil; 3.12+: interp->ceval.gil), `switch_number`
 *    counts changes of holder: core.h and cpu.h use these to know which
 *    thread is running Python code and which stacks cannot have changed.
 *
 * Nothing here touches Python objects: names and lines are resolved later
 * with the GIL from pinned code objects (codes.h).
 */
#ifndef PYSAMPLER_READER_H
#define PYSAMPLER_READER_H

#include "pyframes.h"
#include "platform.h"
#include "saferead.h"

#ifndef Py_BUILD_CORE
#  define Py_BUILD_CORE 1
#  define PYSAMPLER_READER_BUILD_CORE 1
#endif
/* _PyRuntime (the head lock; the GIL before 3.12), PyInterpreterState
 * (3.12+'s GIL pointer), struct _gil_runtime_state. These parts serve every
 * version: the GIL-holding path (3.9/3.10, asyncio) also walks the thread
 * list under the head lock. */
#if PY_VERSION_HEX >= 0x030D0000
#  undef _PyGC_FINALIZED
#  include "internal/pycore_interp.h"
#endif
#include "internal/pycore_runtime.h"
#include "internal/pycore_gil.h"
#ifdef PYSAMPLER_READER_BUILD_CORE
#  undef Py_BUILD_CORE
#  undef PYSAMPLER_READER_BUILD_CORE
#endif

/* ------------------------------------------------------------------ */
/* Fork: never hold the head lock across it.                          */
/* ------------------------------------------------------------------ */
/* CPython 3.11's child takes the head lock (_PyEval_ReInitThreads ->
 * _PyThreadState_DeleteExcept) before it re-creates it
 * (_PyRuntimeState_ReInitThreads): a fork while the timer held it left the
 * child waiting forever (measured: 3 of 60 runs of a program forking five
 * times while profiled at 1 kHz). CPython's own threads take it with the
 * GIL, which the forking thread holds; the timer takes it without. So the
 * timer holds `ps_fork_guard` while it holds the head lock, and a fork
 * waits for it (pthread_atfork's prepare step runs in the forking thread,
 * before fork(); the timer's hold is a bounded walk, never a wait for the
 * GIL). The child's copy of the guard is unlocked again by its owner. */
#  if !defined(_WIN32)
static pthread_mutex_t ps_fork_guard = PTHREAD_MUTEX_INITIALIZER;
static int ps_fork_guard_installed = 0;

static void ps_fork_guard_lock(void)
{
    pthread_mutex_lock(&ps_fork_guard);
}

static void ps_fork_guard_unlock(void)
{
    pthread_mutex_unlock(&ps_fork_guard);
}

/* GIL held (start()): once per process, inherited by forked children. */
static void ps_fork_guard_install(void)
{
    if (!ps_fork_guard_installed &&
        pthread_atfork(ps_fork_guard_lock, ps_fork_guard_unlock, ps_fork_guard_unlock) == 0) {
        ps_fork_guard_installed = 1;
    }
}
#    define PS_FORK_GUARD_TRY() (pthread_mutex_trylock(&ps_fork_guard) == 0)
#    define PS_FORK_GUARD_RELEASE() pthread_mutex_unlock(&ps_fork_guard)
#  else
static void ps_fork_guard_install(void) {}
#    define PS_FORK_GUARD_TRY() 1
#    define PS_FORK_GUARD_RELEASE() ((void)0)
#  endif

/* ------------------------------------------------------------------ */
/* The head lock: try it, never wait in the lock itself.              */
/* ------------------------------------------------------------------ */
static int ps_head_trylock(void)
{
#  if PY_VERSION_HEX >= 0x030D0000
    /* 3.13+: a PyMutex; bit 0 is "locked". Taking it is one compare-and-
     * swap from 0 (unlocked, nobody parked) to locked. */
#    if defined(_MSC_VER) && !defined(__clang__)
    return _InterlockedCompareExchange8((volatile char *)&_PyRuntime.interpreters.mutex._bits, 1, 0) == 0;
#    else
    uint8_t expected = 0;
    return __atomic_compare_exchange_n(&_PyRuntime.interpreters.mutex._bits, &expected, 1, 0,
                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
#    endif
#  else
    /* 3.11/3.12: a PyThread_type_lock (a semaphore or mutex+condvar);
     * non-blocking acquire */
    return PyThread_acquire_lock(_PyRuntime.interpreters.mutex, NOWAIT_LOCK) == PY_LOCK_ACQUIRED;
#  endif
}

static void ps_head_unlock(void)
{
#  if PY_VERSION_HEX >= 0x030D0000
    /* wakes a parked waiter, if any (a thread being created or deleted) */
    PyMutex_Unlock(&_PyRuntime.interpreters.mutex);
#  else
    PyThread_release_lock(_PyRuntime.interpreters.mutex);
#  endif
    PS_FORK_GUARD_RELEASE();
}

/* Take the head lock, retrying briefly; 0 when it stayed busy or a fork is
 * under way (the caller skips this tick: when in doubt, drop a sample). */
static int ps_head_lock(void)
{
    int i;
    if (!PS_FORK_GUARD_TRY()) {
        return 0;
    }
    for (i = 0; i < 50; i++) {
        if (ps_head_trylock()) {
            return 1;
        }
#  if defined(_WIN32)
        Sleep(0);
#  else
        {
            struct timespec ts = {0, 10000};  /* 10 us */
            nanosleep(&ts, NULL);
        }
#  endif
    }
    PS_FORK_GUARD_RELEASE();
    return 0;
}

/* ------------------------------------------------------------------ */
/* The GIL's public-ish state                                          */
/* ------------------------------------------------------------------ */
typedef struct {
    int locked;
    uintptr_t last_holder;       /* PyThreadState*, the holder when locked */
    unsigned long switches;      /* changes of holder since start-up */
} ps_gil_view;

static inline struct _gil_runtime_state *ps_gil_of(PyInterpreterState *interp)
{
#  if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: each interpreter points at its GIL (shared by default) */
    return interp->ceval.gil;
#  else
    (void)interp;
    return &_PyRuntime.ceval.gil;
#  endif
}

static inline void ps_gil_read(PyInterpreterState *interp, ps_gil_view *v)
{
    struct _gil_runtime_state *gil = ps_gil_of(interp);
    /* racy loads on purpose: word-sized, and a stale value only moves a
     * sample across a hand-off that happened at that very moment */
#  if PY_VERSION_HEX >= 0x030D0000
    v->locked = *(volatile int *)&gil->locked > 0;
    v->last_holder = (uintptr_t)*(PyThreadState *volatile *)&gil->last_holder;
#  else
    v->locked = _Py_atomic_load_relaxed(&gil->locked) > 0;
    v->last_holder = (uintptr_t)_Py_atomic_load_relaxed(&gil->last_holder);
#  endif
    v->switches = *(volatile unsigned long *)&gil->switch_number;
}

/* ------------------------------------------------------------------ */
/* Snapshot of the thread list (head lock held)                        */
/* ------------------------------------------------------------------ */
typedef struct {
    uintptr_t ts;          /* the PyThreadState, compared, never followed */
    uint64_t id;           /* tstate->id: unique for the interpreter's life */
    unsigned long ident;   /* threading.get_ident() */
    unsigned long native;  /* the OS thread id */
    uintptr_t frame;       /* 3.13+: current frame; 3.11/3.12: its _PyCFrame;
                              3.9/3.10: the current PyFrameObject */
    uintptr_t top;         /* data-stack top */
    uintptr_t chunk;       /* current data-stack chunk */
    uintptr_t limit;       /* where that chunk ends */
    uintptr_t exc;         /* tstate->exc_info: moves when a generator runs */
} ps_tsnap;

/* Has this thread state run Python code yet? Until it has, its identity
 * may not be its own: threading creates the state in the parent thread,
 * where 3.9-3.11 fill in the *parent's* ident and native id (the new thread
 * overwrites them when it starts) and 3.12+ leave 0. Such a state has no
 * frames yet; 3.11+ allocate the first data-stack chunk with the first
 * frame and never free it before the state itself. */
static inline int ps_thread_ran(PyThreadState *t)
{
    if (t->thread_id == 0) {
        return 0;
    }
#  if PY_VERSION_HEX >= 0x030B0000
    return t->datastack_chunk != NULL;
#  else
    return t->frame != NULL;
#  endif
}

/* The fields of thread state `t` that a snapshot keeps. */
static inline void ps_reader_fill(ps_tsnap *s, uintptr_t ts, const PyThreadState *t)
{
    s->ts = ts;
    s->id = t->id;
    s->ident = t->thread_id;
    s->native = ps_thread_native_id((PyThreadState *)t);
#  if PY_VERSION_HEX >= 0x030D0000
    s->frame = (uintptr_t)t->current_frame;
#  elif PY_VERSION_HEX >= 0x030B0000
    s->frame = (uintptr_t)t->cframe;
#  else
    s->frame = (uintptr_t)t->frame;  /* 3.9/3.10: a PyFrameObject */
#  endif
#  if PY_VERSION_HEX >= 0x030B0000
    s->top = (uintptr_t)t->datastack_top;
    s->chunk = (uintptr_t)t->datastack_chunk;
    s->limit = (uintptr_t)t->datastack_limit;
#  else
    s->top = s->chunk = s->limit = 0;
#  endif
    s->exc = (uintptr_t)t->exc_info;
}

/* Copy up to `cap` thread states of `interp` into `out`; returns how many
 * threads the list held (more than cap: the caller grows and retries), or
 * -1 when the head lock stayed busy. */
static int ps_reader_snapshot(PyInterpreterState *interp, ps_tsnap *out, int cap,
                              uintptr_t skip)
{
    PyThreadState *t;
    int n = 0;
    if (!ps_head_lock()) {
        return -1;
    }
    for (t = PyInterpreterState_ThreadHead(interp); t != NULL; t = PyThreadState_Next(t)) {
        if ((uintptr_t)t == skip || !ps_thread_ran(t)) {
            continue;  /* our fallback thread; a state not yet bound to a thread */
        }
        if (n < cap) {
            ps_reader_fill(&out[n], (uintptr_t)t, t);
        }
        n++;
    }
    ps_head_unlock();
    return n;
}

/* Re-read one thread state of an earlier snapshot, without the head lock
 * and without walking the list (which costs a cache miss or more per
 * listed thread: measured 16-22 us per tick with 500 threads): one safe
 * copy of the state (saferead.h). The state may have been freed since: the
 * copy then fails, or is not the thread we knew (another id or
 * interpreter), or has not run; -1 tells the caller to walk the list. A
 * state freed after the copy leaves a copy of what it held while alive. */
static inline int ps_reader_refresh(PyInterpreterState *interp, ps_tsnap *s)
{
    PyThreadState copy;
    if (ps_safe_read(&copy, (const void *)s->ts, sizeof(copy)) != 0 || copy.interp != interp ||
        copy.id != s->id || !ps_thread_ran(&copy)) {
        return -1;
    }
    ps_reader_fill(s, s->ts, &copy);
    return 0;
}

#if PY_VERSION_HEX >= 0x030B0000
#  define PS_HAVE_READER 1

/* ------------------------------------------------------------------ */
/* Walking one thread's frames through safe copies                     */
/* ------------------------------------------------------------------ */
typedef struct {
    uintptr_t code;        /* the code object's address (unverified) */
    uintptr_t instr;       /* the frame's instruction pointer */
    int generator;         /* owned by a generator: never "incomplete" */
} ps_rawframe;

/* Bytes of a frame we read: everything before the locals. */
#  define PS_FRAME_HEAD offsetof(struct _PyInterpreterFrame, localsplus)
/* Data-stack copies per walk, and the room for them. A deep stack spans
 * several chunks (16 KiB first, then bigger); each is copied whole, once,
 * when the walk first needs a frame in it (measured, 300 frames deep on a
 * VM where a system call costs ~1 us: 510 us per event reading the frames
 * of earlier chunks one by one, PS_DEEP_US after this). Frames outside
 * every chunk (generators, 3.12's shim frames on the C stack) are read one
 * by one. */
#  define PS_MAX_RANGES 8
#  define PS_COPY_ROOM (256 * 1024)

typedef struct {
    char buf[PS_COPY_ROOM];
    uintptr_t lo[PS_MAX_RANGES], hi[PS_MAX_RANGES];  /* copied [lo, hi) */
    size_t off[PS_MAX_RANGES];                       /* where in buf */
    int n;
    size_t used;
    uintptr_t next_chunk;  /* the chunk before the last one copied, 0: none */
    uint64_t reads;        /* safe-read calls made (cost accounting) */
} ps_reader;

static ps_reader ps_R;

/* Copy the used part [lo, hi) of a chunk (its top part if it does not fit). */
/* Record that [lo, hi) now sits in the buffer at R->used. */
static void ps_reader_keep(ps_reader *R, uintptr_t lo, uintptr_t hi)
{
    R->lo[R->n] = lo;
    R->hi[R->n] = hi;
    R->off[R->n] = R->used;
    R->used += hi - lo;
    R->n++;
}

static int ps_reader_copy(ps_reader *R, uintptr_t lo, uintptr_t hi)
{
    size_t room = PS_COPY_ROOM - R->used;
    if (R->n == PS_MAX_RANGES || hi <= lo || hi - lo > ((uintptr_t)1 << 30)) {
        return -1;
    }
    if (hi - lo > room) {
        if (room < 4096) {
            return -1;
        }
        lo = hi - room;
    }
    R->reads++;
    if (ps_safe_read(R->buf + R->used, (const void *)lo, hi - lo) != 0) {
        return -1;
    }
    ps_reader_keep(R, lo, hi);
    return 0;
}

/* Copy the chunk before the lowest one copied: chunk headers say where
 * the previous chunk is and how much of it is used (CPython saves `top`
 * when it pushes a new chunk). */
static int ps_reader_copy_previous(ps_reader *R)
{
    _PyStackChunk head;
    uintptr_t prev;
    if (R->next_chunk == 0) {
        return -1;
    }
    R->reads += 2;
    if (ps_safe_read(&head, (const void *)R->next_chunk, offsetof(_PyStackChunk, data)) != 0) {
        R->next_chunk = 0;
        return -1;
    }
    prev = (uintptr_t)head.previous;
    R->next_chunk = 0;
    if (prev == 0 || ps_safe_read(&head, (const void *)prev, offsetof(_PyStackChunk, data)) != 0 ||
        head.top > head.size / sizeof(PyObject *)) {
        return -1;  /* none, gone, or not a chunk header (torn) */
    }
    if (ps_reader_copy(R, prev + offsetof(_PyStackChunk, data),
                       prev + offsetof(_PyStackChunk, data) + head.top * sizeof(PyObject *)) != 0) {
        return -1;
    }
    R->next_chunk = prev;
    return 0;
}

/* The address of the first Python instruction of a code object: pointer
 * arithmetic only (the object is not read). */
static inline uintptr_t ps_code_start(uintptr_t code)
{
    return code + offsetof(PyCodeObject, co_code_adaptive);
}

static inline uintptr_t ps_raw_code(const struct _PyInterpreterFrame *f)
{
#  if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: a tagged _PyStackRef; the tag lives in the low bits */
    return (uintptr_t)f->f_executable.bits & ~(uintptr_t)Py_TAG_BITS;
#  elif PY_VERSION_HEX >= 0x030D0000
    return (uintptr_t)f->f_executable;
#  else
    return (uintptr_t)f->f_code;
#  endif
}

static inline uintptr_t ps_raw_instr(const struct _PyInterpreterFrame *f)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return (uintptr_t)f->instr_ptr;
#  else
    return (uintptr_t)f->prev_instr;
#  endif
}

/* A frame owned by the C stack or the interpreter (entry/exit shims):
 * part of the chain, never of the profile. */
static inline int ps_raw_shim(int owner)
{
#  if PY_VERSION_HEX >= 0x030E0000
    /* 3.14: FRAME_OWNED_BY_INTERPRETER (3) and FRAME_OWNED_BY_CSTACK (4);
     * 3.15: CSTACK is gone, INTERPRETER is the highest owner */
    return owner >= FRAME_OWNED_BY_INTERPRETER;
#  elif PY_VERSION_HEX >= 0x030C0000
    return owner >= FRAME_OWNED_BY_CSTACK;
#  else
    (void)owner;
    return 0;
#  endif
}

static inline int ps_raw_owner_ok(int owner)
{
#  if PY_VERSION_HEX >= 0x030F0000
    return owner >= 0 && owner <= FRAME_OWNED_BY_INTERPRETER;
#  elif PY_VERSION_HEX >= 0x030E0000
    return owner >= 0 && owner <= FRAME_OWNED_BY_CSTACK;
#  elif PY_VERSION_HEX >= 0x030C0000
    return owner >= 0 && owner <= FRAME_OWNED_BY_CSTACK;
#  else
    return owner >= 0 && owner <= FRAME_OWNED_BY_FRAME_OBJECT;
#  endif
}

/* One frame header at `addr`: from a chunk copy when it lies inside one
 * (copying earlier chunks as the walk reaches them), else through its own
 * safe copy. */
static int ps_reader_frame(ps_reader *R, uintptr_t addr, struct _PyInterpreterFrame *out)
{
    int i;
    for (;;) {
        for (i = R->n - 1; i >= 0; i--) {
            if (addr >= R->lo[i] && addr + PS_FRAME_HEAD <= R->hi[i]) {
                memcpy(out, R->buf + R->off[i] + (addr - R->lo[i]), PS_FRAME_HEAD);
                return 0;
            }
        }
        /* outside the copied chunks while an earlier chunk exists: maybe a
         * frame of a deep stack (chunks lie anywhere in memory); copy that
         * chunk and look again */
        if (R->next_chunk != 0 && ps_reader_copy_previous(R) == 0) {
            continue;
        }
        break;
    }
    R->reads++;
    return ps_safe_read(out, (const void *)addr, PS_FRAME_HEAD);
}

/* Where a snapshotted thread keeps the pointer to its innermost frame, 0
 * when it has none: 3.13+ in the thread state; 3.11/3.12 in the _PyCFrame
 * of its innermost evaluation, on its C stack. */
static uintptr_t ps_reader_top_at(const ps_tsnap *t)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return t->ts + offsetof(PyThreadState, current_frame);
#  else
    return t->frame != 0 ? t->frame + offsetof(_PyCFrame, current_frame) : 0;
#  endif
}

/* Bytes past the data-stack top (as the snapshot saw it) copied with the
 * chunk: room for the frames a running thread pushed since (a 3.11 frame
 * header is 72 bytes, its locals and value stack a few words each). */
#  define PS_TOP_SLACK 2048
/* The part of the chunk nearest its top, copied first (see below). */
#  define PS_HOT_BYTES 4096

/* The innermost frame of a snapshotted thread and the used part of its
 * current chunk, copied in one call (saferead.h: ps_safe_read_ranges). A
 * running thread pushes and pops frames every few hundred nanoseconds; what
 * the copy holds near the top must be what the frame pointer saw a moment
 * before, or the walk finds another frame's locals where a frame header
 * was. Copied in separate calls (a few microseconds apart here), the two
 * disagreed often enough to drop 30% of the samples of code calling
 * functions of many sizes (13-25% in richards, raytrace, go and chaos).
 * So, in one call and in this order: the frame pointer, the top 4 KiB of
 * the chunk, then the rest of it (the frames deeper down change only when
 * the thread returns that far). The copy reaches PS_TOP_SLACK past the
 * snapshot's top, within the chunk, so that frames pushed since are in it.
 * Returns the frame (0: none), or 1 when nothing could be read (a thread
 * that just exited). */
static uintptr_t ps_reader_top_and_chunk(ps_reader *R, const ps_tsnap *t)
{
    uintptr_t at = ps_reader_top_at(t), top = 0, lo, hi, mid;
    if (at == 0) {
        return 0;
    }
    if (t->chunk != 0 && t->top > t->chunk) {
        ps_range r[3];
        int nr = 2;
        lo = t->chunk + offsetof(_PyStackChunk, data);
        hi = t->top;
        if (t->limit > hi) {
            hi = t->limit - hi > PS_TOP_SLACK ? hi + PS_TOP_SLACK : t->limit;
        }
        if (hi > lo && hi - lo > PS_COPY_ROOM) {
            lo = hi - PS_COPY_ROOM;
        }
        mid = hi - lo > PS_HOT_BYTES ? hi - PS_HOT_BYTES : lo;
        r[0].dst = &top;
        r[0].src = (const void *)at;
        r[0].n = sizeof(top);
        r[1].dst = R->buf + R->used + (mid - lo);
        r[1].src = (const void *)mid;
        r[1].n = hi - mid;
        if (mid > lo) {
            r[2].dst = R->buf + R->used;
            r[2].src = (const void *)lo;
            r[2].n = mid - lo;
            nr = 3;
        }
        R->reads++;
        if (hi > lo && ps_safe_read_ranges(r, nr) == 0) {
            ps_reader_keep(R, lo, hi);
            R->next_chunk = t->chunk;  /* its header is read if the walk goes below */
            return top;
        }
    }
    /* no chunk, or it could not be copied (freed since): the pointer alone */
    R->reads++;
    if (ps_safe_read(&top, (const void *)at, sizeof(top)) != 0) {
        return 1;
    }
    return top;
}

/* Walk a thread's frames, innermost first, into out[0..max). Returns the
 * number of frames, or -1 when something could not be read or looked wrong
 * (drop the sample). Sets *truncated when frames remained beyond max. */
static int ps_reader_walk(ps_reader *R, const ps_tsnap *t, ps_rawframe *out, int max,
                          int *truncated)
{
    struct _PyInterpreterFrame f;
    uintptr_t addr;
    int n = 0, steps = 0;

    *truncated = 0;
    R->n = 0;
    R->used = 0;
    R->next_chunk = 0;
    addr = ps_reader_top_and_chunk(R, t);
    if (addr == 1) {
        return -1;
    }
    while (addr != 0) {
        int owner;
        if (++steps > max + 256) {
            return -1;  /* a cycle, or garbage: not a real stack */
        }
        if ((addr & (sizeof(void *) - 1)) != 0 || ps_reader_frame(R, addr, &f) != 0) {
            return -1;
        }
        owner = (int)f.owner;
        if (!ps_raw_owner_ok(owner)) {
            return -1;
        }
        if (!ps_raw_shim(owner)) {
            if (n == max) {
                *truncated = 1;
                break;
            }
            out[n].code = ps_raw_code(&f);
            out[n].instr = ps_raw_instr(&f);
            out[n].generator = owner == FRAME_OWNED_BY_GENERATOR;
            if (out[n].code == 0) {
#  if PY_VERSION_HEX >= 0x030E0000
                /* 3.14+ unlinks a returning frame (current_frame = its
                 * caller), then clears its code reference to NULL, the rest
                 * of it left as it was: read between the two, the innermost
                 * frame is one that has returned, and its caller is where
                 * the thread runs (measured: 45% of walks of call-heavy
                 * code found this). Deeper down a NULL is garbage. */
                if (n == 0 && owner == FRAME_OWNED_BY_THREAD) {
                    addr = (uintptr_t)f.previous;
                    continue;
                }
#  endif
                return -1;
            }
            n++;
        }
        addr = (uintptr_t)f.previous;
    }
    return n;
}

#endif /* PY_VERSION_HEX >= 3.11 */

#endif /* PYSAMPLER_READER_H */
