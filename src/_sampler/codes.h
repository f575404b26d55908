/*
 * codes.h - the objects the frame table refers to (code objects, and the
 * task names and awaited types of asyncio frames), and how code objects seen
 * without the GIL are kept alive until the profile is built.
 *
 * A frame is (object id, instruction offset). Names and lines are resolved
 * at stop() with the GIL (co_qualname, PyCode_Addr2Line), so every object in
 * this table must still be the object it was when a sample named it.
 *
 * On the GIL-holding path that is simple: the object is INCREFed when first
 * seen (ps_codes_pinned), and a pointer can never come to mean another
 * object while we hold a reference.
 *
 * The GIL-free reader (reader.h) cannot INCREF: without the GIL a reference
 * count is not ours to touch. So:
 *   1. When the timer first sees a code pointer, it copies (saferead.h) the
 *      object's header: ob_type must be &PyCode_Type or the pointer was
 *      garbage (a torn read) and the sample is dropped. It keeps a
 *      fingerprint: ob_type, co_name, co_qualname, co_filename, co_linetable,
 *      co_firstlineno, the code length. The entry waits "to pin".
 *   2. The pinning step (ps_codes_pin) runs holding the GIL, soon after
 *      (core.h: a pending call, or the fallback thread, rate-limited; and at
 *      stop). Under the GIL no object can be freed concurrently (every
 *      deallocation runs under it). It copies the header again and INCREFs
 *      the object only if the fingerprint is unchanged and the reference
 *      count is plausible. Why that is enough to tell a live code object
 *      from the memory of a dead one:
 *        - a freed code object of <= 512 bytes goes back to pymalloc, which
 *          writes its free-list link into the first word (ob_refcnt): NULL
 *          or an address inside the same 16 KiB pool, never a small count;
 *        - a bigger one goes back to the C allocator, which overwrites the
 *          first two words (glibc: the tcache link and key, or fd/bk), so
 *          ob_type no longer reads &PyCode_Type;
 *        - memory reused by another object has another type or fingerprint;
 *          memory returned to the OS cannot be copied at all;
 *        - immortal code objects (3.12+) have a large fixed count, below
 *          2^40 like every real count (3.14+: see ps_refcnt_plausible,
 *          which reads the word whole).
 *      A code object freed and a new one compiled from the same source at
 *      the same address pass (same names, file, line table pointer): their
 *      names and lines are the same, which is all the profile keeps.
 *      Entries that fail become a visible "[code object freed during the
 *      profile]" frame, never a wrong name.
 *   3. A pointer whose entry failed gets a new entry when seen again.
 */
#ifndef PYSAMPLER_CODES_H
#define PYSAMPLER_CODES_H

#include <Python.h>

#include "platform.h"
#include "saferead.h"
#include "tables.h"

enum { PS_CODE_PENDING = 0, PS_CODE_PINNED = 1, PS_CODE_FREED = 2 };

#define PS_NO_OBJECT 0xFFFFFFFFu   /* object id of the "truncated" marker */
#define PS_FREED_CODE_NAME "[code object freed during the profile]"

typedef struct {
    uintptr_t type, name, qualname, filename, linetable;
    int firstlineno;
    int32_t units;            /* code length in code units */
    int32_t firsttraceable;   /* index of the first traceable instruction */
} ps_code_print;

typedef struct {
    uintptr_t ptr;
    ps_code_print print;      /* reader path only */
    ps_atomic_t status;
} ps_object;

typedef struct {
    ps_chunked table;         /* ps_object by id; appended by one writer */
    ps_ptrmap current;        /* address -> id of its live entry (writer's) */
    uint32_t pinned_upto;     /* ids below this went through the pin step */
    uint64_t freed;           /* entries that failed their pin step */
} ps_codes;

static int ps_codes_init(ps_codes *C)
{
    ps_chunked_init(&C->table, sizeof(ps_object));
    C->pinned_upto = 0;
    C->freed = 0;
    return ps_ptrmap_init(&C->current, 1024);
}

static inline ps_object *ps_codes_at(ps_codes *C, uint32_t id)
{
    return (ps_object *)ps_chunked_at(&C->table, id);
}

static inline uint32_t ps_codes_count(ps_codes *C)
{
    return ps_chunked_count(&C->table);
}

/* GIL held: release every pinned object and empty the table. */
static void ps_codes_free(ps_codes *C)
{
    uint32_t i, n = ps_codes_count(C);
    for (i = 0; i < n; i++) {
        ps_object *o = ps_codes_at(C, i);
        if (ps_atomic_load(&o->status) == PS_CODE_PINNED) {
            Py_DECREF((PyObject *)o->ptr);
        }
    }
    ps_chunked_free(&C->table);
    ps_ptrmap_free(&C->current);
    C->pinned_upto = 0;
}

/* GIL held (the GIL-holding path, and asyncio frames): the id of `obj`,
 * taking a reference on first sight. PS_NO_OBJECT when the table is full. */
static uint32_t ps_codes_pinned(ps_codes *C, PyObject *obj)
{
    uint32_t id = ps_ptrmap_get(&C->current, (uint64_t)(uintptr_t)obj);
    ps_object *o;
    if (id != UINT32_MAX) {
        return id;
    }
    o = (ps_object *)ps_chunked_next(&C->table);
    if (o == NULL) {
        return PS_NO_OBJECT;
    }
    Py_INCREF(obj);  /* released by ps_codes_free */
    o->ptr = (uintptr_t)obj;
    o->status = PS_CODE_PINNED;
    id = ps_chunked_publish(&C->table);
    /* on failure the entry stays pinned and is simply not found again */
    (void)ps_ptrmap_put(&C->current, (uint64_t)(uintptr_t)obj, id);
    return id;
}

