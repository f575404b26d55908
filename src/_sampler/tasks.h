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
 * A task waiting on another task ends in "(awaiting Task: <its coroutine>)"
 * instead; Python groups tasks of asyncio's default names ("Task-12") by
 * their coroutine when it builds the profile (pysampler/_build.py).
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
 * Python 3.14 keeps native tasks (`_asyncio.Task` and its subclasses) in
 * per-thread circular lists instead: `_PyThreadStateImpl.asyncio_tasks_head`,
 * plus `PyInterpreterState.asyncio_tasks_head` for tasks whose thread has
 * exited, each entry a `struct llist_node` embedded in the task. The running
 * task is `_PyThreadStateImpl.asyncio_running_task`. Those lists are what
 * `asyncio.all_tasks()` and the interpreter's out-of-process debug offsets
 * (`_AsyncioDebug`) read. PS_TASKS_LLIST below walks them, GIL held:
 *   - every change to a list (register_task at Task.__init__,
 *     unregister_task when the task finishes or is deallocated, the move to
 *     the interpreter's list when a thread state is cleared) is made by a
 *     thread holding the GIL, in plain C that never releases it mid-change,
 *     so under the GIL each list is whole; the walk itself runs no code
 *     that could release the GIL or change a list;
 *   - an entry may be a task whose refcount already fell to 0: a Task
 *     subclass's dealloc clears its __dict__ (running arbitrary __del__s,
 *     so a sampling event can run) before the base dealloc unlinks it. Its
 *     memory is still valid; like CPython's own all_tasks (_Py_TryIncref),
 *     entries with refcount 0 are skipped, others are increfed while read;
 *   - the node's offset inside the task (the task's C struct is private to
 *     _asynciomodule.c) is `Task.__basicsize__ - sizeof(struct llist_node)`
 *     on GIL builds (the node is the struct's last member) and is checked
 *     once at start() against a real probe task: ps_tasks_probe() must find
 *     exactly that node at the tail of the calling thread's list, which
 *     also checks the thread-state offset our headers give. If either
 *     differs, start() refuses asyncio=True rather than guess.
 * Tasks of other classes (pure-Python tasks) stay in `_scheduled_tasks`,
 * read as before. Free-threaded builds are not supported at all.
 */
#ifndef PYSAMPLER_TASKS_H
#define PYSAMPLER_TASKS_H

#include <Python.h>

/* The fences below were checked against CPython 3.9 to 3.15; a newer one
 * is refused, as in pyframes.h, unless PYSAMPLER_ALLOW_UNTESTED_PYTHON is
 * defined. The 3.14+ branches read task and frame internals. */
#if PY_VERSION_HEX >= 0x03100000 && !defined(PYSAMPLER_ALLOW_UNTESTED_PYTHON)
#  error "pysampler's asyncio task reader was checked against CPython 3.9 to 3.15 only. Set PYSAMPLER_ALLOW_UNTESTED_PYTHON=1 to build anyway (for testing)."
#endif

#if PY_VERSION_HEX >= 0x030E0000
#  ifndef Py_BUILD_CORE
#    define Py_BUILD_CORE 1
#    define PYSAMPLER_LLIST_BUILD_CORE 1
#  endif
/* 3.14+: coroutine frame states (FRAME_CREATED, FRAME_STATE_FINISHED) */
#  include "internal/pycore_frame.h"
#  if PY_VERSION_HEX < 0x030F0000 && !defined(Py_GIL_DISABLED)
/* 3.14: native tasks live in per-thread linked lists (see above) */
#    define PS_TASKS_LLIST 1
#    include "internal/pycore_llist.h"
#    include "internal/pycore_tstate.h"
#    include "internal/pycore_interp_structs.h"
#  endif
#  ifdef PYSAMPLER_LLIST_BUILD_CORE
#    undef Py_BUILD_CORE
#    undef PYSAMPLER_LLIST_BUILD_CORE
#  endif
#endif

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
#define PS_FRAME_AWAIT_TASK (-1002) /* object: code of the awaited task's coroutine */

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
    PyObject *s_cr_code, *s_gi_code;
    uint32_t thread_index;          /* row of the "asyncio tasks" pseudo-thread */
    int next_registry;              /* where the previous event stopped */
    Py_ssize_t next_pos;
    Py_ssize_t node_off;            /* 3.14: list node's offset in a task, 0 = no lists */
    Py_ssize_t next_ordinal;        /* 3.14: list entry the next event starts at */
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
#  if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: gi_iframe is the frame struct itself, not a storage array */
    ps_frame *f = (ps_frame *)&g->gi_iframe;
    if (FRAME_STATE_FINISHED(g->gi_frame_state)) {
        return 0;
    }
#  else
    ps_frame *f = (ps_frame *)g->gi_iframe;
    if (g->gi_frame_state >= FRAME_COMPLETED) {
        return 0;
    }
#  endif
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

/* Row of the "asyncio tasks" pseudo-thread (a key no thread state has),
 * registered on first use; UINT32_MAX when the table is full. */
static uint32_t ps_tasks_thread(ps_sampler *s, ps_tasks *T)
{
    uint32_t ti;
    if (T->thread_index != UINT32_MAX) {
        return T->thread_index;
    }
    ti = ps_thread_register(s, PS_TASKS_THREAD_KEY, 0, 0, 0, 0);
    if (ti == UINT32_MAX || ps_names_reserve(s) != 0) {
        return UINT32_MAX;
    }
    T->thread_index = ti;
    return ti;
}

/* The leaf frame of a waiting task: the awaited task's coroutine when it
 * waits on another task (a connection task awaiting its request handler
 * reads "(awaiting Task: handler)" and a reader can tell the two waits are
 * one), else the type of the awaited future; None when ready to run. Only
 * C tasks are looked into, through the C descriptor: no Python code runs. */
static uint32_t ps_await_leaf(ps_sampler *s, ps_tasks *T, PyObject *waiter)
{
    if (waiter == NULL || waiter == Py_None) {
        return ps_intern_frame(s, (PyCodeObject *)Py_None, PS_FRAME_AWAIT);
    }
    if (T->c_task != NULL && PyObject_TypeCheck(waiter, T->c_task)) {
        PyObject *coro = ps_task_attr(T, waiter, T->d_coro, T->s_coro);
        PyCodeObject *code = NULL;
        int offset;
        uint32_t fid = PS_INTERN_FULL;
        int known = 0;
        if (coro != NULL && (PyCoro_CheckExact(coro) || PyGen_CheckExact(coro))) {
            if (ps_gen_position(coro, &code, &offset)) {
                known = 1;
                fid = ps_intern_frame(s, code, PS_FRAME_AWAIT_TASK);
            } else {
                /* The awaited task has finished: its wakeup of this task
                 * waits in the loop's ready queue, and until it runs this
                 * task's _fut_waiter is still the finished task (as a
                 * finished future still reads "(awaiting Future)"). Its
                 * coroutine has no frame position any more but keeps its
                 * code: read through the exact type's C getter (cr_code,
                 * gi_code; no Python code runs), so this wait reads
                 * "(awaiting Task: handler)" like the rest of it, not the
                 * bare type name left for tasks we cannot look into. Any
                 * loop busy for a while after a task returns shows it; a
                 * slow machine (emulation) often. */
                PyObject *c = PyObject_GetAttr(coro, PyCoro_CheckExact(coro) ? T->s_cr_code
                                                                             : T->s_gi_code);
                if (c == NULL) {
                    PyErr_Clear();
                } else if (PyCode_Check(c)) {
                    known = 1;
                    fid = ps_intern_frame(s, (PyCodeObject *)c, PS_FRAME_AWAIT_TASK);
                }
                Py_XDECREF(c);
            }
        }
        Py_XDECREF(coro);
        if (known) {
            return fid;
        }
    }
    return ps_intern_frame(s, (PyCodeObject *)Py_TYPE(waiter), PS_FRAME_AWAIT);
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
    fid = ps_await_leaf(s, T, waiter);
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

#ifdef PS_TASKS_LLIST
/* ------------------------------------------------------------------ */
/* 3.14: the per-thread task lists                                    */
/* ------------------------------------------------------------------ */
/* Visit, in one fixed order (each thread's list, then the interpreter's
 * list of tasks left by exited threads), the entries whose ordinal is in
 * [lo, hi), recording waiting tasks while *recorded < max_tasks. The first
 * entry skipped for the cap goes to *stopped (if still -1). Returns the
 * number of entries in all lists; *visited counts those looked at. */
static Py_ssize_t ps_llist_pass(ps_sampler *s, ps_tasks *T, Py_ssize_t lo, Py_ssize_t hi,
                                uint32_t *recorded, Py_ssize_t *stopped, Py_ssize_t *visited,
                                PyObject **running, int n_running, int64_t now, int64_t wall)
{
    PyThreadState *t = PyInterpreterState_ThreadHead(s->interp);
    int interp_done = 0;
    Py_ssize_t ord = 0;
    for (;;) {
        struct llist_node *head, *node;
        if (t != NULL) {
            head = &((_PyThreadStateImpl *)t)->asyncio_tasks_head;
            t = PyThreadState_Next(t);
        } else if (!interp_done) {
            head = &((PyInterpreterState *)s->interp)->asyncio_tasks_head;
            interp_done = 1;
        } else {
            break;
        }
        if (head->next == NULL) {
            continue;  /* a thread state still being set up */
        }
        for (node = head->next; node != head; node = node->next, ord++) {
            PyObject *task;
            int j, is_running = 0;
            if (ord < lo || ord >= hi || *stopped >= 0) {
                continue;
            }
            if (*recorded >= T->max_tasks) {
                *stopped = ord;  /* the next event starts here */
                continue;
            }
            (*visited)++;
            task = (PyObject *)((char *)node - T->node_off);
            /* refcount 0: a subclass instance being deallocated, not yet
             * unlinked by the base dealloc; never touch it */
            if (Py_REFCNT(task) <= 0 || !PyObject_TypeCheck(task, T->c_task)) {
                continue;
            }
            for (j = 0; j < n_running; j++) {
                is_running |= running[j] == task;
            }
            if (is_running) {
                continue;
            }
            /* our reference cannot be the last: nothing below runs code
             * that could drop another one */
            Py_INCREF(task);
            *recorded += (uint32_t)ps_sample_task(s, T, task, now, wall);
            Py_DECREF(task);
        }
    }
    return ord;
}

/* All list entries, resuming at the ordinal where the previous event hit
 * the cap (a node pointer could be freed by then; an ordinal cannot be
 * stale, only shifted by tasks that came and went). */
static void ps_sample_llists(ps_sampler *s, ps_tasks *T, int skip, uint32_t *recorded,
                             PyObject **running, int n_running, int64_t now, int64_t wall)
{
    Py_ssize_t total, stopped = -1, visited = 0, lo = T->next_ordinal;
    if (skip) {
        total = ps_llist_pass(s, T, 0, 0, recorded, &stopped, &visited, running, n_running, now, wall);
        T->dropped += (uint64_t)total;
        return;
    }
    total = ps_llist_pass(s, T, lo, PY_SSIZE_T_MAX, recorded, &stopped, &visited, running,
                          n_running, now, wall);
    if (lo > 0 && stopped < 0) {
        /* wrap round to the entries before where this event began */
        ps_llist_pass(s, T, 0, lo, recorded, &stopped, &visited, running, n_running, now, wall);
    }
    T->next_ordinal = stopped >= 0 ? stopped : 0;
    if (visited < total) {
        T->dropped += (uint64_t)(total - visited);
    }
}

/* GIL held, at start(): is `probe`, a task just created on this thread, the
 * tail of this thread's list at Task.__basicsize__ - sizeof(node)? Returns
 * that offset, or -1 (the layout is not the one these headers describe).
 * Only pointers are compared; nothing read is dereferenced. */
static Py_ssize_t ps_tasks_probe(PyObject *probe)
{
    _PyThreadStateImpl *ts = (_PyThreadStateImpl *)PyThreadState_Get();
    struct llist_node *head = &ts->asyncio_tasks_head;
    Py_ssize_t off = Py_TYPE(probe)->tp_basicsize - (Py_ssize_t)sizeof(struct llist_node);
    struct llist_node *node = (struct llist_node *)((char *)probe + off);
    if (off <= (Py_ssize_t)sizeof(PyObject) || head->prev != node || node->next != head) {
        return -1;
    }
    return off;
}
#else
static Py_ssize_t ps_tasks_probe(PyObject *probe)
{
    (void)probe;
    return -1;  /* no task lists in this Python */
}
#endif

/* Record every waiting task, up to the cap (GIL held). */
static void ps_sample_tasks(ps_sampler *s, int64_t now, int64_t wall)
{
    ps_tasks *T = &ps_T;
    PyObject *running[PS_TASKS_MAX_CURRENT];
    int n_running = 0, r, wraps = 0, full;
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
#ifdef PS_TASKS_LLIST
    if (T->node_off > 0) {
        /* 3.14: each thread state holds its running task */
        PyThreadState *t;
        for (t = PyInterpreterState_ThreadHead(s->interp);
             t != NULL && n_running < PS_TASKS_MAX_CURRENT; t = PyThreadState_Next(t)) {
            PyObject *task = ((_PyThreadStateImpl *)t)->asyncio_running_task;
            if (task != NULL) {
                running[n_running++] = task;
            }
        }
    }
#endif
    for (r = 0; r < T->n_registries; r++) {
        total += PySet_GET_SIZE(T->registries[r]);
    }
    /* task rows may fill three quarters of the sample table, no more:
     * thread samples, the profile proper, keep the last quarter */
    full = s->samples.count >= s->samples.limit - s->samples.limit / 4;
#ifdef PS_TASKS_LLIST
    if (T->node_off > 0) {
        ps_sample_llists(s, T, full, &recorded, running, n_running, now, wall);
    }
#endif
    if (full) {
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
    T->node_off = 0;
    T->next_ordinal = 0;
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
#ifdef PS_TASKS_LLIST
    /* 3.14: the node offset ps_tasks_probe() confirmed; needs the C Task */
    v = PyDict_GetItemString(config, "node_off");
    if (v != NULL && v != Py_None) {
        Py_ssize_t off = PyLong_Check(v) ? PyLong_AsSsize_t(v) : -1;
        if (off == -1 && PyErr_Occurred()) {
            PyErr_Clear();
        }
        if (T->c_task == NULL || off <= (Py_ssize_t)sizeof(PyObject) ||
            off + (Py_ssize_t)sizeof(struct llist_node) > T->c_task->tp_basicsize) {
            return -1;
        }
        T->node_off = off;
    }
#endif
    T->s_coro = PyUnicode_InternFromString("_coro");
    T->s_fut_waiter = PyUnicode_InternFromString("_fut_waiter");
    T->s_name = PyUnicode_InternFromString("_name");
    T->s_cr_await = PyUnicode_InternFromString("cr_await");
    T->s_gi_yieldfrom = PyUnicode_InternFromString("gi_yieldfrom");
    T->s_cr_code = PyUnicode_InternFromString("cr_code");
    T->s_gi_code = PyUnicode_InternFromString("gi_code");
    if (!T->s_coro || !T->s_fut_waiter || !T->s_name || !T->s_cr_await || !T->s_gi_yieldfrom ||
        !T->s_cr_code || !T->s_gi_code) {
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
    Py_CLEAR(T->s_cr_code);
    Py_CLEAR(T->s_gi_code);
}

#endif /* PYSAMPLER_TASKS_H */
