/*
 * heap.h - heap-memory profiling: a wrapper around the Python allocators
 * that samples allocations by bytes (Poisson process, as Go and tcmalloc
 * do), records each sampled allocation's Python stack, and matches frees of
 * sampled blocks so that in-use memory can be told from allocated memory.
 *
 * Which allocators
 * ----------------
 * The MEM and OBJ domains are wrapped; RAW is not, for three reasons:
 *   - RAW is called with or without the GIL (and by threads that have no
 *     thread state at all), so neither a stack walk nor our tables would be
 *     safe there without a lock on every RAW call, frees included;
 *   - pymalloc itself takes blocks over 512 bytes from RAW, so wrapping RAW
 *     too would count those allocations twice;
 *   - what Python code allocates (objects, list and dict storage, bytes,
 *     str) goes through MEM and OBJ; RAW carries interpreter-internal and
 *     C-extension buffers (numpy data, for one, bypasses all three domains
 *     and is not seen here either).
 *
 * Locking
 * -------
 * MEM and OBJ are called with the GIL held, so on GIL builds the GIL is the
 * lock for the countdown and every table here. From 3.12 an isolated
 * sub-interpreter can have a GIL of its own and call the same (process-wide)
 * allocator concurrently; such calls pass straight through (no sampling, no
 * look-up), and only threads of the interpreter that started the session
 * touch our state. A block cannot travel between interpreters with separate
 * GILs (each has its own obmalloc state), so no sampled free is missed.
 *
 * Sampling
 * --------
 * One countdown of bytes to the next sample, drawn from an exponential
 * distribution with mean `rate`. An allocation that takes the countdown to
 * zero or below is sampled and a fresh interval drawn. Because the
 * exponential is memoryless, an allocation of n bytes is sampled with
 * probability 1 - exp(-n / rate) whatever came before it, so a sample
 * stands for 1 / (1 - exp(-n / rate)) allocations of that size
 * (the unsampling the Python side applies, as Go's runtime/pprof does).
 *
 * Records
 * -------
 *   - `allocs`: (stack node, size) -> number of sampled allocations, for
 *     "allocated since start";
 *   - `live`: block address -> (stack node, size, ordinal) for sampled
 *     blocks not yet freed, for "in use now".
 * Both are bounded; a sample that does not fit is dropped and counted.
 * Blocks are never altered (no headers), so a block allocated while the
 * wrapper was installed may be freed after it is gone, and the other way
 * round, with no harm: a free we do not see just leaves nothing to match.
 *
 * Nothing here allocates Python objects or calls the Python allocator:
 * our tables use malloc, and a `busy` flag turns allocations made while we
 * record one into plain pass-throughs.
 */
#ifndef PYSAMPLER_HEAP_H
#define PYSAMPLER_HEAP_H

#include <math.h>

#include "pyframes.h"
#include "platform.h"
#include "tables.h"

/* frame keys of the synthetic frames (code pointer NULL): the truncation
 * marker shares core.h's key 0; an allocation made with no Python frame on
 * the stack (interpreter start-up code, a C thread) gets key 1 */
#define PS_HEAP_TRUNCATED_CODE 0
#define PS_HEAP_NATIVE_CODE 1

/* ------------------------------------------------------------------ */
/* Live blocks: address -> record. Open addressing, linear probing,     */
/* load factor <= 1/2, backward-shift deletion (no tombstones, so a     */
/* look-up for an address we never sampled, the common case on every  */
/* free, ends at the first empty slot).                               */
/* ------------------------------------------------------------------ */
typedef struct {
    uint32_t node;
    uint32_t unused;
    uint64_t size;
    uint64_t ordinal;
} ps_live_rec;

typedef struct {
    uintptr_t *keys;      /* block address, 0 = empty */
    ps_live_rec *recs;
    uint32_t mask;        /* slots - 1 */
    uint32_t shift;       /* 64 - log2(slots), for Fibonacci hashing */
    uint32_t count;
    uint32_t limit;       /* most live records kept */
} ps_live_map;

