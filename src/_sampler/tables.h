/*
 * tables.h - the raw tables the sampler fills: an interning hash map, and
 * growable columns. Plain C memory only: sampling allocates no Python
 * objects, and grows these arrays by doubling (amortised, bounded by caps).
 *
 * Callers hold the GIL for every call here; the GIL is the lock.
 */
#ifndef PYSAMPLER_TABLES_H
#define PYSAMPLER_TABLES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Interning map: (a, b) -> dense id 0..n-1. Open addressing, linear    */
/* probing, load factor <= 1/2. Keys are stored in id order, so the     */
/* key columns double as the table itself (id -> key).                */
/* ------------------------------------------------------------------ */
typedef struct {
    uint64_t *key_a;      /* by id */
    uint64_t *key_b;      /* by id */
    uint32_t count;       /* ids handed out */
    uint32_t key_cap;     /* allocated length of key_a/key_b */
    uint32_t limit;       /* most ids ever handed out */
    uint32_t *slots;      /* id + 1, 0 = empty */
    uint32_t slot_mask;   /* slots length - 1 (a power of two) */
} ps_intern;

#define PS_INTERN_FULL 0xFFFFFFFFu

static inline uint64_t ps_hash2(uint64_t a, uint64_t b)
{
    /* splitmix64 finaliser over a mix of both words */
    uint64_t z = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int ps_intern_init(ps_intern *m, uint32_t initial, uint32_t limit)
{
    uint32_t slots = 16;
    memset(m, 0, sizeof(*m));
    while (slots < initial * 2) {
        slots <<= 1;
    }
    m->slots = (uint32_t *)calloc(slots, sizeof(uint32_t));
    m->key_a = (uint64_t *)malloc((size_t)(slots / 2) * sizeof(uint64_t));
    m->key_b = (uint64_t *)malloc((size_t)(slots / 2) * sizeof(uint64_t));
    if (!m->slots || !m->key_a || !m->key_b) {
        free(m->slots); free(m->key_a); free(m->key_b);
        memset(m, 0, sizeof(*m));
        return -1;
    }
    m->slot_mask = slots - 1;
    m->key_cap = slots / 2;
    m->limit = limit;
    return 0;
}

static void ps_intern_free(ps_intern *m)
{
    free(m->slots);
    free(m->key_a);
    free(m->key_b);
    memset(m, 0, sizeof(*m));
}

static int ps_intern_grow(ps_intern *m)
{
    uint32_t new_slots = (m->slot_mask + 1) * 2;
    uint32_t *slots = (uint32_t *)calloc(new_slots, sizeof(uint32_t));
    uint64_t *ka, *kb;
    uint32_t i;
    if (!slots) {
        return -1;
    }
    ka = (uint64_t *)realloc(m->key_a, (size_t)(new_slots / 2) * sizeof(uint64_t));
    if (!ka) {
        free(slots);
        return -1;
    }
    m->key_a = ka;
    kb = (uint64_t *)realloc(m->key_b, (size_t)(new_slots / 2) * sizeof(uint64_t));
    if (!kb) {
        free(slots);
        return -1;
    }
    m->key_b = kb;
    for (i = 0; i < m->count; i++) {
        uint32_t s = (uint32_t)ps_hash2(ka[i], kb[i]) & (new_slots - 1);
        while (slots[s] != 0) {
            s = (s + 1) & (new_slots - 1);
        }
        slots[s] = i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->slot_mask = new_slots - 1;
    m->key_cap = new_slots / 2;
    return 0;
}

/* Look up (a, b); add it when absent. Sets *added when a new id was handed
 * out. Returns the id, or PS_INTERN_FULL when the limit is reached or memory
 * ran out (the caller drops the sample and counts it). */
static uint32_t ps_intern_get(ps_intern *m, uint64_t a, uint64_t b, int *added)
{
    uint32_t s = (uint32_t)ps_hash2(a, b) & m->slot_mask;
    uint32_t id;
    *added = 0;
    for (;;) {
        uint32_t v = m->slots[s];
        if (v == 0) {
            break;
        }
        if (m->key_a[v - 1] == a && m->key_b[v - 1] == b) {
            return v - 1;
        }
        s = (s + 1) & m->slot_mask;
    }
    if (m->count >= m->limit) {
        return PS_INTERN_FULL;
    }
    if (m->count >= m->key_cap) {
        if (ps_intern_grow(m) != 0) {
            return PS_INTERN_FULL;
        }
        /* re-probe for a free slot in the grown table */
        s = (uint32_t)ps_hash2(a, b) & m->slot_mask;
        while (m->slots[s] != 0) {
            s = (s + 1) & m->slot_mask;
        }
    }
    id = m->count++;
    m->key_a[id] = a;
    m->key_b[id] = b;
    m->slots[s] = id + 1;
    *added = 1;
    return id;
}

/* ------------------------------------------------------------------ */
/* Sample columns: one row per (sampling event, thread).              */
/* ------------------------------------------------------------------ */
typedef struct {
    int32_t *stack;      /* leaf node id in the stack tree */
    int32_t *thread;     /* index into the thread table */
    int64_t *time_ns;    /* monotonic time of the sampling event */
    int64_t *cpu_ns;     /* CPU time the thread used since its last sample */
    int64_t *wall_ns;    /* wall time since the previous sampling event */
    int32_t *nsamples;   /* samples the row stands for (Profile.count) */
    size_t count;
    size_t cap;
    size_t limit;
} ps_samples;

static void ps_samples_free(ps_samples *s)
{
    free(s->stack); free(s->thread); free(s->time_ns); free(s->cpu_ns); free(s->wall_ns);
    free(s->nsamples);
    memset(s, 0, sizeof(*s));
}

static int ps_samples_init(ps_samples *s, size_t limit)
{
    memset(s, 0, sizeof(*s));
    s->limit = limit;
    return 0;
}

static int ps_grow_column(void **col, size_t new_cap, size_t item)
{
    void *p = realloc(*col, new_cap * item);
    if (!p) {
        return -1;
    }
    *col = p;
    return 0;
}

/* Append a row; returns -1 when full (the caller counts a drop). */
static int ps_samples_append(ps_samples *s, int32_t stack, int32_t thread,
                             int64_t time_ns, int64_t cpu_ns, int64_t wall_ns)
{
    if (s->count >= s->cap) {
        size_t new_cap = s->cap ? s->cap * 2 : 4096;
        if (s->count >= s->limit) {
            return -1;
        }
        if (new_cap > s->limit) {
            new_cap = s->limit;
        }
        /* grow column by column; a failure leaves every column at least
         * s->count long, so the table stays consistent */
        if (ps_grow_column((void **)&s->stack, new_cap, sizeof(int32_t)) ||
            ps_grow_column((void **)&s->thread, new_cap, sizeof(int32_t)) ||
            ps_grow_column((void **)&s->time_ns, new_cap, sizeof(int64_t)) ||
            ps_grow_column((void **)&s->cpu_ns, new_cap, sizeof(int64_t)) ||
            ps_grow_column((void **)&s->wall_ns, new_cap, sizeof(int64_t)) ||
            ps_grow_column((void **)&s->nsamples, new_cap, sizeof(int32_t))) {
            return -1;
        }
        s->cap = new_cap;
    }
    s->stack[s->count] = stack;
    s->thread[s->count] = thread;
    s->time_ns[s->count] = time_ns;
    s->cpu_ns[s->count] = cpu_ns;
    s->wall_ns[s->count] = wall_ns;
    s->nsamples[s->count] = 1;  /* a new row holds one sample */
    s->count++;
    return 0;
}

#endif /* PYSAMPLER_TABLES_H */
