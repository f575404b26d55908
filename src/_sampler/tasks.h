/*
 * tasks.h - asyncio task stacks for wall-mode profiles (start(asyncio=True)).
 *
 * A thread-based wall profile of an event loop shows only select(): the
 * time a request handler spends awaiting a query is invisible. Here, once
 * per sampling event, every asyncio task that is alive and *not* running
 * gets a sample of its own, weighted by the interval like a thread's wall
 * sample:
 *
 *     Task: <name>  ->  handler  ->  repo.fetch  ->  ...  ->  (awaiting Future)
 *
 * The running task is left out: its coroutines are on its thread's stack,
 * which the thread sample already records (no double count).
 *
 * Why in C, at sample time
 * ------------------------
 * Task discovery must not run code that could change the program: no call
 * into the user's loop, no monkeypatching of asyncio, no Python-level
 * iteration (WeakSet.__iter__ is Python code that defers the registry's
 * weakref removals while it runs), and no allocation of GC-tracked objects
 * (on 3.9-3.11 that can start a collection, which runs finalizers). A
 * Python collector called from the pending call would do all of those. So
 * the walk below only:
 *   - reads asyncio's own task registry, a set of weak references
 *     (`asyncio.tasks._all_tasks.data` before 3.12, `_scheduled_tasks.data`
 *     on 3.12-3.13), with _PySet_NextEntry: borrowed entries, no iterator;
 *   - reads each task's `_coro`, `_fut_waiter` and `get_name()` through the
 *     descriptors of the C `_asyncio.Task` captured at start(), so that even
 *     a subclass overriding them in Python runs none of its code; tasks of
 *     the pure-Python Task class are read with PyObject_GenericGetAttr (no
 *     `__getattr__`);
 *   - follows `cr_await` / `gi_yieldfrom` only on exact coroutine and
 *     generator objects (C getters), and reads each one's code object and
 *     instruction offset from its embedded frame (pyframes-style fences
 *     below), so no frame object is ever materialised.
 * The only allocation is the first `get_name()` of a task on 3.12+, which
 * formats the lazily kept "Task-N" name once (a str, not GC-tracked).
 *
 * Bounded: at most `max_tasks` tasks are recorded per sampling event
 * (measured: about 1.7 us per task three coroutines deep, so 256 tasks hold
 * the GIL for ~0.45 ms per event). The walk resumes where the previous
 * event stopped, so with more tasks than the cap every task is still
 * visited in turn, a uniform subsample; registry entries not visited in an
 * event are counted as dropped task samples. Task rows may fill at most
 * three quarters of the sample table, so that thread samples never starve.
 *
 * Zero cost when off: core.h calls ps_sample_tasks only when `on` is set
 * (one flag test per sampling event); nothing else exists.
 *
 * Python 3.14 keeps native tasks in per-thread C lists, out of reach of a
 * public read; start() refuses asyncio=True there (see docs/asyncio.md).
 */
#ifndef PYSAMPLER_TASKS_H
#define PYSAMPLER_TASKS_H

#include <Python.h>

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13: _PySet_NextEntry moved to the internal C API (still exported) */
#  ifndef Py_BUILD_CORE
#    define Py_BUILD_CORE 1
#    define PYSAMPLER_TASKS_BUILD_CORE 1
#  endif
#  include "internal/pycore_setobject.h"
#  ifdef PYSAMPLER_TASKS_BUILD_CORE
#    undef Py_BUILD_CORE
#    undef PYSAMPLER_TASKS_BUILD_CORE
#  endif
#endif

/* Keys of synthetic frames in the frame table: (object, tag). Code frames
 * use byte offsets >= -2, the truncation marker is (NULL, 0). */
#define PS_FRAME_TASK (-1000)    /* object: the task's name (str) */
#define PS_FRAME_AWAIT (-1001)   /* object: type of the awaited future, or None */

