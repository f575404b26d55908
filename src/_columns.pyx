# cython: language_level=3, boundscheck=False, wraparound=False
"""Column kernels: the loops over every sample row that building and writing
a profile needs, on ``array.array`` columns.

A 10-minute profile at 1 kHz of 8 threads has about 4.8 million rows. numpy
would do these loops, but importing it costs a host process +27 MiB RSS,
+120 ms start-up and several percent on allocation-heavy code for the rest
of its life; pure-Python loops over millions of rows take seconds. So the
few loops that touch every row are here, in C, and everything above them
stays plain Python.

Every kernel takes one-dimensional columns of int32 or int64 (float64 where
it says so): ``array.array`` 'i', 'q' ('d'), or anything else exporting such
a buffer. It returns new ``array.array`` columns and keeps no reference to
what it was given. Indexes are checked: a bad one raises, it is never
followed. The loops run without the GIL, so the program's threads run
while a profile is built.

No fused types in ``def`` functions here: Cython's dispatch for them
imports numpy when it is installed, which is what this module exists to
avoid. A column's element type is read per element instead (a branch that
is always taken the same way, so it costs next to nothing).
"""

cimport cython
from cpython cimport array
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
from cpython.unicode cimport Py_UCS1, PyUnicode_1BYTE_DATA, PyUnicode_New
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import array

cdef enum:
    INT32 = 4
    INT64 = 8
    FLOAT64 = -8

cdef array.array _INT32 = array.array("i")
cdef array.array _INT64 = array.array("q")
cdef array.array _FLOAT64 = array.array("d")
if _INT32.itemsize != 4:
    raise ImportError("pysampler needs a 4-byte C int")


cdef struct View:
    const char *data
    Py_ssize_t n
    int kind


cdef class _Held:
    """A column's buffer, held (the exporter cannot resize it) while a
    kernel reads it."""

    cdef Py_buffer buf
    cdef bint held
    cdef View view

    def __cinit__(self, object obj, bint floats=False):
        cdef bytes fmt
        PyObject_GetBuffer(obj, &self.buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        self.held = True
        if self.buf.ndim != 1:
            raise ValueError("a column must be one-dimensional")
        fmt = (self.buf.format or b"B").lstrip(b"@=<>!")
        if fmt in (b"i", b"l", b"q", b"n") and self.buf.itemsize in (4, 8):
            self.view.kind = <int>self.buf.itemsize
        elif floats and fmt == b"d":
            self.view.kind = FLOAT64
        else:
            raise TypeError(f"a column must hold int32 or int64 values, not {fmt!r}")
        self.view.data = <const char *>self.buf.buf
        self.view.n = self.buf.len // self.buf.itemsize

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.buf)


cdef inline int64_t _get(View c, Py_ssize_t i) noexcept nogil:
    if c.kind == INT32:
        return (<const int32_t *>c.data)[i]
    return (<const int64_t *>c.data)[i]


cdef inline double _getf(View c, Py_ssize_t i) noexcept nogil:
    if c.kind == FLOAT64:
        return (<const double *>c.data)[i]
    return <double>_get(c, i)


cdef array.array _new(int kind, Py_ssize_t n, bint zero=False):
    if kind == INT32:
        return array.clone(_INT32, n, zero)
    if kind == FLOAT64:
        return array.clone(_FLOAT64, n, zero)
    return array.clone(_INT64, n, zero)


cdef inline void _put(void *data, int kind, Py_ssize_t i, int64_t x) noexcept nogil:
    if kind == INT32:
        (<int32_t *>data)[i] = <int32_t>x
    else:
        (<int64_t *>data)[i] = x


def take(values, index):
    """``values[index[i]]`` for each i, in the type of ``values``.

    Raises:
        IndexError: an index is negative or past the end of ``values``.
    """
    cdef _Held hv = _Held(values), hi = _Held(index)
    cdef View v = hv.view, ix = hi.view
    cdef Py_ssize_t i, bad = -1
    cdef int64_t j
    cdef array.array out = _new(v.kind, ix.n)
    cdef void *o = out.data.as_voidptr
    with nogil:
        for i in range(ix.n):
            j = _get(ix, i)
            if j < 0 or j >= v.n:
                bad = i
                break
            _put(o, v.kind, i, _get(v, j))
    if bad >= 0:
        raise IndexError(f"index {_get(ix, bad)} is out of range for {v.n} values")
    return out