static inline uint32_t ps_live_slot(const ps_live_map *m, uintptr_t key)
{
    return (uint32_t)(((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> m->shift);
}

static int ps_live_alloc(ps_live_map *m, uint32_t slots)
{
    uint32_t bits = 0;
    while ((1u << bits) < slots) {
        bits++;
    }
    m->keys = (uintptr_t *)calloc(slots, sizeof(uintptr_t));
    m->recs = (ps_live_rec *)malloc((size_t)slots * sizeof(ps_live_rec));
    if (!m->keys || !m->recs) {
        free(m->keys);
        free(m->recs);
        m->keys = NULL;
        m->recs = NULL;
        return -1;
    }
    m->mask = slots - 1;
    m->shift = 64 - bits;
    m->count = 0;
    return 0;
}

static void ps_live_free(ps_live_map *m)
{
    free(m->keys);
    free(m->recs);
    memset(m, 0, sizeof(*m));
}

static int ps_live_init(ps_live_map *m, uint32_t limit)
{
    memset(m, 0, sizeof(*m));
    if (ps_live_alloc(m, 1024) != 0) {
        return -1;
    }
    m->limit = limit;
    return 0;
}

static void ps_live_place(ps_live_map *m, uintptr_t key, const ps_live_rec *rec)
{
    uint32_t s = ps_live_slot(m, key);
    while (m->keys[s] != 0 && m->keys[s] != key) {
        s = (s + 1) & m->mask;
    }
    if (m->keys[s] == 0) {
        m->count++;
    }
    m->keys[s] = key;
    m->recs[s] = *rec;
}

/* Insert or replace (an address we still hold is one whose free we did not
 * see, e.g. from another interpreter: the newer record wins). -1 if full. */
static int ps_live_put(ps_live_map *m, uintptr_t key, const ps_live_rec *rec)
{
    if ((m->count + 1) * 2 > m->mask + 1) {
        ps_live_map bigger;
        uint32_t i;
        if (m->count >= m->limit || ps_live_alloc(&bigger, (m->mask + 1) * 2) != 0) {
            return -1;
        }
        bigger.limit = m->limit;
        for (i = 0; i <= m->mask; i++) {
            if (m->keys[i] != 0) {
                ps_live_place(&bigger, m->keys[i], &m->recs[i]);
            }
        }
        free(m->keys);
        free(m->recs);
        *m = bigger;
    }
    ps_live_place(m, key, rec);
    return 0;
}

/* Remove `key` if present; returns 1 when it was. */
static inline int ps_live_remove(ps_live_map *m, uintptr_t key)
{
    uint32_t s = ps_live_slot(m, key), j, home;
    for (;;) {
        uintptr_t k = m->keys[s];
        if (k == key) {
            break;
        }
        if (k == 0) {
            return 0;
        }
        s = (s + 1) & m->mask;
    }
    /* backward shift: move later members of the probe run into the hole
     * when their home slot does not lie cyclically in (hole, j] */
    j = s;
    for (;;) {
        j = (j + 1) & m->mask;
        if (m->keys[j] == 0) {
            break;
        }
        home = ps_live_slot(m, m->keys[j]);
        if (((j - home) & m->mask) >= ((j - s) & m->mask)) {
            m->keys[s] = m->keys[j];
            m->recs[s] = m->recs[j];
            s = j;
        }
    }
    m->keys[s] = 0;
    m->count--;
    return 1;
}

/* ------------------------------------------------------------------ */
/* The heap profiler's state                                          */
/* ------------------------------------------------------------------ */
/* One installation of the wrapper: what it forwards to, per domain, and
 * whether it samples. A wrapper another allocator hook (tracemalloc, say)
 * saved while it wrapped us may be called after we "uninstalled", so an
 * installation is never freed, only reused once it was taken off the top
 * of the chain by us (then nobody else holds it). Old installations that
 * stay reachable forward without sampling. */
typedef struct {
    PyMemAllocatorEx orig;    /* the allocator we forward to */
    int active;               /* this installation samples (a session runs) */
} ps_heap_domain;

typedef struct {
    ps_heap_domain mem;
    ps_heap_domain obj;
} ps_heap_gen;

typedef struct {
    int enabled;              /* a session runs */
    int busy;                 /* recording or copying: allocations pass through */
    ps_heap_gen *active;      /* the installation of the running session */
    ps_heap_gen *spare;       /* a retired installation nobody else holds */
    PyInterpreterState *interp; /* the interpreter whose threads we sample */

    double rate;              /* mean bytes between samples */
    int64_t countdown;        /* bytes left to the next sample */
    uint64_t rng;
    int max_depth;
    uint32_t *walk;           /* scratch: frame ids of one stack, leaf first */

    ps_intern frames;         /* (code object, byte offset) -> frame id */
    ps_intern nodes;          /* (parent node + 1, frame id) -> node id */
    ps_intern allocs;         /* (node, size) -> alloc record id */
    uint64_t *alloc_count;    /* by alloc record id: sampled allocations */
    uint32_t alloc_cap;
    ps_live_map live;

    uint64_t ordinal;         /* sampled allocations so far (orders them) */
    uint64_t dropped;         /* samples not (fully) recorded: a table was full */
    uint64_t truncated;       /* samples deeper than max_depth */
    uint64_t freed;           /* frees of sampled blocks matched */
    int64_t start_ns;
} ps_heap;

static ps_heap ps_H;

enum {
    PS_HEAP_OK = 0,
    PS_HEAP_ERR_RUNNING = -1,
    PS_HEAP_ERR_NOT_RUNNING = -2,
    PS_HEAP_ERR_MEMORY = -3,
};

/* The calling thread's state, or NULL; never fails or allocates. */
static inline PyThreadState *ps_heap_tstate(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* May this call touch our state? Only threads of the sampled interpreter,
 * which hold its GIL when they call MEM or OBJ. Before 3.12 every
 * interpreter shares one GIL, so any caller holds it. */
static inline int ps_heap_ours(ps_heap *h)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12: sub-interpreters may own a GIL and allocate concurrently */
    PyThreadState *t = ps_heap_tstate();
    return t != NULL && t->interp == h->interp;
#else
    (void)h;
    return 1;
#endif
}

static int64_t ps_heap_interval(ps_heap *h)
{
    /* -ln(U) * rate with U uniform in (0, 1]: exponential, mean `rate` */
    double u = ((double)(ps_random_next(&h->rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double x = -log(u) * h->rate;
    if (x < 1.0) {
        return 1;
    }
    if (x > 4e18) {
        return (int64_t)4e18;
    }
    return (int64_t)x;
}

static int ps_heap_reserve_allocs(ps_heap *h, uint32_t need)
{
    uint32_t cap = h->alloc_cap ? h->alloc_cap : 1024;
    uint64_t *p;
    if (need <= h->alloc_cap) {
        return 0;
    }
    while (cap < need) {
        cap *= 2;
    }
    p = (uint64_t *)realloc(h->alloc_count, (size_t)cap * sizeof(uint64_t));
    if (!p) {
        return -1;
    }
    h->alloc_count = p;
    h->alloc_cap = cap;
    return 0;
}

static uint32_t ps_heap_intern_frame(ps_heap *h, PyCodeObject *code, int key)
{
    int added;
    uint32_t id = ps_intern_get(&h->frames, (uint64_t)(uintptr_t)code, (uint64_t)(int64_t)key, &added);
    if (added && code != NULL) {
        /* keep the code object alive while its pointer is a key */
        Py_INCREF(code);
    }
    return id;
}

/* The stack-tree node of the calling thread's Python stack; PS_INTERN_FULL
 * when a table is full. GIL held. */
static uint32_t ps_heap_stack_node(ps_heap *h, PyThreadState *t)
{
    ps_frame *f = ps_thread_top_frame(t);
    uint32_t n = 0, node = PS_INTERN_FULL;
    uint64_t parent = 0;
    int added, i, truncated = 0;

    for (; f != NULL; f = ps_frame_back(f)) {
        uint32_t fid;
        if (n == (uint32_t)h->max_depth) {
            truncated = 1;
            break;
        }
        fid = ps_heap_intern_frame(h, ps_frame_code(f), ps_frame_lasti_bytes(f));
        if (fid == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        h->walk[n++] = fid;
    }
    if (truncated || n == 0) {
        /* a visible root: "outer frames omitted" or "no Python frame" */
        uint32_t tf = ps_heap_intern_frame(h, NULL, truncated ? PS_HEAP_TRUNCATED_CODE : PS_HEAP_NATIVE_CODE);
        if (tf == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        node = ps_intern_get(&h->nodes, 0, tf, &added);
        if (node == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        parent = (uint64_t)node + 1;
        h->truncated += (uint64_t)truncated;
    }
    for (i = (int)n - 1; i >= 0; i--) {
        node = ps_intern_get(&h->nodes, parent, h->walk[i], &added);
        if (node == PS_INTERN_FULL) {
            return PS_INTERN_FULL;
        }
        parent = (uint64_t)node + 1;
    }
    return node;
}

/* The slow path: the countdown ran out on block `p` of `size` bytes. */
static void ps_heap_sample(ps_heap *h, void *p, size_t size)
{
    PyThreadState *t;
    uint32_t node, rec_id;
    int added;
    ps_live_rec rec;

    if (h->busy) {
        return;  /* our own bookkeeping allocates nothing through here, but
                  * never recurse; the countdown stays spent, so the next
                  * allocation is sampled instead */
    }
    t = ps_heap_tstate();
    if (t == NULL) {
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (t->interp != h->interp) {
        return;  /* another interpreter, maybe with its own GIL */
    }
#endif
    h->busy = 1;
    h->countdown = ps_heap_interval(h);
    h->ordinal++;
    node = ps_heap_stack_node(h, t);
    if (node == PS_INTERN_FULL || ps_heap_reserve_allocs(h, h->allocs.count + 1) != 0) {
        h->dropped++;
        h->busy = 0;
        return;
    }
    rec_id = ps_intern_get(&h->allocs, node, (uint64_t)size, &added);
    if (rec_id == PS_INTERN_FULL) {
        h->dropped++;
        h->busy = 0;
        return;
    }
    if (added) {
        h->alloc_count[rec_id] = 0;
    }
    h->alloc_count[rec_id]++;
    rec.node = node;
    rec.unused = 0;
    rec.size = (uint64_t)size;
    rec.ordinal = h->ordinal;
    if (ps_live_put(&h->live, (uintptr_t)p, &rec) != 0) {
        h->dropped++;  /* counted as allocated, but its free cannot be matched */
    }
    h->busy = 0;
}

static inline void ps_heap_note_alloc(void *p, size_t size)
{
    ps_heap *h = &ps_H;
    if (p == NULL) {
        return;
    }
    h->countdown -= (int64_t)size;
    if (h->countdown <= 0) {
        ps_heap_sample(h, p, size);
    }
}

static inline void ps_heap_note_free(void *p)
{
    ps_heap *h = &ps_H;
    /* the common case, a block we never sampled, costs one probe */
    if (p != NULL && h->live.count != 0 && ps_heap_ours(h)) {
        h->freed += (uint64_t)ps_live_remove(&h->live, (uintptr_t)p);
    }
}

/* ------------------------------------------------------------------ */
/* The wrapper: ctx is the domain's ps_heap_domain. Allocations are    */
/* noted only while that installation is active.                      */
/* ------------------------------------------------------------------ */
static void *ps_heap_malloc(void *ctx, size_t size)
{
    ps_heap_domain *d = (ps_heap_domain *)ctx;
    void *p = d->orig.malloc(d->orig.ctx, size);
    if (d->active) {
        ps_heap_note_alloc(p, size);
    }
    return p;
}

static void *ps_heap_calloc(void *ctx, size_t nelem, size_t elsize)
{
    ps_heap_domain *d = (ps_heap_domain *)ctx;
    void *p = d->orig.calloc(d->orig.ctx, nelem, elsize);
    if (d->active) {
        /* no overflow: the allocator returned NULL if nelem * elsize overflowed */
        ps_heap_note_alloc(p, nelem * elsize);
    }
    return p;
}

/* A realloc is a free of the old block and an allocation of the new one
 * (as tracemalloc counts it): in-use stays exact, and the new size gets
 * its own chance of being sampled. */
static void *ps_heap_realloc(void *ctx, void *ptr, size_t size)
{
    ps_heap_domain *d = (ps_heap_domain *)ctx;
    void *p = d->orig.realloc(d->orig.ctx, ptr, size);
    if (p != NULL && d->active) {
        ps_heap_note_free(ptr);  /* only now: on failure the old block lives on */
        ps_heap_note_alloc(p, size);
    }
    return p;
}

static void ps_heap_free(void *ctx, void *ptr)
{
    ps_heap_domain *d = (ps_heap_domain *)ctx;
    if (d->active) {
        /* forget the record before the address can be handed out again */
        ps_heap_note_free(ptr);
    }
    d->orig.free(d->orig.ctx, ptr);
}

/* The installation on top of both domains, if it is one of ours. */
static ps_heap_gen *ps_heap_top(void)
{
    PyMemAllocatorEx m, o;
    ps_heap_gen *g;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &m);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &o);
    if (m.malloc != ps_heap_malloc || o.malloc != ps_heap_malloc || m.ctx == NULL) {
        return NULL;
    }
    g = (ps_heap_gen *)m.ctx;  /* mem is the first member */
    return o.ctx == (void *)&g->obj ? g : NULL;
}

/* GIL held: take our installations off the top of the chain, restoring
 * what each wrapped. One that someone wrapped over since (tracemalloc
 * started after us, say) stays: their wrapper forwards to it, and taking
 * it out would take them out too; it forwards without sampling. */
static void ps_heap_unwrap(ps_heap *h)
{
    ps_heap_gen *g;
    while ((g = ps_heap_top()) != NULL) {
        PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &g->mem.orig);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &g->obj.orig);
        g->mem.active = g->obj.active = 0;
        if (h->spare == NULL) {
            h->spare = g;  /* nobody else holds it: ours to reuse */
        }
    }
}

/* GIL held: put a fresh installation on top of the chain. */
static int ps_heap_install(ps_heap *h)
{
    PyMemAllocatorEx ours;
    ps_heap_gen *g = h->spare;
    if (g == NULL) {
        g = (ps_heap_gen *)calloc(1, sizeof(ps_heap_gen));
        if (g == NULL) {
            return -1;
        }
    }
    h->spare = NULL;
    /* read the originals before our wrapper is in place, so it never
     * forwards to itself */
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &g->mem.orig);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &g->obj.orig);
    g->mem.active = g->obj.active = 1;
    ours.malloc = ps_heap_malloc;
    ours.calloc = ps_heap_calloc;
    ours.realloc = ps_heap_realloc;
    ours.free = ps_heap_free;
    ours.ctx = &g->mem;
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &ours);
    ours.ctx = &g->obj;
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &ours);
    h->active = g;
    return 0;
}

/* GIL held: stop sampling and take our wrapper out where we can. */
static void ps_heap_deactivate(ps_heap *h)
{
    h->enabled = 0;
    if (h->active != NULL) {
        h->active->mem.active = h->active->obj.active = 0;
        h->active = NULL;
    }
    ps_heap_unwrap(h);
}

/* GIL held: drop the tables and the code objects they keep alive. The
 * session is off (enabled == 0) before this is called. */
static void ps_heap_tables_free(ps_heap *h)
{
    uint32_t i, nframes = h->frames.count;
    uint64_t *codes = h->frames.key_a;
    h->frames.key_a = NULL;
    ps_live_free(&h->live);
    ps_intern_free(&h->nodes);
    ps_intern_free(&h->allocs);
    free(h->alloc_count);
    h->alloc_count = NULL;
    h->alloc_cap = 0;
    free(h->walk);
    h->walk = NULL;
    ps_intern_free(&h->frames);  /* frees key_b and slots; key_a is ours now */
    /* last: a code object's deallocation runs arbitrary frees */
    for (i = 0; i < nframes; i++) {
        Py_XDECREF((PyObject *)(uintptr_t)codes[i]);
    }
    free(codes);
}

/* GIL held: start a session. */
static int ps_heap_start(double rate, int max_depth, uint32_t max_frames, uint32_t max_nodes,
                         uint32_t max_allocs, uint32_t max_live)
{
    ps_heap *h = &ps_H;
    if (h->enabled) {
        return PS_HEAP_ERR_RUNNING;
    }
    ps_heap_tables_free(h);
    h->rate = rate;
    h->max_depth = max_depth;
    h->interp = PyInterpreterState_Main();
    h->ordinal = h->dropped = h->truncated = h->freed = 0;
    h->walk = (uint32_t *)malloc((size_t)max_depth * sizeof(uint32_t));
    if (!h->walk ||
        ps_intern_init(&h->frames, 1024, max_frames) != 0 ||
        ps_intern_init(&h->nodes, 4096, max_nodes) != 0 ||
        ps_intern_init(&h->allocs, 4096, max_allocs) != 0 ||
        ps_heap_reserve_allocs(h, 1024) != 0 ||
        ps_live_init(&h->live, max_live) != 0) {
        ps_heap_tables_free(h);
        return PS_HEAP_ERR_MEMORY;
    }
    h->rng = (uint64_t)ps_monotonic_ns() ^ ((uint64_t)(uintptr_t)h << 17) ^ 0xD1B54A32D192ED03ULL;
    if (h->rng == 0) {
        h->rng = 1;
    }
    h->countdown = ps_heap_interval(h);
    h->start_ns = ps_monotonic_ns();
    h->busy = 0;

    ps_heap_unwrap(h);  /* a passthrough left from an earlier session */
    if (ps_heap_install(h) != 0) {
        ps_heap_tables_free(h);
        return PS_HEAP_ERR_MEMORY;
    }
    h->enabled = 1;
    return PS_HEAP_OK;
}

/* GIL held: end the session and unhook; the tables stay readable until
 * ps_heap_reset(). */
static int ps_heap_stop(void)
{
    ps_heap *h = &ps_H;
    if (!h->enabled) {
        return PS_HEAP_ERR_NOT_RUNNING;
    }
    ps_heap_deactivate(h);
    return PS_HEAP_OK;
}

static void ps_heap_reset(void)
{
    ps_heap *h = &ps_H;
    if (!h->enabled) {
        ps_heap_tables_free(h);
    }
}

/* Is one of our wrappers on top of the MEM or OBJ allocator right now? */
static int ps_heap_hooked(void)
{
    PyMemAllocatorEx m, o;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &m);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &o);
    return m.malloc == ps_heap_malloc || o.malloc == ps_heap_malloc;
}

