/*
 * pyobjects.h - the CPython-version-specific reads of the graph walk,
 * fenced by PY_VERSION_HEX, each block saying what changed in that version:
 *
 *   - an instance's attributes where no dict object holds them (3.11+
 *     "managed" dicts keep them in a values array beside the object),
 *   - the local variables of an interpreter frame and of a suspended
 *     generator or coroutine, with their names,
 *   - the fields of code and frame objects,
 *   - the header bytes sys.getsizeof adds in front of an object.
 *
 * Nothing here allocates, calls Python code or changes an object: CPython
 * would build a dict for `obj.__dict__` (3.11+) and a dict of locals for
 * `frame.f_locals` (3.9-3.12), and the walk must not. Frame reading reuses
 * the sampler's pyframes.h (thread stacks, skipping shim frames).
 */
#ifndef PYSAMPLER_HG_PYOBJECTS_H
#define PYSAMPLER_HG_PYOBJECTS_H

#include <Python.h>
#include <frameobject.h>
#include <structmember.h>

#include "_sampler/pyframes.h"

#ifndef Py_BUILD_CORE
#  define Py_BUILD_CORE 1
#  define PYSAMPLER_HG_DEFINED_BUILD_CORE 1
#endif
#if PY_VERSION_HEX >= 0x030B0000
/* 3.11+: managed dicts and their values arrays (pycore_dict.h, with
 * pycore_object.h for the pointers beside the object). 3.11-3.12's public
 * cpython/object.h defines _PyObject_LookupSpecial as a macro that the
 * internal header then redeclares as a function: drop the macro. 3.12's
 * pycore_dict.h reads the deprecated ma_version_tag in an inline function. */
#  if PY_VERSION_HEX < 0x030D0000
#    undef _PyObject_LookupSpecial
#  endif
#  if defined(__GNUC__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#  endif
#  include "internal/pycore_dict.h"
#  include "internal/pycore_object.h"
#  if defined(__GNUC__)
#    pragma GCC diagnostic pop
#  endif
#endif
#if PY_VERSION_HEX >= 0x030E0000
/* 3.14: frame objects and generator states stay in pycore_frame.h, which
 * pyframes.h no longer needs (its frame struct moved to pycore_interpframe) */
#  include "internal/pycore_frame.h"
#endif
/* Generators: 3.11-3.13 declare their struct in cpython/genobject.h; 3.14
 * moved it beside the frame struct, which pyframes.h includes. */
#ifdef PYSAMPLER_HG_DEFINED_BUILD_CORE
#  undef Py_BUILD_CORE
#  undef PYSAMPLER_HG_DEFINED_BUILD_CORE
#endif

/* Called for each (name, value) found; name is a str, value not NULL. */
typedef void (*hg_attr_fn)(void *ctx, PyObject *name, PyObject *value);

/* ------------------------------------------------------------------ */
/* Instance attributes                                                */
/* ------------------------------------------------------------------ */

/* Reports the attributes of obj that live outside any dict object and
 * returns obj's dict object (borrowed, maybe NULL), without creating one. */
