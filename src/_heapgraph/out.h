/*
 * out.h - what the graph walk writes: buffered output to a file descriptor,
 * the decimal and JSON-string formatting of .heapsnapshot arrays, and the
 * string table (every distinct name once, in order of first use).
 *
 * Everything here runs while the program is paused, with the GIL held, so
 * it never calls into Python: output goes to write(2) from a fixed buffer,
 * names are built in C memory, and the string table is deduplicated by a
 * 64-bit hash of the name's bytes (a collision, about 1 in 10^7 for two
 * million distinct names, would show one name in place of another; it
 * could not corrupt the file).
 */
#ifndef PYSAMPLER_HG_OUT_H
#define PYSAMPLER_HG_OUT_H

#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#  include <io.h>
#else
#  include <unistd.h>
#endif

#include "_heapgraph/tables.h"

/* 256 KiB per output: few syscalls, bounded memory */
#define HG_OUT_BUF (256 * 1024)

typedef struct {
    int fd;
    char *buf;
    size_t len;
    uint64_t written; /* bytes handed to write(2) so far */
    int err;          /* errno of the first failed write, 0 if none */
    int first;        /* no record written yet in the current section */
} hg_out;

static int hg_out_init(hg_out *o, int fd)
{
    memset(o, 0, sizeof(*o));
    o->fd = fd;
    o->first = 1;
    o->buf = (char *)malloc(HG_OUT_BUF);
    return o->buf == NULL ? -1 : 0;
}

static void hg_out_flush(hg_out *o)
{
    size_t done = 0;
    while (done < o->len && o->err == 0) {
#ifdef _WIN32
        int n = _write(o->fd, o->buf + done, (unsigned int)(o->len - done));
#else
        ssize_t n = write(o->fd, o->buf + done, o->len - done);
#endif
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            o->err = errno ? errno : EIO;
            break;
        }
        done += (size_t)n;
    }
    o->written += done;
    o->len = 0;
}

static void hg_out_free(hg_out *o)
{
    free(o->buf);
    o->buf = NULL;
}

static inline void hg_out_reserve(hg_out *o, size_t n)
{
    if (o->len + n > HG_OUT_BUF) {
        hg_out_flush(o);
    }
}

static inline void hg_out_bytes(hg_out *o, const char *s, size_t n)
{
    while (n > 0) {
        size_t room;
        hg_out_reserve(o, 1);
        room = HG_OUT_BUF - o->len;
        if (room > n) {
            room = n;
        }
        memcpy(o->buf + o->len, s, room);
        o->len += room;
        s += room;
        n -= room;
    }
}

/* Decimal digits of v at p (at least 20 bytes free); returns the length. */
static inline size_t hg_fmt_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

/* One record of a numeric array (a node's 7 fields, an edge's 3), on a
 * line of its own: records are separated by ",\n" within a section, so a
 * section can be placed anywhere in the array by the assembler. */
static inline void hg_out_record(hg_out *o, const uint64_t *v, int n)
{
    int i;
    char *p;
    hg_out_reserve(o, 2 + (size_t)n * 21);
    p = o->buf + o->len;
    if (!o->first) {
        *p++ = ',';
        *p++ = '\n';
    }
    o->first = 0;
    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }
        p += hg_fmt_u64(p, v[i]);
    }
    o->len = (size_t)(p - o->buf);
}

/* Start a new section: its first record has no leading separator. */
static inline void hg_out_section(hg_out *o)
{
    o->first = 1;
}

static inline uint64_t hg_out_tell(hg_out *o)
{
    return o->written + o->len;
}

/* ------------------------------------------------------------------ */
/* Names: built as UTF-8 in a bounded buffer                          */
/* ------------------------------------------------------------------ */

/* Longest name kept, in characters: a longer str is cut and marked with
 * an ellipsis (DevTools shows string contents as node names). */
#define HG_NAME_CHARS 1000
#define HG_NAME_BYTES (HG_NAME_CHARS * 4 + 64)

typedef struct {
    char buf[HG_NAME_BYTES];
    size_t len;
    int full;
} hg_name;

static inline void hg_name_reset(hg_name *nb)
{
    nb->len = 0;
    nb->full = 0;
}

static inline void hg_name_bytes(hg_name *nb, const char *s, size_t n)
{
    if (nb->len + n > HG_NAME_BYTES - 8) {
        n = nb->len >= HG_NAME_BYTES - 8 ? 0 : HG_NAME_BYTES - 8 - nb->len;
        nb->full = 1;
    }
    memcpy(nb->buf + nb->len, s, n);
    nb->len += n;
}

static inline void hg_name_cstr(hg_name *nb, const char *s)
{
    hg_name_bytes(nb, s, strlen(s));
}

static inline void hg_name_u64(hg_name *nb, uint64_t v)
{
    char tmp[24];
    hg_name_bytes(nb, tmp, hg_fmt_u64(tmp, v));
}

