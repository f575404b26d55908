/*
 * graph.h - a snapshot of the Python object graph in the format of Chrome
 * DevTools' Memory panel (.heapsnapshot), taken while the program is paused.
 *
 * The format (V8's heap snapshot, read by DevTools and memlab) is a node
 * array (type, name, id, self size, edge count, ...) and an edge array
 * (type, name or index, target), each node's edges contiguous and in node
 * order, plus a table of strings that names index into. DevTools computes
 * distances, dominators and retained sizes itself from the graph.
 *
 * How the graph is walked, and why:
 *
 *   - Paused. The caller holds the GIL and nothing here releases it or
 *     runs Python code: no other thread runs Python while the graph is
 *     read, so every pointer stays valid and the graph is consistent. The
 *     reads are those the garbage collector makes at any allocation
 *     (tp_traverse), plus dict entries, instance values, frame locals and
 *     struct fields read in place (pyobjects.h); __sizeof__ is called only
 *     where C implements it (a class's Python __sizeof__ is not run).
 *   - Roots, as V8 puts "(GC roots)" under a synthetic root: the modules
 *     of sys.modules, every thread's stack (a node per frame, its locals as
 *     named edges), and "(Other roots)": objects the collector tracks that
 *     neither reaches (held from C, by the interpreter, or cyclic garbage
 *     not yet collected), those no other such object refers to first.
 *   - One pass, streamed. Objects are numbered as they are first reached
 *     (breadth first) and written in that order: when an object's turn
 *     comes, its edges go to the edges file and its node record, with the
 *     edge count, to the nodes file. Memory is the numbering (an address
 *     map of 16-byte slots, a set of ids, the string table's hashes, the
 *     queue of objects not yet written) and fixed buffers, measured at 70
 *     bytes an object at the peak for 1.2 million (benchmarks/
 *     heap_snapshot.py); the JSON is never held in memory. The synthetic
 *     nodes, whose edges are known only at the end, are written last, as
 *     a separate section the assembler puts first (node 0 must be the root).
 *   - Time: about 1.1 microseconds an object (1.3-1.4 s for 1.2 million
 *     on CPython 3.11), most of it waiting on memory: each object's header,
 *     its edges' slots in the address map and its id's slot in the id set
 *     are cache misses once the heap outgrows the caches (perf: hash probes
 *     were over half the samples; prefetching the next ones did not
 *     measurably help on a loaded 2-core machine).
 *   - Names a person recognises: the type's qualified name; a str's
 *     contents; an int's or float's value; functions, classes, modules and
 *     frames by qualified name. Edges are named by dict key, attribute,
 *     index, local or closure variable; references only tp_traverse
 *     reports are unnamed "hidden" edges.
 *   - Ids: derived from the address (xor-folded to 32 bits, the width
 *     DevTools reads), so an object keeps its id from one snapshot to the
 *     next and DevTools' Comparison view can tell new objects from old; a
 *     fold that collides takes the next free id.
 *
 * This file orchestrates (roots, the queue, the synthetic nodes); walk.h
 * holds the walk's state and writes records, refs.h reads one object,
 * pyobjects.h the CPython-version-specific parts, out.h the output and the
 * string table, tables.h the hash tables.
 */
#ifndef PYSAMPLER_HG_GRAPH_H
#define PYSAMPLER_HG_GRAPH_H

#include <Python.h>
#include <errno.h>

#include "_heapgraph/pyobjects.h"
#include "_heapgraph/refs.h"
#include "_heapgraph/walk.h"