static PyObject *hg_instance_attrs(PyObject *obj, hg_attr_fn fn, void *ctx)
{
    PyTypeObject *tp = Py_TYPE(obj);
#if PY_VERSION_HEX >= 0x030B0000
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        PyDictKeysObject *keys = ((PyHeapTypeObject *)tp)->ht_cached_keys;
        PyDictValues *values = NULL;
        PyObject *dict = NULL;
        Py_ssize_t i;
#  if PY_VERSION_HEX >= 0x030D0000
        /* 3.13+: values inline after the object, valid until a dict takes
         * them over; the managed dict pointer holds that dict (which may
         * share the inline values) */
        dict = (PyObject *)_PyObject_GetManagedDict(obj);
        if (tp->tp_flags & Py_TPFLAGS_INLINE_VALUES) {
            values = _PyObject_InlineValues(obj);
            if (!values->valid) {
                values = NULL;
            }
        }
#  elif PY_VERSION_HEX >= 0x030C0000
        /* 3.12: one tagged word before the object: values or dict */
        PyDictOrValues dorv = *_PyObject_DictOrValuesPointer(obj);
        if (_PyDictOrValues_IsValues(dorv)) {
            values = _PyDictOrValues_GetValues(dorv);
        } else {
            dict = _PyDictOrValues_GetDict(dorv);
        }
#  else
        /* 3.11: a values pointer and a dict pointer before the object */
        values = *_PyObject_ValuesPointer(obj);
        dict = *_PyObject_ManagedDictPointer(obj);
#  endif
        /* values->values[i] belongs to the i-th key of the class's shared
         * keys (the order CPython's own traverse visits them in) */
        if (values != NULL && keys != NULL) {
            for (i = 0; i < keys->dk_nentries; i++) {
                PyObject *v = values->values[i];
                PyObject *k = DK_UNICODE_ENTRIES(keys)[i].me_key;
                if (v != NULL && k != NULL && PyUnicode_Check(k)) {
                    fn(ctx, k, v);
                }
            }
        }
        return dict;
    }
#endif
    if (tp->tp_dictoffset != 0) {
        /* not managed: the pointer is computed, nothing is created
         * (3.9-3.10 have no managed dicts at all) */
        PyObject **p = _PyObject_GetDictPtr(obj);
        return p == NULL ? NULL : *p;
    }
    (void)fn;
    (void)ctx;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Code objects                                                       */
/* ------------------------------------------------------------------ */

/* The qualified name of the code (its name before 3.11). */
static inline PyObject *hg_code_qualname(PyCodeObject *co)
{
#if PY_VERSION_HEX >= 0x030B0000
    return co->co_qualname;
#else
    return co->co_name;
#endif
}

/* Name of local slot i (locals, then cells, then free variables), or NULL. */
static inline PyObject *hg_code_local_name(PyCodeObject *co, Py_ssize_t i)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: one tuple for all of them */
    PyObject *names = co->co_localsplusnames;
    return (names != NULL && i < PyTuple_GET_SIZE(names)) ? PyTuple_GET_ITEM(names, i) : NULL;
#else
    /* 3.9-3.10: three tuples, in the order of f_localsplus */
    PyObject *parts[3] = {co->co_varnames, co->co_cellvars, co->co_freevars};
    int k;
    for (k = 0; k < 3; k++) {
        Py_ssize_t n = parts[k] != NULL ? PyTuple_GET_SIZE(parts[k]) : 0;
        if (i < n) {
            return PyTuple_GET_ITEM(parts[k], i);
        }
        i -= n;
    }
    return NULL;
#endif
}

static inline Py_ssize_t hg_code_nlocalsplus(PyCodeObject *co)
{
#if PY_VERSION_HEX >= 0x030B0000
    return co->co_nlocalsplus;
#else
    return co->co_nlocals + PyTuple_GET_SIZE(co->co_cellvars) + PyTuple_GET_SIZE(co->co_freevars);
#endif
}

/* Name of the i-th free variable (the i-th cell of a function's closure). */
static inline PyObject *hg_code_freevar_name(PyCodeObject *co, Py_ssize_t i)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: the free variables are the last co_nfreevars local slots */
    return hg_code_local_name(co, co->co_nlocalsplus - co->co_nfreevars + i);
#else
    return (co->co_freevars != NULL && i < PyTuple_GET_SIZE(co->co_freevars))
               ? PyTuple_GET_ITEM(co->co_freevars, i)
               : NULL;
#endif
}

typedef void (*hg_field_fn)(void *ctx, const char *name, PyObject *value);

/* The objects a code object holds (it has no tp_traverse: code objects
 * are not tracked by the garbage collector). */