static inline void hg_name_i64(hg_name *nb, int64_t v)
{
    if (v < 0) {
        hg_name_bytes(nb, "-", 1);
        hg_name_u64(nb, (uint64_t)0 - (uint64_t)v);
    } else {
        hg_name_u64(nb, (uint64_t)v);
    }
}

static inline void hg_name_codepoint(hg_name *nb, Py_UCS4 c)
{
    char u[4];
    size_t n;
    if (c >= 0xD800 && c <= 0xDFFF) {
        c = 0xFFFD; /* a lone surrogate has no UTF-8 form */
    }
    if (c < 0x80) {
        u[0] = (char)c;
        n = 1;
    } else if (c < 0x800) {
        u[0] = (char)(0xC0 | (c >> 6));
        u[1] = (char)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        u[0] = (char)(0xE0 | (c >> 12));
        u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[2] = (char)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (c >> 18));
        u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[3] = (char)(0x80 | (c & 0x3F));
        n = 4;
    }
    hg_name_bytes(nb, u, n);
}

/* The characters of a str, at most max_chars of them (then an ellipsis).
 * Reads the str's own storage (PyUnicode_DATA): nothing is allocated or
 * cached in the object, unlike PyUnicode_AsUTF8. */
static void hg_name_unicode(hg_name *nb, PyObject *u, Py_ssize_t max_chars)
{
    Py_ssize_t n, i;
    int kind;
    const void *data;
#if PY_VERSION_HEX < 0x030C0000
    /* 3.9-3.11: a legacy (wstr-only) str would need PyUnicode_READY,
     * which allocates; Python code never makes one, so it is not read */
    if (!PyUnicode_IS_READY(u)) {
        hg_name_cstr(nb, "<str>");
        return;
    }
#endif
    n = PyUnicode_GET_LENGTH(u);
    kind = PyUnicode_KIND(u);
    data = PyUnicode_DATA(u);
    if (n > max_chars) {
        n = max_chars;
    }
    if (PyUnicode_IS_ASCII(u)) {
        hg_name_bytes(nb, (const char *)data, (size_t)n);
    } else {
        for (i = 0; i < n && !nb->full; i++) {
            hg_name_codepoint(nb, PyUnicode_READ(kind, data, i));
        }
    }
    if (PyUnicode_GET_LENGTH(u) > max_chars) {
        hg_name_cstr(nb, "\xe2\x80\xa6"); /* U+2026 */
    }
}

/* ------------------------------------------------------------------ */
/* The string table                                                   */
/* ------------------------------------------------------------------ */
typedef struct {
    hg_out out;
    hg_ptrmap index; /* hash of the name's bytes -> its index */
    uint32_t count;
} hg_strings;

static uint64_t hg_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x84222325CBF29CE4ULL ^ (uint64_t)n;
    uint64_t w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = ps_hash2(h, w);
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = ps_hash2(h, w);
    return h ? h : 1;
}

static int hg_strings_init(hg_strings *t, int fd)
{
    memset(t, 0, sizeof(*t));
    if (hg_out_init(&t->out, fd) < 0) {
        return -1;
    }
    return hg_ptrmap_init(&t->index, 4096);
}

static void hg_strings_free(hg_strings *t)
{
    hg_out_free(&t->out);
    hg_ptrmap_free(&t->index);
}

/* Write s (valid UTF-8) as a JSON string; control characters, quotes and
 * backslashes escaped, everything else as is. */
static void hg_out_json_string(hg_out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    hg_out_bytes(o, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        hg_out_bytes(o, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            hg_out_bytes(o, e, 2);
        } else if (c == '\n') {
            hg_out_bytes(o, "\\n", 2);
        } else if (c == '\t') {
            hg_out_bytes(o, "\\t", 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            hg_out_bytes(o, e, 6);
        }
    }
    hg_out_bytes(o, s + run, n - run);
    hg_out_bytes(o, "\"", 1);
}

/* Index of s in the string table, adding it (and writing it) if new.
 * Returns 0 (the empty string, always first) when memory runs out. */
static uint32_t hg_intern(hg_strings *t, const char *s, size_t n)
{
    int added;
    uint32_t index = hg_ptrmap_put(&t->index, hg_hash_bytes(s, n), t->count, &added);
    if (index == HG_NONE) {
        return 0;
    }
    if (added) {
        if (t->count) {
            hg_out_bytes(&t->out, ",\n", 2);
        }
        hg_out_json_string(&t->out, s, n);
        t->count++;
    }
    return index;
}

static inline uint32_t hg_intern_name(hg_strings *t, hg_name *nb)
{
    return hg_intern(t, nb->buf, nb->len);
}

static inline uint32_t hg_intern_cstr(hg_strings *t, const char *s)
{
    return hg_intern(t, s, strlen(s));
}

#endif /* PYSAMPLER_HG_OUT_H */