#ifdef PS_HAVE_READER
/* Copy a code object's header; returns 0 and fills *print (and *head, the
 * object's whole first word: the reference count and, 3.14+, its flags)
 * when it reads as a code object. */
static int ps_code_read_print(uintptr_t ptr, ps_code_print *print, uint64_t *head)
{
    union {
        PyCodeObject code;
        char bytes[offsetof(PyCodeObject, co_code_adaptive)];
    } u;
    if (ptr == 0 || (ptr & (sizeof(void *) - 1)) != 0 ||
        ps_safe_read(u.bytes, (const void *)ptr, sizeof(u.bytes)) != 0) {
        return -1;
    }
    if ((uintptr_t)Py_TYPE((PyObject *)&u.code) != (uintptr_t)&PyCode_Type) {
        return -1;
    }
    memset(print, 0, sizeof(*print));
    print->type = (uintptr_t)&PyCode_Type;
    print->name = (uintptr_t)u.code.co_name;
    print->qualname = (uintptr_t)u.code.co_qualname;
    print->filename = (uintptr_t)u.code.co_filename;
    print->linetable = (uintptr_t)u.code.co_linetable;
    print->firstlineno = u.code.co_firstlineno;
    print->units = (int32_t)Py_SIZE((PyObject *)&u.code);
    print->firsttraceable = u.code._co_firsttraceable;
    if (head != NULL) {
        /* the word itself, not ob_refcnt: 3.14+ declare ob_refcnt as its
         * low 32 bits, which cannot tell a count from a free-list link */
        uint64_t w = 0;
        memcpy(&w, u.bytes, sizeof(void *) < sizeof(w) ? sizeof(void *) : sizeof(w));
        *head = w;
    }
    return 0;
}

/* A first word (the reference count) that a live object can have (see the
 * top comment): not 0, not a free-list link into the object's own pool,
 * not a pointer.
 *
 * 3.14+ (64-bit) split the word: the count in the low 32 bits, an overflow
 * count (always 0 in practice) in the next 16, flags in the top 16. Reading
 * only the 32-bit ob_refcnt, the low half of a free-list link passed for a
 * count, and the pinning step INCREFed freed memory: it bumped the link,
 * and pymalloc later followed it (segfaults of a spawned uvicorn worker
 * importing while profiled: 1 run in 3 of test_group's uvicorn case on
 * 3.14). A link, a user-space pointer, has bits set in 32-47; a count does
 * not. */
static inline int ps_refcnt_plausible(uint64_t head, uintptr_t ptr)
{
    uintptr_t u = (uintptr_t)head;
    if (u + ((uintptr_t)1 << 20) >= ptr && u <= ptr + ((uintptr_t)1 << 20)) {
        return 0;  /* a link into the object's own pool (or NULL near 0) */
    }
#  if SIZEOF_VOID_P >= 8 && PY_VERSION_HEX >= 0x030E0000
    return (head & 0xFFFFFFFFu) != 0 && ((head >> 32) & 0xFFFFu) == 0;
#  elif SIZEOF_VOID_P >= 8
    return (int64_t)head > 0 && head < ((uint64_t)1 << 40);
#  else
    return (int32_t)head > 0;
#  endif
}

/* Timer thread: the entry of the code object at `ptr`, registering (and
 * fingerprinting) it on first sight. Returns the id, or PS_NO_OBJECT when
 * `ptr` does not read as a code object or the table is full; *added tells
 * that the pinning step has work. */
static uint32_t ps_codes_seen(ps_codes *C, uintptr_t ptr, int *added)
{
    uint32_t id = ps_ptrmap_get(&C->current, (uint64_t)ptr);
    ps_object *o;
    ps_code_print print;
    if (id != UINT32_MAX) {
        o = ps_codes_at(C, id);
        if (ps_atomic_load(&o->status) != PS_CODE_FREED) {
            return id;
        }
    }
    if (ps_code_read_print(ptr, &print, NULL) != 0) {
        return PS_NO_OBJECT;
    }
    o = (ps_object *)ps_chunked_next(&C->table);
    if (o == NULL) {
        return PS_NO_OBJECT;
    }
    o->ptr = ptr;
    o->print = print;
    o->status = PS_CODE_PENDING;
    id = ps_chunked_publish(&C->table);
    if (ps_ptrmap_put(&C->current, (uint64_t)ptr, id) != 0) {
        return PS_NO_OBJECT;  /* the entry stays, unused, and is pinned or not */
    }
    *added = 1;
    return id;
}

/* GIL held: pin every entry published since the last call (see the top
 * comment). Safe while the timer appends: entries never move, and only
 * this step (serialised by the GIL) writes their status. */
static void ps_codes_pin(ps_codes *C)
{
    uint32_t i, n = ps_codes_count(C);
    for (i = C->pinned_upto; i < n; i++) {
        ps_object *o = ps_codes_at(C, i);
        ps_code_print now;
        uint64_t head = 0;
        if (ps_atomic_load(&o->status) != PS_CODE_PENDING) {
            continue;
        }
        if (ps_code_read_print(o->ptr, &now, &head) == 0 &&
            memcmp(&now, &o->print, sizeof(now)) == 0 && ps_refcnt_plausible(head, o->ptr)) {
            Py_INCREF((PyObject *)o->ptr);
            ps_atomic_store(&o->status, PS_CODE_PINNED);
        } else {
            ps_atomic_store(&o->status, PS_CODE_FREED);
            C->freed++;
        }
    }
    C->pinned_upto = n;
}

/* Does the pinning step have work? (any thread) */
static inline int ps_codes_unpinned(ps_codes *C)
{
    return ps_codes_count(C) != C->pinned_upto;
}
#endif /* PS_HAVE_READER */

#endif /* PYSAMPLER_CODES_H */
