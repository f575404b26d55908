/*
 * tables.h - the walk's own hash tables, in plain C memory (the walk runs
 * with the program paused and allocates no Python objects for its state):
 *
 *   hg_ptrmap   address -> node index; every node of the graph, 16 bytes a
 *               slot at load <= 0.7 (23 to 46 bytes a node); also types ->
 *               their names, and the string table's hashes -> indices
 *   hg_idset    node ids handed out, to keep them unique (4 bytes a slot)
 *   hg_bag      the references one object's named edges already cover, so
 *               its tp_traverse adds only the others; cleared per object
 *               by a generation stamp instead of a memset
 *   hg_fifo     the queue of objects numbered and not yet written
 */
#ifndef PYSAMPLER_HG_TABLES_H
#define PYSAMPLER_HG_TABLES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_sampler/tables.h" /* ps_hash2 */

#define HG_NONE 0xFFFFFFFFu

/* ------------------------------------------------------------------ */
/* key and value side by side: one cache miss a lookup, not two (the map
 * outgrows the caches: measured 16% of a 1.3M-object walk in lookups) */
typedef struct {
    uint64_t key; /* 0 = empty: an address, or a nonzero hash */
    uint32_t val;
} hg_slot;

typedef struct {
    hg_slot *slots;
    size_t mask;
    size_t count;
} hg_ptrmap;

static inline size_t hg_ptr_hash(uint64_t p)
{
    return (size_t)ps_hash2(p, 0);
}

static int hg_ptrmap_init(hg_ptrmap *m, size_t expected)
{
    size_t cap = 1024;
    while (cap * 7 < expected * 10) {
        cap <<= 1;
    }
    m->slots = (hg_slot *)calloc(cap, sizeof(hg_slot));
    m->mask = cap - 1;
    m->count = 0;
    return m->slots ? 0 : -1;
}

static void hg_ptrmap_free(hg_ptrmap *m)
{
    free(m->slots);
    m->slots = NULL;
}

static int hg_ptrmap_grow(hg_ptrmap *m)
{
    size_t cap = (m->mask + 1) * 2, i;
    hg_slot *s = (hg_slot *)calloc(cap, sizeof(hg_slot));
    if (!s) {
        return -1;
    }
    for (i = 0; i <= m->mask; i++) {
        if (m->slots[i].key) {
            size_t j = hg_ptr_hash(m->slots[i].key) & (cap - 1);
            while (s[j].key) {
                j = (j + 1) & (cap - 1);
            }
            s[j] = m->slots[i];
        }
    }
    free(m->slots);
    m->slots = s;
    m->mask = cap - 1;
    return 0;
}

static inline uint32_t hg_ptrmap_get(const hg_ptrmap *m, uint64_t key)
{
    size_t j = hg_ptr_hash(key) & m->mask;
    while (m->slots[j].key) {
        if (m->slots[j].key == key) {
            return m->slots[j].val;
        }
        j = (j + 1) & m->mask;
    }
    return HG_NONE;
}

/* The value for key, or val inserted (*added set) if absent; HG_NONE when
 * memory runs out. */
static inline uint32_t hg_ptrmap_put(hg_ptrmap *m, uint64_t key, uint32_t val, int *added)
{
    size_t j;
    *added = 0;
    if ((m->count + 1) * 10 > (m->mask + 1) * 7 && hg_ptrmap_grow(m) < 0) {
        return HG_NONE;
    }
    j = hg_ptr_hash(key) & m->mask;
    while (m->slots[j].key) {
        if (m->slots[j].key == key) {
            return m->slots[j].val;
        }
        j = (j + 1) & m->mask;
    }
    m->slots[j].key = key;
    m->slots[j].val = val;
    m->count++;
    *added = 1;
    return val;
}

/* ------------------------------------------------------------------ */
typedef struct {
    uint32_t *ids; /* 0 = empty */
    size_t mask;
    size_t count;
} hg_idset;

static int hg_idset_init(hg_idset *s, size_t expected)
{
    size_t cap = 1024;
    while (cap * 7 < expected * 10) {
        cap <<= 1;
    }
    s->ids = (uint32_t *)calloc(cap, sizeof(uint32_t));
    s->mask = cap - 1;
    s->count = 0;
    return s->ids ? 0 : -1;
}

static void hg_idset_free(hg_idset *s)
{
    free(s->ids);
    s->ids = NULL;
}

static int hg_idset_grow(hg_idset *s)
{
    size_t cap = (s->mask + 1) * 2, i;
    uint32_t *ids = (uint32_t *)calloc(cap, sizeof(uint32_t));
    if (!ids) {
        return -1;
    }
    for (i = 0; i <= s->mask; i++) {
        if (s->ids[i]) {
            size_t j = hg_ptr_hash(s->ids[i]) & (cap - 1);
            while (ids[j]) {
                j = (j + 1) & (cap - 1);
            }
            ids[j] = s->ids[i];
        }
    }
    free(s->ids);
    s->ids = ids;
    s->mask = cap - 1;
    return 0;
}

/* Claim id, or the next free one after it (skipping 0): ids stay unique
 * within a snapshot even when two addresses fold to the same 32 bits. */
static inline uint32_t hg_idset_claim(hg_idset *s, uint32_t id)
{
    if ((s->count + 1) * 10 > (s->mask + 1) * 7 && hg_idset_grow(s) < 0) {
        return id ? id : 1; /* out of memory: unique no longer guaranteed */
    }
    for (;;) {
        size_t j;
        int taken = 0;
        if (id == 0) {
            id = 1;
        }
        j = hg_ptr_hash(id) & s->mask;
        while (s->ids[j]) {
            if (s->ids[j] == id) {
                taken = 1;
                break;
            }
            j = (j + 1) & s->mask;
        }
        if (!taken) {
            s->ids[j] = id;
            s->count++;
            return id;
        }
        id += 1;
    }
}