def stats(values):
    """(smallest, largest, sum) of an integer column; (0, -1, 0) when it is
    empty."""
    cdef _Held h = _Held(values)
    cdef View c = h.view
    cdef Py_ssize_t i
    cdef int64_t lo, hi, x
    # the sum as high and low 32-bit halves, neither of which can overflow
    # for fewer than 2**31 rows; Python adds them up exactly
    cdef int64_t high = 0, low = 0
    if c.n == 0:
        return 0, -1, 0
    lo = hi = _get(c, 0)
    with nogil:
        for i in range(c.n):
            x = _get(c, i)
            if x < lo:
                lo = x
            if x > hi:
                hi = x
            high += x >> 32
            low += x & 0xFFFFFFFFLL
    return lo, hi, (<object>high << 32) + low


def first_parent_not_before(parent):
    """The first node whose parent id is not smaller than its own, or -1.
    A stack tree lists every parent before its children."""
    cdef _Held h = _Held(parent)
    cdef View p = h.view
    cdef Py_ssize_t i, bad = -1
    with nogil:
        for i in range(p.n):
            if _get(p, i) >= i:
                bad = i
                break
    return bad


def bincount(index, weights, Py_ssize_t length):
    """Sum of ``weights`` per value of ``index`` (0 to ``length - 1``):
    int64 sums for integer weights, float64 for float weights.

    Raises:
        IndexError: an index is outside [0, length).
    """
    cdef _Held hi = _Held(index), hw = _Held(weights, True)
    cdef View ix = hi.view, w = hw.view
    cdef Py_ssize_t i, bad = -1
    cdef int64_t j
    if w.n != ix.n:
        raise ValueError("index and weights differ in length")
    cdef array.array out = _new(FLOAT64 if w.kind == FLOAT64 else INT64, length, True)
    cdef double *fo = out.data.as_doubles
    cdef int64_t *io = <int64_t *>out.data.as_voidptr
    with nogil:
        for i in range(ix.n):
            j = _get(ix, i)
            if j < 0 or j >= length:
                bad = i
                break
            if w.kind == FLOAT64:
                fo[j] += _getf(w, i)
            else:
                io[j] += _get(w, i)
    if bad >= 0:
        raise IndexError(f"index {_get(ix, bad)} is out of range for {length} bins")
    return out


# -- grouping rows by a pair of keys -------------------------------------

cdef inline uint64_t _hash2(uint64_t a, uint64_t b) noexcept nogil:
    # splitmix64's finaliser over a mix of both keys (as tables.h interns)
    cdef uint64_t z = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL + (a << 6) + (a >> 2))
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef struct _Groups:
    int64_t *a
    int64_t *b
    int64_t *c
    int64_t *v
    Py_ssize_t count
    Py_ssize_t cap
    int64_t *slots  # group + 1, 0 when empty
    Py_ssize_t mask


cdef int _groups_grow(_Groups *g) noexcept nogil:
    """Double the group columns and the slot table (which so stays at most
    half full); -1 when out of memory."""
    cdef Py_ssize_t cap = g.cap * 2 if g.cap else 1024
    cdef Py_ssize_t nslots = cap * 2, i, s
    cdef int64_t *slots
    cdef void *p
    cdef int64_t **column[4]
    cdef int k
    column[0], column[1], column[2], column[3] = &g.a, &g.b, &g.c, &g.v
    for k in range(4):
        p = realloc(column[k][0], cap * sizeof(int64_t))
        if p == NULL:
            return -1
        column[k][0] = <int64_t *>p
    slots = <int64_t *>malloc(nslots * sizeof(int64_t))
    if slots == NULL:
        return -1
    for i in range(nslots):
        slots[i] = 0
    for i in range(g.count):
        s = <Py_ssize_t>(_hash2(<uint64_t>g.a[i], <uint64_t>g.b[i]) & <uint64_t>(nslots - 1))
        while slots[s] != 0:
            s = (s + 1) & (nslots - 1)
        slots[s] = i + 1
    free(g.slots)
    g.slots = slots
    g.mask = nslots - 1
    g.cap = cap
    return 0