#define PS_TASKS_MAX_REGISTRIES 4
#define PS_TASKS_MAX_CURRENT 64

typedef struct {
    int on;                         /* wall mode and asyncio=True */
    uint32_t max_tasks;             /* tasks recorded per sampling event */
    PyObject *registries[PS_TASKS_MAX_REGISTRIES]; /* sets of weakrefs */
    int n_registries;
    PyObject *current;              /* dict: loop -> its running task */
    PyTypeObject *c_task;           /* _asyncio.Task, or NULL */
    PyObject *d_coro;               /* _asyncio.Task._coro (getset) */
    PyObject *d_fut_waiter;         /* _asyncio.Task._fut_waiter (getset) */
    PyObject *m_get_name;           /* _asyncio.Task.get_name (method) */
    PyObject *s_coro, *s_fut_waiter, *s_name, *s_cr_await, *s_gi_yieldfrom;
    uint32_t thread_index;          /* row of the "asyncio tasks" pseudo-thread */
    int next_registry;              /* where the previous event stopped */
    Py_ssize_t next_pos;
    uint64_t task_samples;          /* task samples recorded */
    uint64_t dropped;               /* registry entries not visited (cap) */
} ps_tasks;

static ps_tasks ps_T;

/* ------------------------------------------------------------------ */
/* Coroutine / generator frames, version-fenced                       */
/* ------------------------------------------------------------------ */
/* The code object and instruction byte offset a suspended coroutine or
 * generator will resume at. Returns 0 when it has finished (no frame). */
static int ps_gen_position(PyObject *gen, PyCodeObject **code, int *offset)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11-3.13: the frame is embedded in the generator (gi_iframe); its
     * state says whether it has started, is suspended or is done */
    PyGenObject *g = (PyGenObject *)gen;
    ps_frame *f = (ps_frame *)g->gi_iframe;
    if (g->gi_frame_state >= FRAME_COMPLETED) {
        return 0;
    }
    *code = ps_frame_code(f);
    if (*code == NULL) {
        return 0;
    }
    /* not started yet: its instruction pointer precedes the code */
    *offset = g->gi_frame_state == FRAME_CREATED ? 0 : ps_frame_lasti_bytes(f);
    return 1;
#else
    /* 3.9-3.10: a PyFrameObject, NULL once the generator has finished;
     * f_lasti is -1 before the first resume */
    PyFrameObject *f = ((PyGenObject *)gen)->gi_frame;
    int lasti;
    if (f == NULL) {
        return 0;
    }
    *code = f->f_code;
    lasti = ps_frame_lasti_bytes(f);
    *offset = lasti < 0 ? 0 : lasti;
    return 1;
#endif
}

/* ------------------------------------------------------------------ */
/* Reading a task without running its code                            */
/* ------------------------------------------------------------------ */
/* A task attribute as a new reference, or NULL (error cleared). C tasks
 * (and their subclasses) through the captured C descriptor; others with
 * the generic lookup, which skips __getattr__/__getattribute__. */
static PyObject *ps_task_attr(ps_tasks *T, PyObject *task, PyObject *descr, PyObject *name)
{
    PyObject *v;
    if (T->c_task != NULL && PyObject_TypeCheck(task, T->c_task)) {
        v = Py_TYPE(descr)->tp_descr_get(descr, task, (PyObject *)Py_TYPE(task));
    } else {
        v = PyObject_GenericGetAttr(task, name);
    }
    if (v == NULL) {
        PyErr_Clear();
    }
    return v;
}

static PyObject *ps_task_name(ps_tasks *T, PyObject *task)
{
    PyObject *v;
    if (T->c_task != NULL && PyObject_TypeCheck(task, T->c_task)) {
        /* the C method itself, not whatever a subclass put in its place */
        v = PyObject_CallOneArg(T->m_get_name, task);
    } else {
        v = PyObject_GenericGetAttr(task, T->s_name);
    }
    if (v == NULL) {
        PyErr_Clear();
    } else if (!PyUnicode_Check(v)) {
        Py_CLEAR(v);
    }
    return v;
}