/* In a child after fork(), GIL held: the child starts with no profiler. */
static void ps_heap_after_fork_child(void)
{
    ps_heap *h = &ps_H;
    ps_heap_deactivate(h);
    h->busy = 0;
    ps_heap_tables_free(h);
}

/* ------------------------------------------------------------------ */
/* A consistent copy of the tables, taken with plain C memory only, so  */
/* that no free running while Python objects are built from it can     */
/* change what is being read. Code objects in the copy hold a reference. */
/* ------------------------------------------------------------------ */
typedef struct {
    uint32_t nframes, nnodes, nallocs, nlive;
    uint64_t *frame_code;   /* PyObject * (a new reference) or 0 */
    uint64_t *frame_key;    /* byte offset, or the synthetic frame's key */
    uint64_t *node_parent;  /* parent + 1, 0 for a root */
    uint64_t *node_frame;
    uint64_t *alloc_node;
    uint64_t *alloc_size;
    uint64_t *alloc_count;
    uint32_t *live_node;
    uint64_t *live_size;
    uint64_t *live_ordinal;
} ps_heap_copy;

static void ps_heap_copy_free(ps_heap_copy *c)
{
    uint32_t i;
    if (c->frame_code) {
        for (i = 0; i < c->nframes; i++) {
            Py_XDECREF((PyObject *)(uintptr_t)c->frame_code[i]);
        }
    }
    free(c->frame_code); free(c->frame_key); free(c->node_parent); free(c->node_frame);
    free(c->alloc_node); free(c->alloc_size); free(c->alloc_count);
    free(c->live_node); free(c->live_size); free(c->live_ordinal);
    memset(c, 0, sizeof(*c));
}