cdef array.array _column_of(const int64_t *src, Py_ssize_t n, int kind):
    cdef array.array out = _new(kind, n)
    cdef Py_ssize_t i
    if kind == INT64:
        if n:
            memcpy(out.data.as_voidptr, src, n * sizeof(int64_t))
    else:
        for i in range(n):
            out.data.as_ints[i] = <int32_t>src[i]
    return out


def group_sums(a, b, c, v, bint inverse=False):
    """Group rows by the pair (a, b) and add up ``c`` and ``v`` per group.

    Groups are numbered in the order of their first row.

    Returns:
        (a, b, sum of c, sum of v) per group (a and b in their own types,
        the sums int64), and the group of every row (an int64 column) when
        ``inverse`` is true, else None.
    """
    cdef _Held ha = _Held(a), hb = _Held(b), hc = _Held(c), hv = _Held(v)
    cdef View ka = ha.view, kb = hb.view, wc = hc.view, wv = hv.view
    cdef Py_ssize_t i, s, n = ka.n
    cdef int64_t x, y, g
    cdef _Groups groups
    cdef int failed = 0
    cdef array.array rows = None
    cdef int64_t *row_group = NULL
    if kb.n != n or wc.n != n or wv.n != n:
        raise ValueError("group_sums: columns differ in length")
    if inverse:
        rows = _new(INT64, n)
        row_group = <int64_t *>rows.data.as_voidptr
    groups.a = groups.b = groups.c = groups.v = groups.slots = NULL
    groups.count = groups.cap = groups.mask = 0
    try:
        with nogil:
            if _groups_grow(&groups) != 0:
                failed = 1
            i = 0
            while i < n and not failed:
                x = _get(ka, i)
                y = _get(kb, i)
                s = <Py_ssize_t>(_hash2(<uint64_t>x, <uint64_t>y) & <uint64_t>groups.mask)
                while True:
                    g = groups.slots[s] - 1
                    if g < 0 or (groups.a[g] == x and groups.b[g] == y):
                        break
                    s = (s + 1) & groups.mask
                if g < 0:
                    if groups.count == groups.cap:
                        if _groups_grow(&groups) != 0:
                            failed = 1
                            break
                        s = <Py_ssize_t>(_hash2(<uint64_t>x, <uint64_t>y) & <uint64_t>groups.mask)
                        while groups.slots[s] != 0:
                            s = (s + 1) & groups.mask
                    g = groups.count
                    groups.count += 1
                    groups.slots[s] = g + 1
                    groups.a[g] = x
                    groups.b[g] = y
                    groups.c[g] = 0
                    groups.v[g] = 0
                groups.c[g] += _get(wc, i)
                groups.v[g] += _get(wv, i)
                if row_group != NULL:
                    row_group[i] = g
                i += 1
        if failed:
            raise MemoryError("cannot allocate the groups of a profile's rows")
        return (
            _column_of(groups.a, groups.count, ka.kind),
            _column_of(groups.b, groups.count, kb.kind),
            _column_of(groups.c, groups.count, INT64),
            _column_of(groups.v, groups.count, INT64),
            rows,
        )
    finally:
        free(groups.a)
        free(groups.b)
        free(groups.c)
        free(groups.v)
        free(groups.slots)


# -- ordering rows ----------------------------------------------------------