static void hg_code_fields(PyCodeObject *co, hg_field_fn fn, void *ctx)
{
    fn(ctx, "co_consts", co->co_consts);
    fn(ctx, "co_names", co->co_names);
    fn(ctx, "co_filename", co->co_filename);
    fn(ctx, "co_name", co->co_name);
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11: bytecode inline in the object; names in one tuple */
    fn(ctx, "co_qualname", co->co_qualname);
    fn(ctx, "co_localsplusnames", co->co_localsplusnames);
    fn(ctx, "co_linetable", co->co_linetable);
    fn(ctx, "co_exceptiontable", co->co_exceptiontable);
#else
    fn(ctx, "co_code", co->co_code);
    fn(ctx, "co_varnames", co->co_varnames);
    fn(ctx, "co_cellvars", co->co_cellvars);
    fn(ctx, "co_freevars", co->co_freevars);
#  if PY_VERSION_HEX >= 0x030A0000
    /* 3.10: the line number table became co_linetable */
    fn(ctx, "co_linetable", co->co_linetable);
#  else
    fn(ctx, "co_lnotab", co->co_lnotab);
#  endif
#endif
}

/* ------------------------------------------------------------------ */
/* Frames                                                             */
/* ------------------------------------------------------------------ */

/* Local slot i of an interpreter frame (3.11+) or frame object (3.9-3.10),
 * borrowed, or NULL when unset. Only the co_nlocalsplus named slots are
 * read: the evaluation stack above them is valid only at some points of a
 * running frame. */
static inline PyObject *hg_frame_local(ps_frame *f, Py_ssize_t i)
{
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: tagged stack references; a tagged int is not an object */
    _PyStackRef r = f->localsplus[i];
    if (PyStackRef_IsNull(r) || PyStackRef_IsTaggedInt(r)) {
        return NULL;
    }
    return PyStackRef_AsPyObjectBorrow(r);
#elif PY_VERSION_HEX >= 0x030B0000
    return f->localsplus[i];
#else
    return f->f_localsplus[i];
#endif
}

/* The function a frame runs (3.11+), borrowed, or NULL. */
static inline PyObject *hg_frame_func(ps_frame *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: a stack reference */
    return PyStackRef_IsNull(f->f_funcobj) ? NULL : PyStackRef_AsPyObjectBorrow(f->f_funcobj);
#elif PY_VERSION_HEX >= 0x030C0000
    /* 3.12-3.13: f_funcobj */
    return f->f_funcobj;
#elif PY_VERSION_HEX >= 0x030B0000
    return (PyObject *)f->f_func;
#else
    (void)f;
    return NULL;
#endif
}

/* The fields of a frame, other than its locals, that hold objects. */
static void hg_frame_fields(ps_frame *f, hg_field_fn fn, void *ctx)
{
    fn(ctx, "f_code", (PyObject *)ps_frame_code(f));
    fn(ctx, "f_globals", f->f_globals);
    fn(ctx, "f_builtins", f->f_builtins);
    fn(ctx, "f_locals", f->f_locals);
#if PY_VERSION_HEX >= 0x030B0000
    fn(ctx, "f_func", hg_frame_func(f));
    fn(ctx, "frame_obj", (PyObject *)f->frame_obj);
#else
    fn(ctx, "f_back", (PyObject *)f->f_back);
    fn(ctx, "f_trace", f->f_trace);
#endif
}

/* Bytes a running frame takes on its thread's stack (3.11+). */
static inline size_t hg_frame_size(ps_frame *f)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: the code object records it */
    PyCodeObject *co = ps_frame_code(f);
    return co == NULL ? sizeof(*f) : (size_t)co->co_framesize * sizeof(PyObject *);
#elif PY_VERSION_HEX >= 0x030B0000
    /* 3.11: specials, locals and the evaluation stack, as the interpreter
     * pushes it */
    PyCodeObject *co = ps_frame_code(f);
    return co == NULL ? sizeof(*f)
                      : (FRAME_SPECIALS_SIZE + (size_t)co->co_nlocalsplus + (size_t)co->co_stacksize) *
                            sizeof(PyObject *);
#else
    (void)f;
    return 0;
#endif
}

/* The interpreter frame of a generator, coroutine or async generator while
 * it has one (not yet exhausted or closed), else NULL. 3.9-3.10 keep a
 * frame object instead, which the walk reads as an object. */
