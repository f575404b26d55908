/*
 * pyframes.h - the CPython-version-specific part of the sampler, fenced by
 * PY_VERSION_HEX, each block saying what changed in that version:
 *
 *   - walking a thread's Python frames without allocating,
 *   - the (code object, instruction byte offset) of a frame,
 *   - waking the main thread for a pending call queued from a native thread,
 *   - thread identities and "is the interpreter finalizing".
 *
 * Everything here is called with the GIL held, except ps_wake_main_thread
 * and ps_finalizing, which the timer thread calls without it.
 */
#ifndef PYSAMPLER_PYFRAMES_H
#define PYSAMPLER_PYFRAMES_H

#include <Python.h>
#include <frameobject.h>

#ifdef Py_GIL_DISABLED
/* Pending calls and "all other threads are parked while we hold the GIL"
 * are what make the walk safe; the free-threaded build has neither. */
#  error "pysampler does not support the free-threaded (no-GIL) build of CPython"
#endif

#if PY_VERSION_HEX < 0x03090000
#  error "pysampler needs CPython 3.9 or newer"
#endif

/* Every fence below was checked against CPython 3.9 to 3.15. A newer
 * version would compile into the newest branch of each one unchecked and
 * read fields that may have moved (3.11, 3.13 and 3.14 each moved frame
 * fields), which crashes the program rather than failing a build. So it
 * is refused; defining PYSAMPLER_ALLOW_UNTESTED_PYTHON (setup.py does,
 * when that variable is 1 in the environment) builds anyway, for trying a
 * new version out. pysampler/_support.py holds the same bound at import.
 * Raise it only with each fence here and in tasks.h checked. */
#if PY_VERSION_HEX >= 0x03100000 && !defined(PYSAMPLER_ALLOW_UNTESTED_PYTHON)
#  error "pysampler supports CPython 3.9 to 3.15: its native core reads internals of each version, and this CPython is newer than any it was checked against. Set PYSAMPLER_ALLOW_UNTESTED_PYTHON=1 to build anyway (for testing)."
#endif

/* Internal headers: included only where the public API lacks what we need
 * (every version needs one of the two below), and only inside these fences. */
#ifndef Py_BUILD_CORE
#  define Py_BUILD_CORE 1
#  define PYSAMPLER_DEFINED_BUILD_CORE 1
#endif

#if PY_VERSION_HEX < 0x030D0000
/* 3.9-3.12: the eval breaker lives in interp->ceval (pycore_interp.h).
 * The public objimpl.h and internal pycore_gc.h both define this macro
 * (identically, up to 3.11); drop the public one to keep the build quiet. */
#  undef _PyGC_FINALIZED
#  include "internal/pycore_interp.h"
#endif
#if PY_VERSION_HEX >= 0x030E0000
/* 3.14 (and 3.15): struct _PyInterpreterFrame moved to
 * pycore_interpframe_structs.h, its helpers to pycore_interpframe.h. */
#  include "internal/pycore_interpframe.h"
#elif PY_VERSION_HEX >= 0x030B0000
/* 3.11-3.13: frames are _PyInterpreterFrame structs (pycore_frame.h);
 * PyFrameObjects exist only when someone asks for one. */
#  include "internal/pycore_frame.h"
#endif

#ifdef PYSAMPLER_DEFINED_BUILD_CORE
#  undef Py_BUILD_CORE
#  undef PYSAMPLER_DEFINED_BUILD_CORE
#endif

/* ------------------------------------------------------------------ */
/* Frames                                                             */
/* ------------------------------------------------------------------ */
#if PY_VERSION_HEX >= 0x030B0000
typedef struct _PyInterpreterFrame ps_frame;
#else
typedef PyFrameObject ps_frame;
#endif

/* The code object a frame runs, borrowed; NULL for frames that are not
 * running Python code (shims the interpreter pushes for C calls). */
static inline PyCodeObject *ps_frame_code(ps_frame *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14, 3.15: f_executable is a tagged _PyStackRef */
    PyObject *ex = PyStackRef_AsPyObjectBorrow(f->f_executable);
    return (ex != NULL && PyCode_Check(ex)) ? (PyCodeObject *)ex : NULL;
#elif PY_VERSION_HEX >= 0x030D0000
    /* 3.13: f_code became f_executable, which may be a non-code object */
    PyObject *ex = f->f_executable;
    return (ex != NULL && PyCode_Check(ex)) ? (PyCodeObject *)ex : NULL;
#else
    return f->f_code;
#endif
}

#if PY_VERSION_HEX >= 0x030B0000
/* A frame is skipped when it is not (yet) a Python frame: shim frames
 * owned by the C stack (3.12+), or frames that are part way through
 * their set-up (before the first RESUME), whose instruction pointer is
 * not meaningful. */