cdef void _merge_sort(int64_t *idx, int64_t *tmp, Py_ssize_t n, View key) noexcept nogil:
    """Sort ``idx`` (row numbers) by ``key[row]``, stably. ``tmp`` holds n."""
    cdef Py_ssize_t width, lo, mid, hi, i, j, k, start
    cdef int64_t x, kx
    cdef int64_t *src = idx
    cdef int64_t *dst = tmp
    cdef int64_t *swap
    # insertion sort of blocks of 16, then merges of doubling width
    start = 0
    while start < n:
        hi = start + 16 if start + 16 < n else n
        for i in range(start + 1, hi):
            x = idx[i]
            kx = _get(key, x)
            j = i
            while j > start and _get(key, idx[j - 1]) > kx:
                idx[j] = idx[j - 1]
                j -= 1
            idx[j] = x
        start = hi
    width = 16
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width if lo + width < n else n
            hi = lo + 2 * width if lo + 2 * width < n else n
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if _get(key, src[j]) < _get(key, src[i]):
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        swap = src
        src = dst
        dst = swap
        width *= 2
    if src != idx:
        memcpy(idx, src, n * sizeof(int64_t))


def order_by(first, second):
    """Row numbers sorted by (first, second), stably (rows equal in both
    keep their order), as an int64 column.

    Linear for what profiles hold: rows already in order of ``first``
    (time) with few out of order within a run, or a ``first`` of few
    distinct small values (thread indexes), counted into place.
    """
    cdef _Held h1 = _Held(first), h2 = _Held(second)
    cdef View k1 = h1.view, k2 = h2.view
    cdef Py_ssize_t i, j, n = k1.n
    cdef int64_t lo, hi, span = -1, x
    cdef bint in_order = True, run_in_order
    cdef array.array out = _new(INT64, n)
    cdef int64_t *o = <int64_t *>out.data.as_voidptr
    cdef int64_t *tmp = NULL
    cdef int64_t *pos = NULL
    if k2.n != n:
        raise ValueError("order_by: columns differ in length")
    if n == 0:
        return out
    tmp = <int64_t *>malloc(n * sizeof(int64_t))
    if tmp == NULL:
        raise MemoryError()
    try:
        with nogil:
            lo = hi = _get(k1, 0)
            for i in range(1, n):
                x = _get(k1, i)
                if x < _get(k1, i - 1):
                    in_order = False
                if x < lo:
                    lo = x
                if x > hi:
                    hi = x
            if <uint64_t>hi - <uint64_t>lo < <uint64_t>(4 * n + 1024):
                span = hi - lo + 1
        if in_order:
            for i in range(n):
                o[i] = i
        elif span > 0:
            # a counting sort: stable, linear
            pos = <int64_t *>malloc((span + 1) * sizeof(int64_t))
            if pos == NULL:
                raise MemoryError()
            with nogil:
                for i in range(span + 1):
                    pos[i] = 0
                for i in range(n):
                    pos[_get(k1, i) - lo + 1] += 1
                for i in range(span):
                    pos[i + 1] += pos[i]
                for i in range(n):
                    x = _get(k1, i) - lo
                    o[pos[x]] = i
                    pos[x] += 1
        else:
            with nogil:
                for i in range(n):
                    o[i] = i
                _merge_sort(o, tmp, n, k1)
        with nogil:
            # within each run of equal ``first``, order by ``second``
            i = 0
            while i < n:
                j = i + 1
                run_in_order = True
                while j < n and _get(k1, o[j]) == _get(k1, o[i]):
                    if _get(k2, o[j]) < _get(k2, o[j - 1]):
                        run_in_order = False
                    j += 1
                if not run_in_order:
                    _merge_sort(o + i, tmp, j - i, k2)
                i = j
        return out
    finally:
        free(tmp)
        free(pos)


# -- laying rows out one after another -------------------------------------

def runs(keys, values):
    """Runs of equal consecutive ``keys``: the first row of each run and the
    sum of ``values`` over it, as two int64 columns."""
    cdef _Held hk = _Held(keys), hv = _Held(values)
    cdef View k = hk.view, v = hv.view
    cdef Py_ssize_t i, count = 0
    if v.n != k.n:
        raise ValueError("runs: columns differ in length")
    cdef array.array starts = _new(INT64, k.n)
    cdef array.array sums = _new(INT64, k.n)
    cdef int64_t *st = <int64_t *>starts.data.as_voidptr
    cdef int64_t *su = <int64_t *>sums.data.as_voidptr
    with nogil:
        for i in range(k.n):
            if i == 0 or _get(k, i) != _get(k, i - 1):
                st[count] = i
                su[count] = 0
                count += 1
            su[count - 1] += _get(v, i)
    array.resize(starts, count)
    array.resize(sums, count)
    return starts, sums