static inline ps_frame *hg_gen_frame(PyObject *gen)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyGenObject *g = (PyGenObject *)gen;
    /* same test as CPython's gen_traverse */
    if (g->gi_frame_state >= FRAME_CLEARED) {
        return NULL;
    }
#  if PY_VERSION_HEX >= 0x030E0000
    /* 3.14: the frame is a struct member */
    return &g->gi_iframe;
#  else
    /* 3.11-3.13: an array of words cast to the frame */
    return (ps_frame *)g->gi_iframe;
#  endif
#else
    (void)gen;
    return NULL;
#endif
}

/* The fields of a generator, coroutine or async generator besides its
 * frame (the layout is shared by the three). */
static void hg_gen_fields(PyObject *gen, hg_field_fn fn, void *ctx)
{
    PyGenObject *g = (PyGenObject *)gen;
    fn(ctx, "__name__", g->gi_name);
    fn(ctx, "__qualname__", g->gi_qualname);
#if PY_VERSION_HEX < 0x030C0000
    /* 3.12 dropped gi_code: the frame has the code */
    fn(ctx, "gi_code", (PyObject *)g->gi_code);
#endif
#if PY_VERSION_HEX < 0x030B0000
    /* 3.9-3.10: the frame is an object */
    fn(ctx, "gi_frame", (PyObject *)g->gi_frame);
#endif
}

#if PY_VERSION_HEX >= 0x030B0000
/* The interpreter frame a frame object owns (3.11+: a frame object
 * outlives its running frame when a traceback or f_back keeps it, and
 * then holds the locals itself), or NULL while it only mirrors a frame
 * on a thread's stack or in a generator. */
static inline ps_frame *hg_frameobj_owned_frame(PyObject *fo)
{
    ps_frame *f = ((PyFrameObject *)fo)->f_frame;
    return (f != NULL && f->owner == FRAME_OWNED_BY_FRAME_OBJECT) ? f : NULL;
}
#endif

/* The fields of an exception (its args, traceback, context and cause:
 * a stored exception keeps its traceback's frames, and their locals). */
static void hg_exception_fields(PyObject *exc, hg_field_fn fn, void *ctx)
{
    PyBaseExceptionObject *e = (PyBaseExceptionObject *)exc;
    fn(ctx, "args", e->args);
    fn(ctx, "__traceback__", e->traceback);
    fn(ctx, "__context__", e->context);
    fn(ctx, "__cause__", e->cause);
    fn(ctx, "__dict__", e->dict);
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11: add_note() */
    fn(ctx, "__notes__", e->notes);
#endif
}

/* The dict of weak references to a class's subclasses, or NULL. */
static inline PyObject *hg_type_subclasses(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: static builtin types keep an index there, not a dict */
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        return NULL;
    }
    return (PyObject *)tp->tp_subclasses;
#else
    return tp->tp_subclasses;
#endif
}

/* ------------------------------------------------------------------ */
/* Threads                                                            */
/* ------------------------------------------------------------------ */

/* The exception being handled at depth i of a thread (innermost first),
 * borrowed, or NULL past the last. */
static inline PyObject *hg_thread_handled_exception(PyThreadState *t, int i)
{
    _PyErr_StackItem *item = t->exc_info;
    while (item != NULL && i-- > 0) {
        item = item->previous_item;
    }
    return item == NULL ? NULL : item->exc_value;
}

/* ------------------------------------------------------------------ */
/* Sizes                                                              */
/* ------------------------------------------------------------------ */

/* Bytes sys.getsizeof adds to __sizeof__ for what sits before the object. */
static inline size_t hg_preheader_size(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030B0000
    /* 3.11+: the GC header and the managed dict (3.12+: and weakref) words */
    return _PyType_PreHeaderSize(Py_TYPE(o));
#else
    /* 3.9-3.10: the GC header of tracked-kind objects */
    return PyObject_IS_GC(o) ? sizeof(PyGC_Head) : 0;
#endif
}

#endif /* PYSAMPLER_HG_PYOBJECTS_H */