static inline int ps_frame_skip(ps_frame *f)
{
#  if PY_VERSION_HEX >= 0x030E0000
    /* 3.14 added FRAME_OWNED_BY_INTERPRETER (3) *below*
     * FRAME_OWNED_BY_CSTACK (4), and 3.15 dropped FRAME_OWNED_BY_CSTACK:
     * on both, every owner from FRAME_OWNED_BY_INTERPRETER up is an
     * entry/exit shim with no user code (CPython's own
     * _PyFrame_IsIncomplete tests the same) */
    if (f->owner >= FRAME_OWNED_BY_INTERPRETER) {
        return 1;
    }
#  elif PY_VERSION_HEX >= 0x030C0000
    /* 3.12-3.13: FRAME_OWNED_BY_CSTACK, the highest owner value, marks
     * the entry/exit shims */
    if (f->owner >= FRAME_OWNED_BY_CSTACK) {
        return 1;
    }
#  endif
    if (ps_frame_code(f) == NULL) {
        return 1;
    }
    return _PyFrame_IsIncomplete(f);
}

static inline ps_frame *ps_frame_settle(ps_frame *f)
{
    while (f != NULL && ps_frame_skip(f)) {
        f = f->previous;
    }
    return f;
}
#endif

/* The innermost Python frame of a thread, or NULL. */
static inline ps_frame *ps_thread_top_frame(PyThreadState *t)
{
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13: the frame pointer moved from the _PyCFrame to the tstate */
    return ps_frame_settle(t->current_frame);
#elif PY_VERSION_HEX >= 0x030B0000
    /* 3.11-3.12: tstate->cframe->current_frame */
    return t->cframe == NULL ? NULL : ps_frame_settle(t->cframe->current_frame);
#else
    /* 3.9-3.10: a linked list of PyFrameObjects */
    return t->frame;
#endif
}

static inline ps_frame *ps_frame_back(ps_frame *f)
{
#if PY_VERSION_HEX >= 0x030B0000
    return ps_frame_settle(f->previous);
#else
    return f->f_back;
#endif
}

/* Byte offset of the instruction the frame is executing, the unit
 * PyCode_Addr2Line takes. */
static inline int ps_frame_lasti_bytes(ps_frame *f)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: index of the instruction, in code units */
    return _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
#elif PY_VERSION_HEX >= 0x030A0000
    /* 3.10: f_lasti counts code units, not bytes */
    return f->f_lasti * (int)sizeof(_Py_CODEUNIT);
#else
    /* 3.9: f_lasti is already a byte offset */
    return f->f_lasti;
#endif
}

/* ------------------------------------------------------------------ */
/* Threads                                                            */
/* ------------------------------------------------------------------ */
static inline unsigned long ps_thread_ident(PyThreadState *t)
{
    return t->thread_id;
}

/* A thread state can sit in the interpreter's list before its thread runs:
 * threading creates it in the parent thread (3.12+ _PyThreadState_New,
 * 3.9-3.11 _PyThreadState_Prealloc) and the new thread binds it. Until
 * then its ident is 0, and asking the OS about thread 0 (for instance
 * pthread_getcpuclockid on a null pthread_t) crashes. Such states are
 * left alone; they have no frames yet either. */
static inline int ps_thread_bound(PyThreadState *t)
{
    return t->thread_id != 0;
}

static inline unsigned long ps_thread_native_id(PyThreadState *t)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11 added native_thread_id (the kernel's id) to the tstate */
    return t->native_thread_id;
#else
    (void)t;
    return 0;
#endif
}

/* ------------------------------------------------------------------ */
/* Waking the main thread for our pending call                        */
/* ------------------------------------------------------------------ */
/*
 * Py_AddPendingCall queues the callback for the main thread, but on
 * 3.9-3.11 it recomputes the eval breaker with the *calling* thread's
 * identity: called from our timer thread, which is not the main thread,
 * the breaker is left unset and the main thread never notices the queued
 * call while it runs Python code (measured: zero calls served per second).
 * Setting the main interpreter's eval breaker after queuing makes the main
 * thread check its pending calls at its next safe point, and the interpreter
 * recomputes the breaker once it has run them.
 *
 * 3.12 keeps main-thread-only calls in a runtime-wide queue and has the
 * same flaw in COMPUTE_EVAL_BREAKER (it tests _Py_IsMainThread() on the
 * caller), so it needs the same nudge on interp->ceval.eval_breaker.
 *
 * 3.13 moved the eval breaker into each thread state and
 * _PyEval_AddPendingCall signals the main thread's own tstate, so the
 * public call alone suffices.
 */
static inline void ps_wake_main_thread(PyInterpreterState *interp)
{
#if PY_VERSION_HEX >= 0x030D0000
    (void)interp;
#else
    _Py_atomic_store_relaxed(&interp->ceval.eval_breaker, 1);
#endif
}

/* Whether the calling thread's eval breaker asks for work, GIL held. For
 * tests: after stop() it must be clear, or every later safe point of the
 * program takes the slow path (the leftover wake-up ps_end_stop guards
 * against). */
static inline int ps_eval_breaker_set(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13: per-thread breaker; its low 8 bits are the event flags
     * (_PY_EVAL_EVENTS_MASK), the rest a version counter */
    return (PyThreadState_Get()->eval_breaker & 0xFF) != 0;
#else
    /* 3.9-3.12: one breaker per interpreter (see ps_wake_main_thread) */
    return _Py_atomic_load_relaxed(&PyInterpreterState_Get()->ceval.eval_breaker) != 0;
#endif
}

/* True once interpreter finalization has begun: a native thread must not
 * try to take the GIL then (3.9-3.13 exit the thread, 3.14 hang it). */
static inline int ps_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

#endif /* PYSAMPLER_PYFRAMES_H */
