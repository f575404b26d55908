/*
 * tables.h - the raw tables the sampler fills: an interning hash map, and
 * growable columns. Plain C memory only: sampling allocates no Python
 * objects, and grows these arrays by doubling (amortised, bounded by caps).
 *
 * Each table has one writer at a time: the GIL holder on the GIL-holding
 * path, the timer thread on the reader path (core.h). The chunked arrays at
 * the end are the exception: one writer appends, one reader (the pinning
 * step) reads the published prefix, and entries never move.
 */
#ifndef PYSAMPLER_TABLES_H
#define PYSAMPLER_TABLES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"  /* atomics */

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

/* ------------------------------------------------------------------ */
/* Pointer map: address -> 32-bit value, updatable (open addressing).  */
/* ------------------------------------------------------------------ */
typedef struct {
    uint64_t *keys;       /* 0 = empty */
    uint32_t *values;
    uint32_t count;
    uint32_t mask;
} ps_ptrmap;

static int ps_ptrmap_init(ps_ptrmap *m, uint32_t slots)
{
    memset(m, 0, sizeof(*m));
    m->keys = (uint64_t *)calloc(slots, sizeof(uint64_t));
    m->values = (uint32_t *)malloc((size_t)slots * sizeof(uint32_t));
    if (!m->keys || !m->values) {
        free(m->keys); free(m->values);
        memset(m, 0, sizeof(*m));
        return -1;
    }
    m->mask = slots - 1;
    return 0;
}

static void ps_ptrmap_free(ps_ptrmap *m)
{
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof(*m));
}

/* The value stored for `key` (non-zero), or UINT32_MAX. */
static inline uint32_t ps_ptrmap_get(const ps_ptrmap *m, uint64_t key)
{
    uint32_t s;
    if (m->keys == NULL) {
        return UINT32_MAX;
    }
    s = (uint32_t)ps_hash2(key, 0) & m->mask;
    while (m->keys[s] != 0) {
        if (m->keys[s] == key) {
            return m->values[s];
        }
        s = (s + 1) & m->mask;
    }
    return UINT32_MAX;
}

/* Set the value for `key` (non-zero); -1 when memory ran out. */
static int ps_ptrmap_put(ps_ptrmap *m, uint64_t key, uint32_t value)
{
    uint32_t s;
    if ((m->count + 1) * 2 > m->mask + 1) {
        ps_ptrmap bigger;
        uint32_t i;
        if (ps_ptrmap_init(&bigger, (m->mask + 1) * 2) != 0) {
            return -1;
        }
        for (i = 0; i <= m->mask; i++) {
            if (m->keys[i] != 0) {
                uint32_t t = (uint32_t)ps_hash2(m->keys[i], 0) & bigger.mask;
                while (bigger.keys[t] != 0) {
                    t = (t + 1) & bigger.mask;
                }
                bigger.keys[t] = m->keys[i];
                bigger.values[t] = m->values[i];
                bigger.count++;
            }
        }
        ps_ptrmap_free(m);
        *m = bigger;
    }
    s = (uint32_t)ps_hash2(key, 0) & m->mask;
    while (m->keys[s] != 0 && m->keys[s] != key) {
        s = (s + 1) & m->mask;
    }
    if (m->keys[s] == 0) {
        m->keys[s] = key;
        m->count++;
    }
    m->values[s] = value;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Chunked array: entries never move, so one thread may append while   */
/* another reads the entries published before (count, release/acquire). */
/* ------------------------------------------------------------------ */
#define PS_CHUNK_BITS 10
#define PS_CHUNK_LEN (1u << PS_CHUNK_BITS)
#define PS_MAX_CHUNKS 4096   /* 4M entries */

typedef struct {
    char *chunks[PS_MAX_CHUNKS];
    size_t item;
    ps_atomic_t count;    /* published entries */
} ps_chunked;

static void ps_chunked_init(ps_chunked *c, size_t item)
{
    memset(c, 0, sizeof(*c));
    c->item = item;
}

static void ps_chunked_free(ps_chunked *c)
{
    uint32_t i;
    for (i = 0; i < PS_MAX_CHUNKS && c->chunks[i] != NULL; i++) {
        free(c->chunks[i]);
    }
    ps_chunked_init(c, c->item);
}

static inline void *ps_chunked_at(const ps_chunked *c, uint32_t i)
{
    return c->chunks[i >> PS_CHUNK_BITS] + (size_t)(i & (PS_CHUNK_LEN - 1)) * c->item;
}

/* Writer: a zeroed slot for entry `count`, not yet published; NULL when full. */
static void *ps_chunked_next(ps_chunked *c)
{
    uint32_t i = (uint32_t)c->count, k = i >> PS_CHUNK_BITS;
    if (k >= PS_MAX_CHUNKS) {
        return NULL;
    }
    if (c->chunks[k] == NULL) {
        c->chunks[k] = (char *)calloc(PS_CHUNK_LEN, c->item);
        if (c->chunks[k] == NULL) {
            return NULL;
        }
    }
    return ps_chunked_at(c, i);
}

/* Writer: make the entry filled in by ps_chunked_next visible. */
static inline uint32_t ps_chunked_publish(ps_chunked *c)
{
    uint32_t i = (uint32_t)c->count;
    ps_atomic_store(&c->count, (long)i + 1);
    return i;
}

static inline uint32_t ps_chunked_count(const ps_chunked *c)
{
    return (uint32_t)ps_atomic_load((ps_atomic_t *)&c->count);
}

#endif /* PYSAMPLER_TABLES_H */
