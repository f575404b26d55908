# cython: language_level=3, boundscheck=False, wraparound=False
"""Native core of pysampler: primitives only.

start() launches the native timer thread, stop() ends the session and hands
back the raw tables. Everything else (merging frames, formats, aggregation)
is Python. The C headers beside this file (src/_sampler/*.h) hold the
sampler itself; see core.h for how a sample is taken.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.object cimport PyObject

import numpy as np


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
        size_t count

    ctypedef struct ps_sampler:
        long state
        int mode
        int max_depth
        int64_t period_ns
        ps_intern frames
        ps_intern nodes
        ps_intern threads
        PyObject **thread_obj
        ps_samples samples
        int64_t start_ns
        int64_t stop_ns
        uint64_t ticks
        uint64_t missed_ticks
        uint64_t served_pending
        uint64_t served_fallback
        uint64_t dropped_samples
        uint64_t truncated_stacks

    ps_sampler ps_S
    int PS_MODE_CPU, PS_MODE_WALL
    int PS_IDLE, PS_RUNNING
    int PS_OK, PS_ERR_RUNNING, PS_ERR_NOT_RUNNING, PS_ERR_MEMORY
    int PS_ERR_THREAD, PS_ERR_FINALIZING

    long ps_atomic_load(long *p)
    int ps_prepare(double hz, int mode, int max_depth, size_t max_samples,
                   uint32_t max_frames, uint32_t max_nodes, object registry) with gil
    int ps_start_timer()
    void ps_mark_running()
    int ps_begin_stop()
    void ps_join_timer()
    void ps_end_stop()
    void ps_reset()
    void ps_after_fork_child()
    int64_t ps_monotonic_ns()
    int ps_code_line(PyObject *code, int offset)


class AlreadyRunning(RuntimeError):
    """The native sampler already runs a session."""


class NotRunning(RuntimeError):
    """The native sampler runs no session."""


MODES = {"cpu": 0, "wall": 1}


def start(double hz, str mode, int max_depth, Py_ssize_t max_samples,
          uint32_t max_frames, uint32_t max_nodes, object thread_registry):
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


def stop():
    """End the session and return its raw tables (see _sampler.pyi)."""
    if ps_begin_stop() != PS_OK:
        raise NotRunning("the sampler is not running")
    with nogil:
        ps_join_timer()
    ps_end_stop()
    try:
        return _raw_tables()
    finally:
        ps_reset()


def after_fork_child():
    """Forget the session in a forked child (no timer thread exists there)."""
    ps_after_fork_child()


def monotonic_ns():
    """The clock the sampler stamps samples with."""
    return ps_monotonic_ns()


cdef object _copy_int32(int32_t *src, size_t n):
    arr = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] view = arr
    if n:
        memcpy(&view[0], src, n * sizeof(int32_t))
    return arr


cdef object _copy_int64(int64_t *src, size_t n):
    arr = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] view = arr
    if n:
        memcpy(&view[0], src, n * sizeof(int64_t))
    return arr


cdef object _raw_tables():
    cdef ps_sampler *s = &ps_S
    cdef uint32_t i
    cdef PyObject *code
    cdef int offset
    frames = []
    for i in range(s.frames.count):
        code = <PyObject *><size_t>s.frames.key_a[i]
        offset = <int><int64_t>s.frames.key_b[i]
        if code == NULL:
            frames.append((None, 0))  # the synthetic "truncated" frame
        else:
            frames.append((<object>code, ps_code_line(code, offset)))

    parent = np.empty(s.nodes.count, dtype=np.int32)
    frame = np.empty(s.nodes.count, dtype=np.int32)
    cdef int32_t[::1] pv = parent
    cdef int32_t[::1] fv = frame
    for i in range(s.nodes.count):
        pv[i] = <int32_t>(<int64_t>s.nodes.key_a[i] - 1)
        fv[i] = <int32_t>s.nodes.key_b[i]

    threads = []
    for i in range(s.threads.count):
        obj = <object>s.thread_obj[i] if s.thread_obj[i] != NULL else None
        name = None
        native = s.threads.key_b[i]
        if obj is not None:
            try:
                name = str(obj.name)
            except Exception:
                name = None
            if native == 0:
                # before 3.11 the thread state has no kernel thread id;
                # threading records it when the thread starts
                try:
                    native = int(obj.native_id or 0)
                except Exception:
                    native = 0
        threads.append((s.threads.key_a[i], native, name))

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
        "threads": threads,
        "start_ns": s.start_ns,
        "stop_ns": s.stop_ns,
        "max_depth": s.max_depth,
        "stats": {
            "ticks": s.ticks,
            "missed_ticks": s.missed_ticks,
            "served_pending": s.served_pending,
            "served_fallback": s.served_fallback,
            "dropped_samples": s.dropped_samples,
            "truncated_stacks": s.truncated_stacks,
        },
    }
