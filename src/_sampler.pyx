# cython: language_level=3, boundscheck=False, wraparound=False
"""Native core of pysampler: primitives only.

start() launches the native timer thread, stop() ends the session and hands
back the raw tables. Everything else (merging frames, formats, aggregation)
is Python. The C headers beside this file (src/_sampler/*.h) hold the
sampler itself; see core.h for how a sample is taken.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython cimport array
from cpython.object cimport PyObject
from cpython.pystate cimport PyInterpreterState

import array

# Columns leave as array.array ('i': int32, 'q': int64), copied with one
# memcpy each: no numpy in the profiled process (Profile makes numpy views
# of them only when the analysis API asks).
cdef array.array _INT32 = array.array("i")
cdef array.array _INT64 = array.array("q")
if _INT32.itemsize != 4:
    raise ImportError("pysampler needs a 4-byte C int")


cdef extern from "_sampler/core.h" nogil:
    ctypedef struct ps_intern:
        uint64_t *key_a
        uint64_t *key_b
        uint32_t count

    ctypedef struct ps_samples:
        int32_t *stack
        int32_t *thread
        int64_t *time_ns
        int64_t *cpu_ns
        int64_t *wall_ns
        int32_t *nsamples
        size_t count

    ctypedef struct ps_thread_info:
        uint64_t key
        unsigned long ident
        unsigned long native

    ctypedef struct ps_chunked:
        pass

    ctypedef struct ps_placement:
        uint64_t moves
    ctypedef struct ps_sampler:
        long state
        int mode
        int mech
        int max_depth
        int64_t period_ns
        ps_intern frames
        ps_intern nodes
        ps_chunked tinfo
        PyObject **tobj
        uint32_t tnamed
        ps_samples samples
        int64_t start_ns
        int64_t stop_ns
        uint64_t ticks
        uint64_t missed_ticks
        uint64_t served_pending
        uint64_t served_fallback
        uint64_t served_reader
        uint64_t busy_ticks
        uint64_t holder_left
        uint64_t safe_reads
        ps_placement place
        uint64_t pins
        uint64_t dropped_samples
        uint64_t truncated_stacks
        int64_t sampling_ns
        int64_t timer_cpu_ns
        int64_t fallback_cpu_ns

    ps_sampler ps_S
    int PS_MODE_CPU, PS_MODE_WALL
    int PS_IDLE, PS_RUNNING
    int PS_OK, PS_ERR_RUNNING, PS_ERR_NOT_RUNNING, PS_ERR_MEMORY
    int PS_ERR_THREAD, PS_ERR_FINALIZING
    int PS_MECH_READER
    unsigned long long PS_TASKS_THREAD_KEY
    unsigned long long PS_OTHER_THREAD_KEY
    int PS_FRAME_OTHER
    const char *PS_FREED_CODE_NAME

    long ps_atomic_load(long *p)
    int ps_prepare(double hz, int mode, int max_depth, size_t max_samples,
                   uint32_t max_frames, uint32_t max_nodes, object registry) with gil
    void ps_choose_mechanism(ps_sampler *s)
    int ps_start_timer()
    void ps_mark_running()
    int ps_begin_stop()
    void ps_join_timer()
    void ps_end_stop()
    void ps_reset()
    void ps_after_fork_child()
    int64_t ps_monotonic_ns()
    int ps_code_line(PyObject *code, int offset)
    int ps_eval_breaker_set()
    PyObject *ps_frame_object(uint32_t frame, int *freed)
    uint32_t ps_chunked_count(ps_chunked *c)
    ps_thread_info *ps_thread_at(ps_sampler *s, uint32_t ti)
    void ps_close()
    void ps_open()

    # asyncio task stacks (tasks.h)
    ctypedef struct ps_tasks:
        int on
        uint64_t task_samples
        uint64_t dropped
    ps_tasks ps_T
    int PS_FRAME_TASK, PS_FRAME_AWAIT, PS_FRAME_AWAIT_TASK
    int ps_tasks_prepare(object config) with gil
    Py_ssize_t ps_tasks_probe(object probe) with gil


class AlreadyRunning(RuntimeError):
    """The native sampler already runs a session."""


class NotRunning(RuntimeError):
    """The native sampler runs no session."""


cdef extern from "Python.h":
    PyInterpreterState *PyInterpreterState_Get()
    PyInterpreterState *PyInterpreterState_Main()

# The package refuses subinterpreters before loading this module (see
# pysampler/_support.py); this is the check of last resort, for a Python
# where it cannot tell. The sampler walks the main interpreter only.
if PyInterpreterState_Get() != PyInterpreterState_Main():
    raise ImportError("pysampler cannot be imported in a subinterpreter: "
                      "it samples the main interpreter only")

MODES = {"cpu": 0, "wall": 1}

#: bytes of one sample row (stack, thread, time, CPU and wall columns)
SAMPLE_ROW_BYTES = 2 * sizeof(int32_t) + 3 * sizeof(int64_t)

#: name of the pseudo-thread whose rows are asyncio task stacks
TASKS_THREAD_NAME = "asyncio tasks"
#: CPU mode: the pseudo-thread and frame holding CPU that no sample took
OTHER_CPU_THREAD_NAME = "(other CPU)"
OTHER_CPU_FRAME = "[CPU outside sampled Python stacks]"


def asyncio_task_node_offset(object probe):
    """Where a C task's list node sits, or None (3.14's task lists).

    ``probe`` is an ``_asyncio.Task`` the caller has just created on this
    thread. On 3.14 its node must be the tail of this thread's task list at
    ``Task.__basicsize__ - sizeof(node)``; anything else (another version, a
    layout these headers do not describe) gives None.
    """
    cdef Py_ssize_t off = ps_tasks_probe(probe)
    return None if off < 0 else off


def start(double hz, str mode, int max_depth, Py_ssize_t max_samples,
          uint32_t max_frames, uint32_t max_nodes, object thread_registry,
          object asyncio_config=None):
    """Start the timer thread. Arguments are validated by the caller."""
    cdef int rc
    cdef int cmode = MODES[mode]
    rc = ps_prepare(hz, cmode, max_depth, <size_t>max_samples,
                    max_frames, max_nodes, thread_registry)
    if rc == PS_ERR_RUNNING:
        raise AlreadyRunning("the sampler is already running")
    if rc == PS_ERR_FINALIZING:
        raise RuntimeError("the interpreter is shutting down")
    if rc == PS_ERR_MEMORY:
        raise MemoryError("cannot allocate the sampler's tables")
    if rc != PS_OK:
        raise RuntimeError("cannot prepare the sampler")
    if ps_tasks_prepare(asyncio_config) != 0:
        ps_end_stop()
        ps_reset()
        raise ValueError("bad asyncio configuration")
    ps_choose_mechanism(&ps_S)
    with nogil:
        rc = ps_start_timer()
    if rc != PS_OK:
        ps_end_stop()
        ps_reset()
        raise RuntimeError("cannot start the sampler's timer thread")
    ps_mark_running()


def is_running():
    """True while a session runs."""
    return ps_atomic_load(&ps_S.state) != PS_IDLE


def stop(bint discard=False):
    """End the session and return its raw tables (see _sampler.pyi), or
    None with ``discard``."""
    if ps_begin_stop() != PS_OK:
        raise NotRunning("the sampler is not running")
    with nogil:
        ps_join_timer()
    ps_end_stop()
    # The state stays STOPPING until ps_reset(): copying the tables runs
    # Python code (thread names, a collection's finalizers), where a
    # signal handler may call start(), which must be refused rather than
    # free the tables being read here.
    try:
        return None if discard else _raw_tables()
    finally:
        ps_reset()


def sample_count():
    """Sample rows recorded so far in the running session (0 when idle).

    For progress display only: on the reader path the timer thread appends
    rows without the GIL, so this is a recent value, not a snapshot.
    """
    if ps_atomic_load(&ps_S.state) == PS_IDLE:
        return 0
    return ps_S.samples.count


def close():
    """Refuse every later start(): the interpreter is shutting down, and no
    timer thread may outlive it (called from pysampler's atexit hook)."""
    ps_close()


ps_open()  # a new interpreter (embedding: Py_Initialize again) may start


def after_fork_child():
    """Forget the session in a forked child (no timer thread exists there)."""
    ps_after_fork_child()


def monotonic_ns():
    """The clock the sampler stamps samples with."""
    return ps_monotonic_ns()


def eval_breaker_set():
    """True while this thread's eval breaker asks for work (tests check it
    is clear once stop() has returned)."""
    return ps_eval_breaker_set() != 0


cdef array.array _copy_int32(const void *src, size_t n):
    cdef array.array arr = array.clone(_INT32, n, False)
    if n:
        memcpy(arr.data.as_voidptr, src, n * sizeof(int32_t))
    return arr


cdef array.array _copy_int64(const void *src, size_t n):
    cdef array.array arr = array.clone(_INT64, n, False)
    if n:
        memcpy(arr.data.as_voidptr, src, n * sizeof(int64_t))
    return arr


cdef object _raw_tables():
    cdef ps_sampler *s = &ps_S
    cdef uint32_t i
    cdef PyObject *code
    cdef int offset
    cdef int freed
    cdef ps_thread_info *info
    frames = []
    for i in range(s.frames.count):
        code = ps_frame_object(i, &freed)
        offset = <int><int64_t>s.frames.key_b[i]
        if freed:
            frames.append((PS_FREED_CODE_NAME.decode(), 0))
        elif offset == PS_FRAME_OTHER and code == NULL:
            frames.append((OTHER_CPU_FRAME, 0))
        elif offset == PS_FRAME_TASK:
            frames.append(("Task: " + str(<object>code), 0))
        elif offset == PS_FRAME_AWAIT:
            waited = <object>code
            frames.append(("(ready to run)" if waited is None
                           else f"(awaiting {waited.__name__})", 0))
        elif offset == PS_FRAME_AWAIT_TASK:
            awaited = <object>code  # the awaited task's coroutine's code
            name = getattr(awaited, "co_qualname", None) or awaited.co_name
            frames.append((f"(awaiting Task: {name})", 0))
        elif code == NULL:
            frames.append((None, 0))  # the synthetic "truncated" frame
        else:
            frames.append((<object>code, ps_code_line(code, offset)))

    cdef array.array parent = array.clone(_INT32, s.nodes.count, False)
    cdef array.array frame = array.clone(_INT32, s.nodes.count, False)
    for i in range(s.nodes.count):
        parent.data.as_ints[i] = <int32_t>(<int64_t>s.nodes.key_a[i] - 1)
        frame.data.as_ints[i] = <int32_t>s.nodes.key_b[i]

    threads = []
    for i in range(ps_chunked_count(&s.tinfo)):
        info = ps_thread_at(s, i)
        obj = <object>s.tobj[i] if i < s.tnamed and s.tobj[i] != NULL else None
        name = (TASKS_THREAD_NAME if info.key == PS_TASKS_THREAD_KEY
                else OTHER_CPU_THREAD_NAME if info.key == PS_OTHER_THREAD_KEY else None)
        native = info.native
        if obj is not None:
            try:
                name = str(obj.name)
                if native == 0:
                    # before 3.11 the thread state has no native id;
                    # threading.Thread knows it
                    native = int(getattr(obj, "native_id", None) or 0)
            except Exception:
                name = None
        threads.append((info.ident, native, name))

    n = s.samples.count
    return {
        "mode": "cpu" if s.mode == PS_MODE_CPU else "wall",
        "frames": frames,
        "node_parent": parent,
        "node_frame": frame,
        "stack": _copy_int32(s.samples.stack, n),
        "thread": _copy_int32(s.samples.thread, n),
        "time_ns": _copy_int64(s.samples.time_ns, n),
        "cpu_ns": _copy_int64(s.samples.cpu_ns, n),
        "wall_ns": _copy_int64(s.samples.wall_ns, n),
        "count": _copy_int32(s.samples.nsamples, n),
        "threads": threads,
        "start_ns": s.start_ns,
        "stop_ns": s.stop_ns,
        "max_depth": s.max_depth,
        "stats": {
            "ticks": s.ticks,
            "missed_ticks": s.missed_ticks,
            "served_pending": s.served_pending,
            "served_fallback": s.served_fallback,
            "served_reader": s.served_reader,
            "busy_ticks": s.busy_ticks,
            "holder_left": s.holder_left,
            "safe_reads": s.safe_reads,
            "timer_moves": s.place.moves,
            "pins": s.pins,
            "dropped_samples": s.dropped_samples,
            "truncated_stacks": s.truncated_stacks,
            "sampling_ns": s.sampling_ns,
            "sampler_cpu_ns": max(0, s.timer_cpu_ns) + max(0, s.fallback_cpu_ns),
            "task_samples": ps_T.task_samples,
            "dropped_task_samples": ps_T.dropped,
        },
        "asyncio": bool(ps_T.on),
        "reader": s.mech == PS_MECH_READER,
    }


# ----------------------------------------------------------------------
# Heap profiling: an allocator wrapper that samples allocations by bytes
# (src/_sampler/heap.h). Independent of the CPU sampler above: both may run
# at once, each with its own tables.
# ----------------------------------------------------------------------
cdef extern from "_sampler/heap.h" nogil:
    ctypedef struct ps_heap:
        int enabled
        int busy
        double rate
        int max_depth
        uint64_t ordinal
        uint64_t dropped
        uint64_t truncated
        uint64_t freed
        int64_t start_ns

    ctypedef struct ps_heap_copy:
        uint32_t nframes, nnodes, nallocs, nlive
        uint64_t *frame_code
        uint64_t *frame_key
        uint64_t *node_parent
        uint64_t *node_frame
        uint64_t *alloc_node
        uint64_t *alloc_size
        uint64_t *alloc_count
        uint32_t *live_node
        uint64_t *live_size
        uint64_t *live_ordinal

    ps_heap ps_H
    int PS_HEAP_OK, PS_HEAP_ERR_RUNNING, PS_HEAP_ERR_NOT_RUNNING, PS_HEAP_ERR_MEMORY
    int PS_HEAP_NATIVE_CODE
    int ps_heap_start(double rate, int max_depth, uint32_t max_frames, uint32_t max_nodes,
                      uint32_t max_allocs, uint32_t max_live) with gil
    int ps_heap_stop() with gil
    void ps_heap_reset() with gil
    int ps_heap_hooked()
    void ps_heap_after_fork_child() with gil
    int ps_heap_copy_tables(ps_heap_copy *c) with gil
    void ps_heap_copy_free(ps_heap_copy *c) with gil


def heap_start(double sample_bytes, int max_depth, uint32_t max_frames, uint32_t max_nodes,
               uint32_t max_allocs, uint32_t max_live):
    """Wrap the MEM and OBJ allocators and start sampling. Arguments are
    validated by the caller."""
    cdef int rc = ps_heap_start(sample_bytes, max_depth, max_frames, max_nodes,
                                max_allocs, max_live)
    if rc == PS_HEAP_ERR_RUNNING:
        raise AlreadyRunning("heap profiling is already running")
    if rc == PS_HEAP_ERR_MEMORY:
        raise MemoryError("cannot allocate the heap profiler's tables")


def heap_is_running():
    """True while a heap profiling session runs."""
    return ps_H.enabled != 0


def heap_hooked():
    """True while our allocator wrapper is installed."""
    return ps_heap_hooked() != 0


def heap_snapshot():
    """The heap session's tables now (see _sampler.pyi); it keeps running."""
    if not ps_H.enabled:
        raise NotRunning("heap profiling is not running")
    return _heap_tables()


def heap_stop():
    """End the heap session, restore the allocators, return the tables."""
    if ps_heap_stop() != PS_HEAP_OK:
        raise NotRunning("heap profiling is not running")
    try:
        return _heap_tables()
    finally:
        ps_heap_reset()


def heap_after_fork_child():
    """In a forked child: unhook and forget the parent's heap session."""
    ps_heap_after_fork_child()


cdef object _heap_tables():
    cdef ps_heap_copy c
    cdef uint32_t i
    cdef int was_busy = ps_H.busy
    cdef PyObject *code
    cdef int key
    cdef array.array parent, frame, alloc_node, live_node
    # our own allocations while we copy and build are not the program's
    ps_H.busy = 1
    try:
        if ps_heap_copy_tables(&c) != 0:
            raise MemoryError("cannot copy the heap profiler's tables")
        try:
            frames = []
            for i in range(c.nframes):
                code = <PyObject *><size_t>c.frame_code[i]
                key = <int><int64_t>c.frame_key[i]
                if code == NULL:
                    # synthetic frames: "truncated" or "no Python frame"
                    frames.append((None, -1 if key == PS_HEAP_NATIVE_CODE else 0))
                else:
                    frames.append((<object>code, ps_code_line(code, key)))
            parent = array.clone(_INT32, c.nnodes, False)
            frame = array.clone(_INT32, c.nnodes, False)
            for i in range(c.nnodes):
                parent.data.as_ints[i] = <int32_t>(<int64_t>c.node_parent[i] - 1)
                frame.data.as_ints[i] = <int32_t>c.node_frame[i]
            alloc_node = array.clone(_INT32, c.nallocs, False)
            for i in range(c.nallocs):
                alloc_node.data.as_ints[i] = <int32_t>c.alloc_node[i]
            live_node = array.clone(_INT32, c.nlive, False)
            for i in range(c.nlive):
                live_node.data.as_ints[i] = <int32_t>c.live_node[i]
            # sizes, counts and ordinals are far below 2**63: the uint64
            # columns copy as int64 unchanged
            raw = {
                "frames": frames,
                "node_parent": parent,
                "node_frame": frame,
                "alloc_node": alloc_node,
                "alloc_size": _copy_int64(c.alloc_size, c.nallocs),
                "alloc_count": _copy_int64(c.alloc_count, c.nallocs),
                "live_node": live_node,
                "live_size": _copy_int64(c.live_size, c.nlive),
                "live_ordinal": _copy_int64(c.live_ordinal, c.nlive),
                "sample_bytes": ps_H.rate,
                "max_depth": ps_H.max_depth,
                "start_ns": ps_H.start_ns,
                "now_ns": ps_monotonic_ns(),
                "stats": {
                    "sampled": ps_H.ordinal,
                    "dropped_samples": ps_H.dropped,
                    "truncated_stacks": ps_H.truncated,
                    "frees_matched": ps_H.freed,
                },
            }
        finally:
            ps_heap_copy_free(&c)
    finally:
        ps_H.busy = was_busy
    return raw