def insert(values, positions, fills):
    """``values`` with ``fills[k]`` inserted before ``values[positions[k]]``
    (positions in increasing order, from 0 to len(values)), in the type of
    ``values``."""
    cdef _Held hv = _Held(values), hp = _Held(positions), hf = _Held(fills)
    cdef View v = hv.view, p = hp.view, f = hf.view
    cdef Py_ssize_t i, k = 0, w = 0
    cdef bint bad = False
    if f.n != p.n:
        raise ValueError("insert: positions and fills differ in length")
    cdef array.array out = _new(v.kind, v.n + p.n)
    cdef void *o = out.data.as_voidptr
    with nogil:
        for i in range(p.n):
            if _get(p, i) < 0 or _get(p, i) > v.n or (i and _get(p, i) < _get(p, i - 1)):
                bad = True
        if not bad:
            for i in range(v.n + 1):
                while k < p.n and _get(p, k) == i:
                    _put(o, v.kind, w, _get(f, k))
                    w += 1
                    k += 1
                if i < v.n:
                    _put(o, v.kind, w, _get(v, i))
                    w += 1
    if bad:
        raise ValueError("insert: positions must increase from 0 to len(values)")
    return out


@cython.cdivision(True)
def tick_deltas(durations, int64_t unit):
    """For entries laid end to end, each lasting its duration: the change in
    whole ``unit``s of each entry's start since the previous entry's (0 for
    the first), and the end of the last in whole units. Rounding once, at
    the start times, keeps the deltas adding up exactly."""
    cdef _Held h = _Held(durations)
    cdef View d = h.view
    cdef Py_ssize_t i
    cdef int64_t elapsed = 0, tick, previous = 0
    if unit <= 0:
        raise ValueError("tick_deltas: unit must be positive")
    cdef array.array out = _new(INT64, d.n)
    cdef int64_t *o = <int64_t *>out.data.as_voidptr
    with nogil:
        for i in range(d.n):
            # floor division, also for a negative total
            tick = elapsed // unit if elapsed >= 0 else -((unit - 1 - elapsed) // unit)
            o[i] = tick - previous
            previous = tick
            elapsed += _get(d, i)
    tick = elapsed // unit if elapsed >= 0 else -((unit - 1 - elapsed) // unit)
    return out, tick


cdef inline int _digits(uint64_t u) noexcept nogil:
    cdef int d = 1
    while u >= 10:
        u //= 10
        d += 1
    return d


cdef inline uint64_t _magnitude(int64_t x) noexcept nogil:
    # |x| without overflow at the most negative int64
    return <uint64_t>(-(x + 1)) + 1 if x < 0 else <uint64_t>x


def join_ints(values):
    """An integer column as decimal text, comma-separated (``1,-2,3``): the
    body of a JSON array, without making a Python int per value."""
    cdef _Held h = _Held(values)
    cdef View v = h.view
    cdef Py_ssize_t i, size = 0, w = 0
    cdef int64_t x
    cdef uint64_t u
    cdef Py_ssize_t k
    cdef Py_UCS1 *o
    with nogil:
        # one pass to size the text exactly, one to write it
        for i in range(v.n):
            x = _get(v, i)
            size += _digits(_magnitude(x)) + (x < 0) + (i > 0)
    cdef str text = PyUnicode_New(size, 127)
    o = PyUnicode_1BYTE_DATA(text)
    with nogil:
        for i in range(v.n):
            if i:
                o[w] = 44  # ","
                w += 1
            x = _get(v, i)
            if x < 0:
                o[w] = 45  # "-"
                w += 1
            u = _magnitude(x)
            w += _digits(u)
            k = w
            while True:  # digits from the last
                k -= 1
                o[k] = <Py_UCS1>(48 + u % 10)
                u //= 10
                if u == 0:
                    break
    return text