/* Write every queued node not yet written. */
static void hg_drain(hg_walk *w)
{
    uintptr_t key;
    while (!w->err && (key = hg_fifo_pop(&w->queue)) != 0) {
#if PY_VERSION_HEX >= 0x030B0000
        if (key & 1) {
            hg_write_iframe(w, (ps_frame *)(key & ~(uintptr_t)1), key);
            continue;
        }
#endif
        hg_write_object(w, (PyObject *)key, key);
        if (w->nodes.err || w->edges.err || w->strings.out.err) {
            hg_fail(w, w->nodes.err ? w->nodes.err : w->edges.err ? w->edges.err : w->strings.out.err);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Roots                                                              */
/* ------------------------------------------------------------------ */

static void hg_module_roots(hg_walk *w, PyObject *modules)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    if (modules == NULL || !PyDict_Check(modules)) {
        return;
    }
    while (PyDict_Next(modules, &pos, &k, &v) && !w->err) {
        uint32_t name = PyUnicode_Check(k) ? hg_str_name(w, k) : 0;
        hg_syn_edge(w, HG_MODULES, HG_E_PROPERTY, name, (uintptr_t)v);
    }
}

/* Thread k's node: its frames, innermost first, then what its thread
 * state holds (thread-local data, exceptions being handled). */
static void hg_thread_root(hg_walk *w, uint32_t syn, PyThreadState *t, PyObject *names)
{
    ps_frame *f;
    uint32_t depth = 0;
    PyObject *ident, *tname = NULL;
    int i;
    ident = PyLong_FromUnsignedLong(ps_thread_ident(t));
    if (ident != NULL && names != NULL && PyDict_Check(names)) {
        tname = PyDict_GetItem(names, ident); /* borrowed; never raises */
    }
    Py_XDECREF(ident);
    PyErr_Clear();
    hg_name_reset(&w->nb);
    hg_name_cstr(&w->nb, "Thread ");
    if (tname != NULL && PyUnicode_Check(tname)) {
        hg_name_unicode(&w->nb, tname, 200);
        hg_name_cstr(&w->nb, " ");
    }
    hg_name_cstr(&w->nb, "(");
    hg_name_u64(&w->nb, ps_thread_ident(t));
    hg_name_cstr(&w->nb, ")");
    w->syn[syn].name = hg_intern_name(&w->strings, &w->nb);
    hg_syn_edge_to(w, HG_THREADS, HG_E_ELEMENT, syn - HG_FIRST_THREAD, syn);
    for (f = ps_thread_bound(t) ? ps_thread_top_frame(t) : NULL; f != NULL && !w->err;
         f = ps_frame_back(f)) {
#if PY_VERSION_HEX >= 0x030B0000
        hg_syn_edge(w, syn, HG_E_ELEMENT, depth++, (uintptr_t)f | 1);
#else
        hg_syn_edge(w, syn, HG_E_ELEMENT, depth++, (uintptr_t)f);
#endif
    }
    if (t->dict != NULL) {
        hg_syn_edge(w, syn, HG_E_INTERNAL, hg_intern_cstr(&w->strings, "(thread state dict)"),
                    (uintptr_t)t->dict);
    }
    for (i = 0; i < 64; i++) {
        PyObject *exc = hg_thread_handled_exception(t, i);
        if (exc == NULL) {
            break;
        }
        if (exc != Py_None) {
            hg_syn_edge(w, syn, HG_E_INTERNAL, hg_intern_cstr(&w->strings, "(exception being handled)"),
                        (uintptr_t)exc);
        }
    }
}

static int hg_mark_referenced(PyObject *o, void *arg)
{
    int added;
    if (o != NULL) {
        hg_ptrmap_put((hg_ptrmap *)arg, (uintptr_t)o, 0, &added);
    }
    return 0;
}

/* Objects the collector tracks that no module or stack reaches: first those
 * no other such object refers to (held from C or by the interpreter), then
 * what is left (cycles: garbage not yet collected, or held from C). */
static void hg_other_roots(hg_walk *w, PyObject *objs)
{
    Py_ssize_t i, n = PyList_GET_SIZE(objs);
    int pass;
    hg_ptrmap referenced;
    if (hg_ptrmap_init(&referenced, 1024) < 0) {
        hg_ptrmap_free(&referenced);
        hg_fail(w, ENOMEM);
        return;
    }
    for (i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(objs, i);
        if (hg_ptrmap_get(&w->index, (uintptr_t)o) == HG_NONE && PyObject_IS_GC(o) &&
            Py_TYPE(o)->tp_traverse != NULL) {
            Py_TYPE(o)->tp_traverse(o, hg_mark_referenced, &referenced);
        }
    }
    for (pass = 0; pass < 2 && !w->err; pass++) {
        for (i = 0; i < n && !w->err; i++) {
            PyObject *o = PyList_GET_ITEM(objs, i);
            if (hg_ptrmap_get(&w->index, (uintptr_t)o) != HG_NONE) {
                continue;
            }
            if (pass == 0 && hg_ptrmap_get(&referenced, (uintptr_t)o) != HG_NONE) {
                continue;
            }
            hg_syn_edge(w, HG_OTHER, HG_E_ELEMENT, (uint32_t)w->syn[HG_OTHER].n, (uintptr_t)o);
            hg_drain(w);
        }
    }
    hg_ptrmap_free(&referenced);
}

/* The synthetic nodes, as the last section of each file (the assembler
 * puts it first: the root must be node 0). */
static void hg_write_synthetic(hg_walk *w, hg_result *res)
{
    uint32_t s;
    size_t j;
    res->nodes_split = hg_out_tell(&w->nodes);
    res->edges_split = hg_out_tell(&w->edges);
    hg_out_section(&w->nodes);
    hg_out_section(&w->edges);
    for (s = 0; s < w->nsyn; s++) {
        w->cur_edges = 0;
        for (j = 0; j < w->syn[s].n; j++) {
            hg_write_edge(w, w->syn[s].e[j].type, w->syn[s].e[j].name, w->syn[s].e[j].to);
        }
        hg_write_node(w, HG_T_SYNTHETIC, w->syn[s].name, 1 + 2 * s, 0);
    }
}

static void hg_walk_free(hg_walk *w)
{
    uint32_t s;
    hg_out_free(&w->nodes);
    hg_out_free(&w->edges);
    hg_strings_free(&w->strings);
    hg_ptrmap_free(&w->index);
    hg_ptrmap_free(&w->typeidx);
    hg_idset_free(&w->ids);
    hg_bag_free(&w->bag);
    hg_fifo_free(&w->queue);
    free(w->types);
    if (w->syn != NULL) {
        for (s = 0; s < w->nsyn; s++) {
            free(w->syn[s].e);
        }
        free(w->syn);
    }
    memset(w, 0, sizeof(*w));
}

static int hg_walk_init(hg_walk *w, int fd_nodes, int fd_edges, int fd_strings, uint32_t nthreads,
                        size_t expected)
{
    uint32_t s;
    int ok;
    memset(w, 0, sizeof(*w));
    w->nsyn = HG_FIRST_THREAD + nthreads;
    w->typecap = 256;
    ok = hg_out_init(&w->nodes, fd_nodes) == 0 && hg_out_init(&w->edges, fd_edges) == 0 &&
         hg_strings_init(&w->strings, fd_strings) == 0 && hg_ptrmap_init(&w->index, expected) == 0 &&
         hg_ptrmap_init(&w->typeidx, 256) == 0 && hg_idset_init(&w->ids, expected) == 0 &&
         hg_bag_init(&w->bag) == 0 &&
         (w->types = (hg_type *)malloc(w->typecap * sizeof(hg_type))) != NULL &&
         (w->syn = (hg_syn *)calloc(w->nsyn, sizeof(hg_syn))) != NULL;
    if (!ok) {
        return -1;
    }
    /* synthetic nodes come first in numbering; their ids are 1, 3, 5... */
    for (s = 0; s < w->nsyn; s++) {
        hg_idset_claim(&w->ids, 1 + 2 * s);
    }
    w->count = w->nsyn;
    hg_intern(&w->strings, "", 0); /* index 0: the root's name, and "no name" */
    w->syn[HG_ROOT].name = 0;
    w->syn[HG_MODULES].name = hg_intern_cstr(&w->strings, "(Modules)");
    w->syn[HG_THREADS].name = hg_intern_cstr(&w->strings, "(Thread stacks)");
    w->syn[HG_OTHER].name = hg_intern_cstr(&w->strings, "(Other roots)");
    hg_syn_edge_to(w, HG_ROOT, HG_E_ELEMENT, 0, HG_MODULES);
    hg_syn_edge_to(w, HG_ROOT, HG_E_ELEMENT, 1, HG_THREADS);
    hg_syn_edge_to(w, HG_ROOT, HG_E_ELEMENT, 2, HG_OTHER);
    w->s_class = hg_intern_cstr(&w->strings, "__class__");
    w->s_dict = hg_intern_cstr(&w->strings, "__dict__");
    w->s_referent = hg_intern_cstr(&w->strings, "referent");
    w->s_callback = hg_intern_cstr(&w->strings, "__callback__");
    w->s_cell = hg_intern_cstr(&w->strings, "cell_contents");
    w->s_func = hg_intern_cstr(&w->strings, "__func__");
    w->s_self = hg_intern_cstr(&w->strings, "__self__");
    w->s_base = hg_intern_cstr(&w->strings, "base");
    w->s_dtype = hg_intern_cstr(&w->strings, "dtype");
    return 0;
}

/* The whole snapshot. Call with the GIL held; returns -1 with an exception
 * set (MemoryError, OSError), else 0 with res filled in. objs is the list
 * of every object the collector tracks (gc.get_objects()). */
static int hg_run(int fd_nodes, int fd_edges, int fd_strings, PyObject *modules,
                  PyObject *thread_names, PyObject *objs, PyTypeObject *ndarray,
                  PyObject *sizeof_name, hg_result *res)
{
    hg_walk w;
    PyThreadState *me = PyThreadState_Get(), *t;
    PyInterpreterState *interp = PyThreadState_GetInterpreter(me);
    uint32_t nthreads = 0, k = 0;
    int err;
    memset(res, 0, sizeof(*res));
    for (t = PyInterpreterState_ThreadHead(interp); t != NULL; t = PyThreadState_Next(t)) {
        nthreads++;
    }
    if (hg_walk_init(&w, fd_nodes, fd_edges, fd_strings, nthreads,
                     (size_t)PyList_GET_SIZE(objs) * 2 + 1024) < 0) {
        hg_walk_free(&w);
        PyErr_NoMemory();
        return -1;
    }
    w.ndarray = ndarray;
    w.sizeof_name = sizeof_name;
    hg_module_roots(&w, modules);
    for (t = PyInterpreterState_ThreadHead(interp); t != NULL && k < nthreads;
         t = PyThreadState_Next(t)) {
        hg_thread_root(&w, HG_FIRST_THREAD + k++, t, thread_names);
    }
    hg_drain(&w);
    if (!w.err) {
        hg_other_roots(&w, objs);
    }
    res->other_roots = w.syn[HG_OTHER].n;
    if (!w.err) {
        hg_write_synthetic(&w, res);
    }
    hg_out_flush(&w.nodes);
    hg_out_flush(&w.edges);
    hg_out_flush(&w.strings.out);
    err = w.err ? w.err
          : w.nodes.err ? w.nodes.err
          : w.edges.err ? w.edges.err
                        : w.strings.out.err;
    res->nodes = w.node_total;
    res->edges = w.edge_total;
    res->strings = w.strings.count;
    res->nodes_bytes = w.nodes.written;
    res->edges_bytes = w.edges.written;
    res->strings_bytes = w.strings.out.written;
    res->err = err;
    hg_walk_free(&w);
    if (err == ENOMEM) {
        PyErr_NoMemory();
        return -1;
    }
    if (err == EOVERFLOW) {
        PyErr_SetString(PyExc_OverflowError,
                        "more objects than a .heapsnapshot can hold (DevTools reads 32-bit arrays)");
        return -1;
    }
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

#endif /* PYSAMPLER_HG_GRAPH_H */