static void *ps_heap_dup(const void *src, size_t n, size_t item)
{
    void *p = malloc(n * item + 1);  /* + 1: never malloc(0) */
    if (p != NULL && n != 0) {
        memcpy(p, src, n * item);
    }
    return p;
}

/* GIL held. Returns 0, or -1 when out of memory (nothing to free then). */
static int ps_heap_copy_tables(ps_heap_copy *c)
{
    ps_heap *h = &ps_H;
    uint32_t i, j = 0;
    memset(c, 0, sizeof(*c));
    c->nframes = h->frames.count;
    c->nnodes = h->nodes.count;
    c->nallocs = h->allocs.count;
    c->nlive = h->live.count;
    c->frame_code = (uint64_t *)ps_heap_dup(h->frames.key_a, c->nframes, sizeof(uint64_t));
    c->frame_key = (uint64_t *)ps_heap_dup(h->frames.key_b, c->nframes, sizeof(uint64_t));
    c->node_parent = (uint64_t *)ps_heap_dup(h->nodes.key_a, c->nnodes, sizeof(uint64_t));
    c->node_frame = (uint64_t *)ps_heap_dup(h->nodes.key_b, c->nnodes, sizeof(uint64_t));
    c->alloc_node = (uint64_t *)ps_heap_dup(h->allocs.key_a, c->nallocs, sizeof(uint64_t));
    c->alloc_size = (uint64_t *)ps_heap_dup(h->allocs.key_b, c->nallocs, sizeof(uint64_t));
    c->alloc_count = (uint64_t *)ps_heap_dup(h->alloc_count, c->nallocs, sizeof(uint64_t));
    c->live_node = (uint32_t *)malloc((size_t)c->nlive * sizeof(uint32_t) + 1);
    c->live_size = (uint64_t *)malloc((size_t)c->nlive * sizeof(uint64_t) + 1);
    c->live_ordinal = (uint64_t *)malloc((size_t)c->nlive * sizeof(uint64_t) + 1);
    if (!c->frame_code || !c->frame_key || !c->node_parent || !c->node_frame ||
        !c->alloc_node || !c->alloc_size || !c->alloc_count ||
        !c->live_node || !c->live_size || !c->live_ordinal) {
        free(c->frame_code);
        c->frame_code = NULL;  /* no references taken yet */
        ps_heap_copy_free(c);
        return -1;
    }
    for (i = 0; h->live.keys != NULL && i <= h->live.mask; i++) {
        if (h->live.keys[i] != 0) {
            c->live_node[j] = h->live.recs[i].node;
            c->live_size[j] = h->live.recs[i].size;
            c->live_ordinal[j] = h->live.recs[i].ordinal;
            j++;
        }
    }
    for (i = 0; i < c->nframes; i++) {
        Py_XINCREF((PyObject *)(uintptr_t)c->frame_code[i]);
    }
    return 0;
}

#endif /* PYSAMPLER_HEAP_H */