/* ------------------------------------------------------------------ */
typedef struct {
    uintptr_t *keys;
    uint32_t *counts;
    uint32_t *stamps;
    size_t mask;
    size_t count;
    uint32_t stamp;
} hg_bag;

static int hg_bag_init(hg_bag *b)
{
    size_t cap = 64;
    b->keys = (uintptr_t *)calloc(cap, sizeof(uintptr_t));
    b->counts = (uint32_t *)calloc(cap, sizeof(uint32_t));
    b->stamps = (uint32_t *)calloc(cap, sizeof(uint32_t));
    b->mask = cap - 1;
    b->count = 0;
    b->stamp = 1;
    return (b->keys && b->counts && b->stamps) ? 0 : -1;
}

static void hg_bag_free(hg_bag *b)
{
    free(b->keys);
    free(b->counts);
    free(b->stamps);
    b->keys = NULL;
    b->counts = NULL;
    b->stamps = NULL;
}

static inline void hg_bag_clear(hg_bag *b)
{
    b->count = 0;
    if (++b->stamp == 0) { /* wrapped: really clear once in 2**32 */
        memset(b->stamps, 0, (b->mask + 1) * sizeof(uint32_t));
        b->stamp = 1;
    }
}

static int hg_bag_grow(hg_bag *b)
{
    size_t cap = (b->mask + 1) * 2, i;
    uintptr_t *k = (uintptr_t *)calloc(cap, sizeof(uintptr_t));
    uint32_t *c = (uint32_t *)calloc(cap, sizeof(uint32_t));
    uint32_t *s = (uint32_t *)calloc(cap, sizeof(uint32_t));
    if (!k || !c || !s) {
        free(k);
        free(c);
        free(s);
        return -1;
    }
    for (i = 0; i <= b->mask; i++) {
        if (b->stamps[i] == b->stamp) {
            size_t j = hg_ptr_hash(b->keys[i]) & (cap - 1);
            while (s[j] == b->stamp) {
                j = (j + 1) & (cap - 1);
            }
            k[j] = b->keys[i];
            c[j] = b->counts[i];
            s[j] = b->stamp;
        }
    }
    free(b->keys);
    free(b->counts);
    free(b->stamps);
    b->keys = k;
    b->counts = c;
    b->stamps = s;
    b->mask = cap - 1;
    return 0;
}

static inline void hg_bag_add(hg_bag *b, uintptr_t key)
{
    size_t j;
    if ((b->count + 1) * 10 > (b->mask + 1) * 7 && hg_bag_grow(b) < 0) {
        return; /* the reference may then show twice: harmless */
    }
    j = hg_ptr_hash(key) & b->mask;
    while (b->stamps[j] == b->stamp) {
        if (b->keys[j] == key) {
            b->counts[j]++;
            return;
        }
        j = (j + 1) & b->mask;
    }
    b->keys[j] = key;
    b->counts[j] = 1;
    b->stamps[j] = b->stamp;
    b->count++;
}

/* Take one occurrence of key out of the bag; whether there was one. */
static inline int hg_bag_take(hg_bag *b, uintptr_t key)
{
    size_t j;
    if (b->count == 0) {
        return 0;
    }
    j = hg_ptr_hash(key) & b->mask;
    while (b->stamps[j] == b->stamp) {
        if (b->keys[j] == key) {
            if (b->counts[j] == 0) {
                return 0;
            }
            b->counts[j]--;
            return 1;
        }
        j = (j + 1) & b->mask;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The walk's queue: keys numbered but not yet written, first in first  */
/* out, in chunks freed as they are read, so it holds the frontier of   */
/* the breadth-first walk, not every node.                            */
/* ------------------------------------------------------------------ */
#define HG_FIFO_CHUNK 8192

typedef struct hg_chunk {
    struct hg_chunk *next;
    uintptr_t keys[HG_FIFO_CHUNK];
} hg_chunk;

typedef struct {
    hg_chunk *head, *tail;
    size_t head_pos, tail_pos; /* read position in head, write position in tail */
} hg_fifo;

static int hg_fifo_push(hg_fifo *q, uintptr_t key)
{
    if (q->tail == NULL || q->tail_pos == HG_FIFO_CHUNK) {
        hg_chunk *c = (hg_chunk *)malloc(sizeof(hg_chunk));
        if (c == NULL) {
            return -1;
        }
        c->next = NULL;
        if (q->tail != NULL) {
            q->tail->next = c;
        } else {
            q->head = c;
            q->head_pos = 0;
        }
        q->tail = c;
        q->tail_pos = 0;
    }
    q->tail->keys[q->tail_pos++] = key;
    return 0;
}

/* The oldest key, or 0 when empty. */
static uintptr_t hg_fifo_pop(hg_fifo *q)
{
    uintptr_t key;
    if (q->head == NULL) {
        return 0;
    }
    if (q->head == q->tail && q->head_pos == q->tail_pos) {
        return 0;
    }
    if (q->head_pos == HG_FIFO_CHUNK) {
        hg_chunk *done = q->head;
        q->head = done->next;
        q->head_pos = 0;
        free(done);
    }
    key = q->head->keys[q->head_pos++];
    return key;
}

static void hg_fifo_free(hg_fifo *q)
{
    while (q->head != NULL) {
        hg_chunk *next = q->head->next;
        free(q->head);
        q->head = next;
    }
    q->tail = NULL;
}

#endif /* PYSAMPLER_HG_TABLES_H */
