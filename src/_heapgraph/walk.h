/*
 * walk.h - the state of a heap snapshot's walk (graph.h) and how it numbers
 * objects and writes node and edge records: an object becomes a node the
 * first time it is reached, and is queued to be written in that order.
 */
#ifndef PYSAMPLER_HG_WALK_H
#define PYSAMPLER_HG_WALK_H

#include <Python.h>
#include <errno.h>

#include "_heapgraph/out.h"
#include "_heapgraph/tables.h"

/* node types: the order of snapshot.meta.node_types (V8's) */
enum {
    HG_T_HIDDEN = 0,
    HG_T_ARRAY,
    HG_T_STRING,
    HG_T_OBJECT,
    HG_T_CODE,
    HG_T_CLOSURE,
    HG_T_REGEXP,
    HG_T_NUMBER,
    HG_T_NATIVE,
    HG_T_SYNTHETIC
};

/* edge types: the order of snapshot.meta.edge_types */
enum {
    HG_E_CONTEXT = 0,
    HG_E_ELEMENT,
    HG_E_PROPERTY,
    HG_E_INTERNAL,
    HG_E_HIDDEN,
    HG_E_SHORTCUT,
    HG_E_WEAK
};

#define HG_NODE_FIELDS 7
/* DevTools keeps node and edge fields in 32-bit arrays, and an edge's
 * target as node index * 7 */
#define HG_MAX_NODES (0xFFFFFFFFu / HG_NODE_FIELDS - 1)
#define HG_MAX_SIZE 0xFFFFFFFFu

/* synthetic nodes: these four, then one per thread */
enum { HG_ROOT = 0, HG_MODULES, HG_THREADS, HG_OTHER, HG_FIRST_THREAD };

typedef struct {
    PyTypeObject *tp;
    uint32_t name;     /* string index of the qualified type name */
    uint8_t kind;
    uint8_t exact;     /* exactly the builtin type of its kind */
    uint8_t heap;      /* a class: instances have __class__, slots, __dict__ */
    uint8_t sizeof_kind; /* 0 none (basic size), 1 PyCFunction, 2 PyCMethod */
    void *sizeof_fn;
    PyTypeObject *sizeof_cls;
} hg_type;

typedef struct {
    uint8_t type;
    uint32_t name;
    uint32_t to;
} hg_synedge;

typedef struct {
    hg_synedge *e;
    size_t n, cap;
    uint32_t name;
} hg_syn;

typedef struct {
    uint64_t nodes, edges, strings;
    uint64_t nodes_split, edges_split; /* where the synthetic sections start */
    uint64_t nodes_bytes, edges_bytes, strings_bytes;
    uint64_t other_roots;
    int err;                           /* errno of a failure, 0 if none */
} hg_result;

typedef struct {
    hg_out nodes, edges;
    hg_strings strings;
    hg_ptrmap index;     /* key (address, |1 for an interpreter frame) -> node */
    hg_fifo queue;       /* keys numbered, not yet written */
    size_t count;        /* nodes numbered */
    hg_idset ids;
    hg_bag bag;
    hg_ptrmap typeidx;
    hg_type *types;
    size_t ntypes, typecap;
    hg_syn *syn;
    uint32_t nsyn;
    hg_name nb;
    uint32_t cur_edges;  /* edges of the node being written */
    int use_bag;         /* record named targets for the traverse that follows */
    int trav_elements;   /* traverse-only references are elements (sets) */
    uint32_t trav_i;
    uint64_t edge_total;
    uint64_t node_total;
    int err;
    PyTypeObject *ndarray;
    PyObject *sizeof_name;
    /* strings used everywhere */
    uint32_t s_class, s_dict, s_referent, s_callback, s_cell, s_func, s_self, s_base, s_dtype;
} hg_walk;

/* ------------------------------------------------------------------ */
/* Numbering and writing                                              */
/* ------------------------------------------------------------------ */

static void hg_fail(hg_walk *w, int err)
{
    if (!w->err) {
        w->err = err;
    }
}

/* The node of key, numbered (and queued) on first sight. */
static uint32_t hg_number(hg_walk *w, uintptr_t key)
{
    int added;
    uint32_t n;
    if (w->count >= HG_MAX_NODES) {
        hg_fail(w, EOVERFLOW);
        return HG_NONE;
    }
    n = hg_ptrmap_put(&w->index, key, (uint32_t)w->count, &added);
    if (n == HG_NONE) {
        hg_fail(w, ENOMEM);
        return HG_NONE;
    }
    if (added) {
        if (hg_fifo_push(&w->queue, key) < 0) {
            hg_fail(w, ENOMEM);
            return HG_NONE;
        }
        w->count++;
    }
    return n;
}

static inline void hg_write_edge(hg_walk *w, int type, uint32_t name, uint32_t to)
{
    uint64_t rec[3];
    rec[0] = (uint64_t)type;
    rec[1] = name;
    rec[2] = (uint64_t)to * HG_NODE_FIELDS;
    hg_out_record(&w->edges, rec, 3);
    w->cur_edges++;
    w->edge_total++;
}

/* An edge from the node being written to obj (no-op for NULL). */
static void hg_edge(hg_walk *w, int type, uint32_t name, PyObject *obj)
{
    uint32_t to;
    if (obj == NULL || w->err) {
        return;
    }
    if (w->use_bag) {
        hg_bag_add(&w->bag, (uintptr_t)obj);
    }
    to = hg_number(w, (uintptr_t)obj);
    if (to != HG_NONE) {
        hg_write_edge(w, type, name, to);
    }
}

/* obj is referenced by the node being written, and already told for. */
static inline void hg_covered(hg_walk *w, PyObject *obj)
{
    if (obj != NULL && w->use_bag) {
        hg_bag_add(&w->bag, (uintptr_t)obj);
    }
}

static void hg_syn_edge_to(hg_walk *w, uint32_t syn, int type, uint32_t name, uint32_t to)
{
    hg_syn *s = &w->syn[syn];
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        hg_synedge *e = (hg_synedge *)realloc(s->e, cap * sizeof(hg_synedge));
        if (e == NULL) {
            hg_fail(w, ENOMEM);
            return;
        }
        s->e = e;
        s->cap = cap;
    }
    s->e[s->n].type = (uint8_t)type;
    s->e[s->n].name = name;
    s->e[s->n].to = to;
    s->n++;
}

/* An edge from synthetic node syn to the node of key (numbered now). */
static void hg_syn_edge(hg_walk *w, uint32_t syn, int type, uint32_t name, uintptr_t key)
{
    uint32_t to = hg_number(w, key);
    if (to != HG_NONE) {
        hg_syn_edge_to(w, syn, type, name, to);
    }
}

static void hg_write_node(hg_walk *w, int type, uint32_t name, uint32_t id, uint64_t size)
{
    uint64_t rec[HG_NODE_FIELDS];
    rec[0] = (uint64_t)type;
    rec[1] = name;
    rec[2] = id;
    rec[3] = size > HG_MAX_SIZE ? HG_MAX_SIZE : size;
    rec[4] = w->cur_edges;
    rec[5] = 0; /* trace_node_id: no allocation traces */
    rec[6] = 0; /* detachedness: a DOM notion */
    hg_out_record(&w->nodes, rec, HG_NODE_FIELDS);
    w->node_total++;
}

static inline uint32_t hg_id_for(hg_walk *w, uintptr_t key)
{
    uint64_t x = (uint64_t)key >> 4;
    return hg_idset_claim(&w->ids, (uint32_t)(x ^ (x >> 32)));
}

#endif /* PYSAMPLER_HG_WALK_H */