/* Borrowed-or-new referent of a registry entry: a new reference, or NULL. */
static PyObject *ps_weak_target(PyObject *ref)
{
    PyObject *obj;
    if (!PyWeakref_Check(ref)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13 deprecated the borrowing PyWeakref_GetObject */
    if (PyWeakref_GetRef(ref, &obj) != 1) {
        PyErr_Clear();
        return NULL;
    }
    return obj;
#else
    obj = PyWeakref_GET_OBJECT(ref);
    if (obj == NULL || obj == Py_None) {
        return NULL;
    }
    Py_INCREF(obj);
    return obj;
#endif
}

/* Row of the "asyncio tasks" pseudo-thread (ident 0, which no real thread
 * has), registered on first use; UINT32_MAX when the table is full. */
static uint32_t ps_tasks_thread(ps_sampler *s, ps_tasks *T)
{
    int added;
    uint32_t ti;
    if (T->thread_index != UINT32_MAX) {
        return T->thread_index;
    }
    if (ps_threads_reserve(s, s->threads.count + 1) != 0) {
        return UINT32_MAX;
    }
    ti = ps_intern_get(&s->threads, 0, 0, &added);
    if (ti == PS_INTERN_FULL) {
        return UINT32_MAX;
    }
    if (added) {
        s->thread_cpu[ti] = 0;
        s->thread_obj[ti] = NULL;
        s->thread_tries[ti] = 0;
    }
    T->thread_index = ti;
    return ti;
}

/* Record one task's stack; returns 1 if a sample was recorded. */
static int ps_sample_task(ps_sampler *s, ps_tasks *T, PyObject *task, int64_t now, int64_t wall)
{
    PyObject *obj, *name, *waiter;
    uint32_t n = 0, fid, node = 0, ti;
    uint64_t parent = 0;
    int added, full = 0, truncated = 0, i;

    /* the coroutine chain, outermost (the task's coroutine) first */
    obj = ps_task_attr(T, task, T->d_coro, T->s_coro);
    n = 1;  /* walk[0] is the task frame, filled below */
    while (obj != NULL && (PyCoro_CheckExact(obj) || PyGen_CheckExact(obj))) {
        PyCodeObject *code;
        int offset;
        PyObject *next;
        if (!ps_gen_position(obj, &code, &offset)) {
            break;  /* finished */
        }
        if (n + 1 >= (uint32_t)s->max_depth) {
            truncated = 1;
            break;
        }
        fid = ps_intern_frame(s, code, offset);
        if (fid == PS_INTERN_FULL) {
            full = 1;
            break;
        }
        s->walk[n++] = fid;
        /* the C getter of an exact coroutine/generator: no user code */
        next = PyObject_GetAttr(obj, PyCoro_CheckExact(obj) ? T->s_cr_await : T->s_gi_yieldfrom);
        if (next == NULL) {
            PyErr_Clear();
        }
        Py_DECREF(obj);
        obj = next;
    }
    Py_XDECREF(obj);
    if (n == 1) {
        return 0;  /* done (not yet collected) or not a coroutine task */
    }
    if (full) {
        s->dropped_samples++;
        return 0;
    }
    if (truncated) {
        s->truncated_stacks++;
    }

    name = ps_task_name(T, task);
    fid = name == NULL ? PS_INTERN_FULL : ps_intern_frame(s, (PyCodeObject *)name, PS_FRAME_TASK);
    Py_XDECREF(name);  /* the frame table holds its own reference */
    if (fid == PS_INTERN_FULL) {
        s->dropped_samples++;
        return 0;
    }
    s->walk[0] = fid;

    /* the leaf: what the task waits for; None = ready, queued to run */
    waiter = ps_task_attr(T, task, T->d_fut_waiter, T->s_fut_waiter);
    fid = ps_intern_frame(s, (PyCodeObject *)(waiter == NULL || waiter == Py_None
                                                  ? Py_None : (PyObject *)Py_TYPE(waiter)),
                          PS_FRAME_AWAIT);
    Py_XDECREF(waiter);
    if (fid == PS_INTERN_FULL) {
        s->dropped_samples++;
        return 0;
    }
    s->walk[n++] = fid;

    ti = ps_tasks_thread(s, T);
    for (i = 0; i < (int)n && !full; i++) {
        node = ps_intern_get(&s->nodes, parent, s->walk[i], &added);
        full = node == PS_INTERN_FULL;
        parent = (uint64_t)node + 1;
    }
    if (full || ti == UINT32_MAX ||
        ps_samples_append(&s->samples, (int32_t)node, (int32_t)ti, now, 0, wall) != 0) {
        s->dropped_samples++;
        return 0;
    }
    T->task_samples++;
    return 1;
}

/* Record every waiting task, up to the cap (GIL held). */
static void ps_sample_tasks(ps_sampler *s, int64_t now, int64_t wall)
{
    ps_tasks *T = &ps_T;
    PyObject *running[PS_TASKS_MAX_CURRENT];
    int n_running = 0, r, wraps = 0;
    Py_ssize_t pos = 0, total = 0, visited = 0;
    uint32_t recorded = 0;
    PyObject *key, *value;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *saved = PyErr_GetRaisedException();
#else
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
#endif

    /* running tasks (one per loop) are on their thread's stack already */
    if (T->current != NULL) {
        while (n_running < PS_TASKS_MAX_CURRENT && PyDict_Next(T->current, &pos, &key, &value)) {
            running[n_running++] = value;
        }
    }
    for (r = 0; r < T->n_registries; r++) {
        total += PySet_GET_SIZE(T->registries[r]);
    }
    if (s->samples.count >= s->samples.limit - s->samples.limit / 4) {
        /* task rows may fill three quarters of the sample table, no more:
         * thread samples, the profile proper, keep the last quarter */
        T->dropped += (uint64_t)total;
        goto done;
    }

    r = T->next_registry % (T->n_registries ? T->n_registries : 1);
    pos = T->next_pos;
    while (T->n_registries > 0 && visited < total) {
        Py_ssize_t before = pos;
        Py_hash_t hash;
        PyObject *task;
        int j, is_running = 0;
        if (!_PySet_NextEntry(T->registries[r], &pos, &key, &hash)) {
            /* end of this set: on to the next, round and round once */
            r = (r + 1) % T->n_registries;
            pos = 0;
            if (++wraps > T->n_registries) {
                break;
            }
            continue;
        }
        if (recorded >= T->max_tasks) {
            pos = before;  /* the next event starts with this entry */
            break;
        }
        visited++;
        task = ps_weak_target(key);
        if (task == NULL) {
            continue;  /* collected: gone, not waiting */
        }
        for (j = 0; j < n_running; j++) {
            is_running |= running[j] == task;
        }
        if (!is_running) {
            recorded += (uint32_t)ps_sample_task(s, T, task, now, wall);
        }
        Py_DECREF(task);
    }
    T->next_registry = r;
    T->next_pos = pos;
    if (visited < total) {
        T->dropped += (uint64_t)(total - visited);
    }

done:
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(saved);
#else
    PyErr_Restore(et, ev, tb);
#endif
}

/* GIL held, at prepare: take what the walk reads. `config` is None (off)
 * or a dict built by pysampler._control; returns 0, or -1 (bad config). */
static int ps_tasks_prepare(PyObject *config)
{
    ps_tasks *T = &ps_T;
    PyObject *regs, *v;
    Py_ssize_t i;
    T->on = 0;
    T->n_registries = 0;
    T->thread_index = UINT32_MAX;
    T->next_registry = 0;
    T->next_pos = 0;
    T->task_samples = T->dropped = 0;
    if (config == NULL || config == Py_None) {
        return 0;
    }
    if (!PyDict_Check(config)) {
        return -1;
    }
    regs = PyDict_GetItemString(config, "registries");
    if (regs == NULL || !PyTuple_Check(regs) || PyTuple_GET_SIZE(regs) > PS_TASKS_MAX_REGISTRIES) {
        return -1;
    }
    for (i = 0; i < PyTuple_GET_SIZE(regs); i++) {
        PyObject *set = PyTuple_GET_ITEM(regs, i);
        if (!PySet_Check(set)) {
            return -1;
        }
        Py_INCREF(set);
        T->registries[T->n_registries++] = set;
    }
    v = PyDict_GetItemString(config, "current");
    if (v != NULL && PyDict_Check(v)) {
        Py_INCREF(v);
        T->current = v;
    }
    v = PyDict_GetItemString(config, "c_task");
    if (v != NULL && PyType_Check(v)) {
        Py_INCREF(v);
        T->c_task = (PyTypeObject *)v;
    }
    T->d_coro = PyDict_GetItemString(config, "d_coro");
    T->d_fut_waiter = PyDict_GetItemString(config, "d_fut_waiter");
    T->m_get_name = PyDict_GetItemString(config, "m_get_name");
    if (T->c_task != NULL &&
        (T->d_coro == NULL || Py_TYPE(T->d_coro)->tp_descr_get == NULL ||
         T->d_fut_waiter == NULL || Py_TYPE(T->d_fut_waiter)->tp_descr_get == NULL ||
         T->m_get_name == NULL || !PyCallable_Check(T->m_get_name))) {
        Py_CLEAR(T->c_task);  /* not the C Task we know: generic reads only */
    }
    if (T->c_task != NULL) {
        Py_INCREF(T->d_coro);
        Py_INCREF(T->d_fut_waiter);
        Py_INCREF(T->m_get_name);
    } else {
        T->d_coro = T->d_fut_waiter = T->m_get_name = NULL;
    }
    v = PyDict_GetItemString(config, "max_tasks");
    T->max_tasks = (v != NULL && PyLong_Check(v)) ? (uint32_t)PyLong_AsUnsignedLong(v) : 256;
    if (PyErr_Occurred()) {
        PyErr_Clear();
        T->max_tasks = 256;
    }
    T->s_coro = PyUnicode_InternFromString("_coro");
    T->s_fut_waiter = PyUnicode_InternFromString("_fut_waiter");
    T->s_name = PyUnicode_InternFromString("_name");
    T->s_cr_await = PyUnicode_InternFromString("cr_await");
    T->s_gi_yieldfrom = PyUnicode_InternFromString("gi_yieldfrom");
    if (!T->s_coro || !T->s_fut_waiter || !T->s_name || !T->s_cr_await || !T->s_gi_yieldfrom) {
        PyErr_Clear();
        return -1;
    }
    T->on = 1;
    return 0;
}

/* GIL held: release what prepare took (session over, or after fork). */
static void ps_tasks_free(void)
{
    ps_tasks *T = &ps_T;
    int i;
    T->on = 0;
    for (i = 0; i < T->n_registries; i++) {
        Py_CLEAR(T->registries[i]);
    }
    T->n_registries = 0;
    Py_CLEAR(T->current);
    Py_CLEAR(T->c_task);
    Py_CLEAR(T->d_coro);
    Py_CLEAR(T->d_fut_waiter);
    Py_CLEAR(T->m_get_name);
    Py_CLEAR(T->s_coro);
    Py_CLEAR(T->s_fut_waiter);
    Py_CLEAR(T->s_name);
    Py_CLEAR(T->s_cr_await);
    Py_CLEAR(T->s_gi_yieldfrom);
}

#endif /* PYSAMPLER_TASKS_H */
