/*
 * refs.h - one object of a heap snapshot: its node (type, name, size) and
 * its edges, named where Python can name them. Types are sorted into kinds
 * once (hg_type_of); each kind has its reader, and tp_traverse supplies
 * whatever references the reader did not name ("hidden" edges), so no
 * reference is missed. Everything is read in place, nothing is created
 * and no Python code runs (pyobjects.h holds the version-specific reads).
 */
#ifndef PYSAMPLER_HG_REFS_H
#define PYSAMPLER_HG_REFS_H

#include <Python.h>
#include <structmember.h>

#include "_heapgraph/pyobjects.h"
#include "_heapgraph/walk.h"

/* what the walk knows how to name, by type */
enum {
    HG_K_OTHER = 0,
    HG_K_STR,
    HG_K_INT,
    HG_K_FLOAT,
    HG_K_DICT,
    HG_K_LIST,
    HG_K_TUPLE,
    HG_K_SET,
    HG_K_FUNC,
    HG_K_CODE,
    HG_K_MODULE,
    HG_K_TYPE,
    HG_K_CELL,
    HG_K_METHOD,
    HG_K_FRAMEOBJ,
    HG_K_GEN,
    HG_K_WEAKREF,
    HG_K_NDARRAY,
    HG_K_EXCEPTION,
    HG_K_TRACEBACK
};

/* numpy's array and dtype structs: their leading fields, unchanged from
 * numpy 1.7 to 2.x (numpy/ndarraytypes.h). Read only for instances of
 * the ndarray type found in an already imported numpy. */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
} hg_ndarray;

typedef struct {
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind;
    char type;
    char byteorder;
    char flags;
    int type_num;
} hg_dtype;

#define HG_NPY_OBJECT 17

/* ------------------------------------------------------------------ */
/* Names                                                              */
/* ------------------------------------------------------------------ */

static uint32_t hg_str_name(hg_walk *w, PyObject *u)
{
    hg_name_reset(&w->nb);
    hg_name_unicode(&w->nb, u, HG_NAME_CHARS);
    return hg_intern_name(&w->strings, &w->nb);
}

/* "module.qualname" of a function or class; builtins unprefixed. */
static void hg_name_qualified(hg_name *nb, PyObject *module, PyObject *qualname)
{
    if (module != NULL && PyUnicode_Check(module) &&
        PyUnicode_CompareWithASCIIString(module, "builtins") != 0) {
        hg_name_unicode(nb, module, 200);
        hg_name_cstr(nb, ".");
    }
    if (qualname != NULL && PyUnicode_Check(qualname)) {
        hg_name_unicode(nb, qualname, 300);
    } else {
        hg_name_cstr(nb, "?");
    }
}

/* A class's qualified name: tp_name already has the module for static
 * types; a heap type has its qualname and __module__ in its dict. */
static void hg_name_type(hg_name *nb, PyTypeObject *tp)
{
    if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        PyObject *module = NULL;
        if (tp->tp_dict != NULL) {
            module = PyDict_GetItemString(tp->tp_dict, "__module__"); /* borrowed, no error */
        }
        hg_name_qualified(nb, module, ((PyHeapTypeObject *)tp)->ht_qualname);
    } else {
        hg_name_cstr(nb, tp->tp_name);
    }
}

/* The name of a dict key as an edge name; *etype says property or element. */
static uint32_t hg_key_name(hg_walk *w, PyObject *key, int *etype)
{
    *etype = HG_E_PROPERTY;
    if (PyUnicode_CheckExact(key)) {
        return hg_str_name(w, key);
    }
    hg_name_reset(&w->nb);
    if (PyLong_CheckExact(key)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (overflow == 0 && v >= 0 && v <= 0xFFFFFFFFLL) {
            *etype = HG_E_ELEMENT;
            return (uint32_t)v;
        }
        if (overflow == 0 && !(v == -1 && PyErr_Occurred())) {
            hg_name_i64(&w->nb, v);
        } else {
            PyErr_Clear();
            hg_name_cstr(&w->nb, "<int key>");
        }
    } else if (key == Py_None || key == Py_True || key == Py_False) {
        hg_name_cstr(&w->nb, key == Py_None ? "None" : key == Py_True ? "True" : "False");
    } else {
        hg_name_cstr(&w->nb, "<");
        hg_name_type(&w->nb, Py_TYPE(key));
        hg_name_cstr(&w->nb, " key>");
    }
    return hg_intern_name(&w->strings, &w->nb);
}

/* ------------------------------------------------------------------ */
/* Types                                                              */
/* ------------------------------------------------------------------ */

static int hg_type_kind(hg_walk *w, PyTypeObject *tp, uint8_t *exact)
{
    *exact = 1;
    if (tp == &PyUnicode_Type) return HG_K_STR;
    if (tp == &PyLong_Type) return HG_K_INT;
    if (tp == &PyFloat_Type) return HG_K_FLOAT;
    if (tp == &PyDict_Type) return HG_K_DICT;
    if (tp == &PyList_Type) return HG_K_LIST;
    if (tp == &PyTuple_Type) return HG_K_TUPLE;
    if (tp == &PySet_Type || tp == &PyFrozenSet_Type) return HG_K_SET;
    if (tp == &PyFunction_Type) return HG_K_FUNC;
    if (tp == &PyCode_Type) return HG_K_CODE;
    if (tp == &PyCell_Type) return HG_K_CELL;
    if (tp == &PyMethod_Type) return HG_K_METHOD;
    if (tp == &PyFrame_Type) return HG_K_FRAMEOBJ;
    if (tp == &PyGen_Type || tp == &PyCoro_Type || tp == &PyAsyncGen_Type) return HG_K_GEN;
    if (tp == &PyTraceBack_Type) return HG_K_TRACEBACK;
    *exact = 0;
    if (PyType_IsSubtype(tp, &PyDict_Type)) return HG_K_DICT;
    if (PyType_IsSubtype(tp, &PyList_Type)) return HG_K_LIST;
    if (PyType_IsSubtype(tp, &PyTuple_Type)) return HG_K_TUPLE;
    if (PyType_IsSubtype(tp, &PySet_Type) || PyType_IsSubtype(tp, &PyFrozenSet_Type)) {
        return HG_K_SET;
    }
    if (PyType_IsSubtype(tp, &PyModule_Type)) return HG_K_MODULE;
    if (PyType_IsSubtype(tp, &PyType_Type)) return HG_K_TYPE;
    if (PyType_IsSubtype(tp, &_PyWeakref_RefType)) return HG_K_WEAKREF;
    if (PyType_IsSubtype(tp, (PyTypeObject *)PyExc_BaseException)) return HG_K_EXCEPTION;
    if (w->ndarray != NULL && PyType_IsSubtype(tp, w->ndarray)) return HG_K_NDARRAY;
    return HG_K_OTHER;
}

static hg_type *hg_type_of(hg_walk *w, PyTypeObject *tp)
{
    uint32_t i = hg_ptrmap_get(&w->typeidx, (uintptr_t)tp);
    hg_type *t;
    PyObject *descr;
    int added;
    if (i != HG_NONE) {
        return &w->types[i];
    }
    if (w->ntypes == w->typecap) {
        size_t cap = w->typecap * 2;
        hg_type *ts = (hg_type *)realloc(w->types, cap * sizeof(hg_type));
        if (ts == NULL) {
            hg_fail(w, ENOMEM);
            return NULL;
        }
        w->types = ts;
        w->typecap = cap;
    }
    t = &w->types[w->ntypes];
    memset(t, 0, sizeof(*t));
    t->tp = tp;
    t->kind = (uint8_t)hg_type_kind(w, tp, &t->exact);
    t->heap = (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) != 0;
    hg_name_reset(&w->nb);
    hg_name_type(&w->nb, tp);
    t->name = hg_intern_name(&w->strings, &w->nb);
    /* __sizeof__: called only when C implements it (a method descriptor
     * with a C function); a Python-level __sizeof__ is user code */
    descr = _PyType_Lookup(tp, w->sizeof_name); /* borrowed, no error set */
    if (descr != NULL && Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        PyMethodDef *ml = ((PyMethodDescrObject *)descr)->d_method;
        int flags = ml->ml_flags & ~(METH_CLASS | METH_STATIC | METH_COEXIST);
        if (flags == METH_NOARGS) {
            t->sizeof_kind = 1;
            t->sizeof_fn = (void *)ml->ml_meth;
        }
#ifdef METH_METHOD
        else if (flags == (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)) {
            t->sizeof_kind = 2;
            t->sizeof_fn = (void *)ml->ml_meth;
            t->sizeof_cls = PyDescr_TYPE(descr);
        }
#endif
    }
    if (hg_ptrmap_put(&w->typeidx, (uintptr_t)tp, (uint32_t)w->ntypes, &added) == HG_NONE) {
        hg_fail(w, ENOMEM);
        return NULL;
    }
    w->ntypes++;
    return t;
}

static uint64_t hg_sizeof(PyObject *o, hg_type *t)
{
    Py_ssize_t size = -1;
    PyObject *r = NULL;
    if (t->sizeof_kind == 1) {
        r = ((PyCFunction)t->sizeof_fn)(o, NULL);
    }
#ifdef METH_METHOD
    else if (t->sizeof_kind == 2) {
        r = ((PyCMethod)t->sizeof_fn)(o, t->sizeof_cls, NULL, 0, NULL);
    }
#endif
    if (r != NULL) {
        size = PyLong_Check(r) ? PyLong_AsSsize_t(r) : -1;
        Py_DECREF(r);
    }
    if (size < 0) {
        /* object.__sizeof__: the basic size plus the items */
        PyTypeObject *tp = Py_TYPE(o);
        PyErr_Clear();
        size = tp->tp_basicsize;
        if (tp->tp_itemsize != 0) {
            Py_ssize_t n = Py_SIZE(o);
            size += (n < 0 ? -n : n) * tp->tp_itemsize;
        }
    }
    return (uint64_t)size + hg_preheader_size(o);
}

/* ------------------------------------------------------------------ */
/* The references of one object                                       */
/* ------------------------------------------------------------------ */

static int hg_visit_rest(PyObject *o, void *arg)
{
    hg_walk *w = (hg_walk *)arg;
    int saved;
    if (o == NULL || hg_bag_take(&w->bag, (uintptr_t)o)) {
        return 0;
    }
    saved = w->use_bag;
    w->use_bag = 0;
    hg_edge(w, w->trav_elements ? HG_E_ELEMENT : HG_E_HIDDEN, w->trav_i++, o);
    w->use_bag = saved;
    return 0;
}

static void hg_attr_edge(void *ctx, PyObject *name, PyObject *value)
{
    hg_walk *w = (hg_walk *)ctx;
    hg_edge(w, HG_E_PROPERTY, hg_str_name(w, name), value);
}

static void hg_field_edge(void *ctx, const char *name, PyObject *value)
{
    hg_walk *w = (hg_walk *)ctx;
    if (value != NULL) {
        hg_edge(w, HG_E_INTERNAL, hg_intern_cstr(&w->strings, name), value);
    }
}

static void hg_dict_entries(hg_walk *w, PyObject *d)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        int etype;
        uint32_t name = hg_key_name(w, k, &etype);
        hg_edge(w, etype, name, v);
        /* a key is memory the dict holds, unless interned (shared, e.g.
         * attribute and variable names) */
        if (PyUnicode_CheckExact(k) && PyUnicode_CHECK_INTERNED(k)) {
            hg_covered(w, k);
        } else if (etype == HG_E_ELEMENT) {
            hg_name_reset(&w->nb);
            hg_name_u64(&w->nb, name);
            hg_edge(w, HG_E_INTERNAL, hg_intern_name(&w->strings, &w->nb), k);
        } else {
            hg_edge(w, HG_E_INTERNAL, name, k);
        }
    }
}

static void hg_sequence(hg_walk *w, PyObject **items, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n && !w->err; i++) {
        hg_edge(w, HG_E_ELEMENT, (uint32_t)i, items[i]);
    }
}

/* Locals of a frame as "context" edges named by variable. */
static void hg_frame_locals(hg_walk *w, ps_frame *f, PyCodeObject *co)
{
    Py_ssize_t i, n = hg_code_nlocalsplus(co);
    for (i = 0; i < n && !w->err; i++) {
        PyObject *v = hg_frame_local(f, i);
        PyObject *name = hg_code_local_name(co, i);
        if (v != NULL) {
            uint32_t s = (name != NULL && PyUnicode_Check(name)) ? hg_str_name(w, name) : 0;
            hg_edge(w, HG_E_CONTEXT, s, v);
        }
    }
}

/* "<frame qualname file:line>" */
static uint32_t hg_frame_name(hg_walk *w, PyCodeObject *co, int line)
{
    hg_name_reset(&w->nb);
    hg_name_cstr(&w->nb, "<frame ");
    hg_name_unicode(&w->nb, hg_code_qualname(co), 300);
    hg_name_cstr(&w->nb, " ");
    hg_name_unicode(&w->nb, co->co_filename, 300);
    hg_name_cstr(&w->nb, ":");
    hg_name_i64(&w->nb, line);
    hg_name_cstr(&w->nb, ">");
    return hg_intern_name(&w->strings, &w->nb);
}

static void hg_instance(hg_walk *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o), *base;
    PyObject *dict;
    hg_edge(w, HG_E_INTERNAL, w->s_class, (PyObject *)tp);
    /* __slots__ of the class and its Python bases: member descriptors */
    for (base = tp; base != NULL && (base->tp_flags & Py_TPFLAGS_HEAPTYPE); base = base->tp_base) {
        PyMemberDef *m = base->tp_members;
        for (; m != NULL && m->name != NULL; m++) {
            if ((m->type == T_OBJECT_EX || m->type == T_OBJECT) && !(m->flags & READONLY)) {
                PyObject *v = *(PyObject **)((char *)o + m->offset);
                if (v != NULL) {
                    hg_edge(w, HG_E_PROPERTY, hg_intern_cstr(&w->strings, m->name), v);
                }
            }
        }
    }
    dict = hg_instance_attrs(o, hg_attr_edge, w);
    hg_edge(w, HG_E_PROPERTY, w->s_dict, dict);
}

static void hg_ndarray_refs(hg_walk *w, PyObject *o)
{
    hg_ndarray *a = (hg_ndarray *)o;
    hg_edge(w, HG_E_INTERNAL, w->s_base, a->base);
    hg_edge(w, HG_E_INTERNAL, w->s_dtype, a->descr);
    if (a->descr != NULL && ((hg_dtype *)a->descr)->type_num == HG_NPY_OBJECT && a->data != NULL &&
        a->nd >= 0 && a->nd <= 64) {
        /* an object array holds references in its data: every element,
         * in C order, by flat index */
        Py_ssize_t idx[64], total = 1, flat;
        int d;
        for (d = 0; d < a->nd; d++) {
            idx[d] = 0;
            total *= a->dimensions[d];
        }
        for (flat = 0; flat < total && !w->err; flat++) {
            char *p = a->data;
            for (d = 0; d < a->nd; d++) {
                p += idx[d] * a->strides[d];
            }
            if (flat <= 0xFFFFFFFFLL) {
                hg_edge(w, HG_E_ELEMENT, (uint32_t)flat, *(PyObject **)p);
            }
            for (d = a->nd - 1; d >= 0; d--) {
                if (++idx[d] < a->dimensions[d]) {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

static void hg_type_refs(hg_walk *w, PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: static builtin types keep their dict in the interpreter */
    PyObject *dict = PyType_GetDict(tp);
    hg_edge(w, HG_E_PROPERTY, w->s_dict, dict);
    Py_XDECREF(dict); /* the type keeps it alive */
#else
    hg_edge(w, HG_E_PROPERTY, w->s_dict, tp->tp_dict);
#endif
    hg_field_edge(w, "__mro__", tp->tp_mro);
    hg_field_edge(w, "__bases__", tp->tp_bases);
    hg_field_edge(w, "__base__", (PyObject *)tp->tp_base);
    hg_field_edge(w, "(subclasses)", hg_type_subclasses(tp));
    if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        PyHeapTypeObject *ht = (PyHeapTypeObject *)tp;
        hg_field_edge(w, "__name__", ht->ht_name);
        hg_field_edge(w, "__qualname__", ht->ht_qualname);
        hg_field_edge(w, "__slots__", ht->ht_slots);
        hg_field_edge(w, "(module)", ht->ht_module);
    }
}

static void hg_func_refs(hg_walk *w, PyObject *o)
{
    PyFunctionObject *f = (PyFunctionObject *)o;
    hg_field_edge(w, "__code__", f->func_code);
    hg_field_edge(w, "__globals__", f->func_globals);
    hg_field_edge(w, "__defaults__", f->func_defaults);
    hg_field_edge(w, "__kwdefaults__", f->func_kwdefaults);
    hg_field_edge(w, "__closure__", f->func_closure);
    hg_field_edge(w, "__doc__", f->func_doc);
    hg_field_edge(w, "__name__", f->func_name);
    hg_field_edge(w, "__qualname__", f->func_qualname);
    hg_field_edge(w, "__module__", f->func_module);
    hg_field_edge(w, "__annotations__", f->func_annotations);
#if PY_VERSION_HEX >= 0x030A0000
    /* 3.10: functions hold their builtins */
    hg_field_edge(w, "__builtins__", f->func_builtins);
#endif
    hg_edge(w, HG_E_PROPERTY, w->s_dict, f->func_dict);
    if (f->func_closure != NULL && PyTuple_Check(f->func_closure) && f->func_code != NULL &&
        PyCode_Check(f->func_code)) {
        /* closure cells by free variable name, as V8 names a closure's
         * context variables */
        Py_ssize_t i, n = PyTuple_GET_SIZE(f->func_closure);
        int saved = w->use_bag;
        w->use_bag = 0; /* the tuple already accounts for the cells */
        for (i = 0; i < n; i++) {
            PyObject *name = hg_code_freevar_name((PyCodeObject *)f->func_code, i);
            if (name != NULL && PyUnicode_Check(name)) {
                hg_edge(w, HG_E_CONTEXT, hg_str_name(w, name), PyTuple_GET_ITEM(f->func_closure, i));
            }
        }
        w->use_bag = saved;
    }
}

static void hg_code_field_edge(void *ctx, const char *name, PyObject *value)
{
    hg_field_edge(ctx, name, value);
}

/* An object: its node record and its edges. */
static void hg_write_object(hg_walk *w, PyObject *o, uintptr_t key)
{
    hg_type *t = hg_type_of(w, Py_TYPE(o));
    int node_type = HG_T_OBJECT, traverse;
    uint32_t name;
    uint64_t size;
    if (t == NULL) {
        return;
    }
    name = t->name;
    w->cur_edges = 0;
    w->trav_i = 0;
    w->trav_elements = 0;
    traverse = Py_TYPE(o)->tp_traverse != NULL && PyObject_IS_GC(o) &&
               !(t->exact && (t->kind == HG_K_DICT || t->kind == HG_K_LIST || t->kind == HG_K_TUPLE));
    w->use_bag = traverse;
    if (traverse) {
        hg_bag_clear(&w->bag);
    }
    if (t->heap) {
        hg_instance(w, o);
    }
    switch (t->kind) {
    case HG_K_STR:
        node_type = HG_T_STRING;
        name = hg_str_name(w, o);
        break;
    case HG_K_INT: {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        hg_name_reset(&w->nb);
        if (overflow == 0 && !(v == -1 && PyErr_Occurred())) {
            hg_name_i64(&w->nb, v);
        } else {
            PyErr_Clear();
            hg_name_cstr(&w->nb, overflow < 0 ? "<int below -2**63>" : "<int above 2**63>");
        }
        node_type = HG_T_NUMBER;
        name = hg_intern_name(&w->strings, &w->nb);
        break;
    }
    case HG_K_FLOAT: {
        char *s = PyOS_double_to_string(PyFloat_AS_DOUBLE(o), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        node_type = HG_T_NUMBER;
        if (s != NULL) {
            name = hg_intern_cstr(&w->strings, s);
            PyMem_Free(s);
        } else {
            PyErr_Clear();
        }
        break;
    }
    case HG_K_DICT:
        hg_dict_entries(w, o);
        break;
    case HG_K_LIST:
        hg_sequence(w, ((PyListObject *)o)->ob_item, PyList_GET_SIZE(o));
        break;
    case HG_K_TUPLE:
        hg_sequence(w, ((PyTupleObject *)o)->ob_item, PyTuple_GET_SIZE(o));
        break;
    case HG_K_SET:
        w->trav_elements = 1;
        break;
    case HG_K_FUNC: {
        PyFunctionObject *f = (PyFunctionObject *)o;
        node_type = HG_T_CLOSURE;
        hg_name_reset(&w->nb);
        hg_name_qualified(&w->nb, f->func_module, f->func_qualname);
        name = hg_intern_name(&w->strings, &w->nb);
        hg_func_refs(w, o);
        break;
    }
    case HG_K_CODE:
        node_type = HG_T_CODE;
        name = hg_str_name(w, hg_code_qualname((PyCodeObject *)o));
        hg_code_fields((PyCodeObject *)o, hg_code_field_edge, w);
        break;
    case HG_K_MODULE: {
        PyObject *mname = PyModule_GetNameObject(o);
        hg_name_reset(&w->nb);
        hg_name_cstr(&w->nb, "<module ");
        if (mname != NULL && PyUnicode_Check(mname)) {
            hg_name_unicode(&w->nb, mname, 300);
        } else {
            hg_name_cstr(&w->nb, "?");
        }
        Py_XDECREF(mname);
        PyErr_Clear();
        hg_name_cstr(&w->nb, ">");
        name = hg_intern_name(&w->strings, &w->nb);
        hg_edge(w, HG_E_PROPERTY, w->s_dict, PyModule_GetDict(o));
        break;
    }
    case HG_K_TYPE:
        if (!(((PyTypeObject *)o)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            /* a static type is C memory, never freed: a root (without this,
             * one found only through a weak reference, from a subclass
             * list, would be unreachable for DevTools) */
            uint32_t self = hg_ptrmap_get(&w->index, key);
            if (self != HG_NONE) {
                hg_syn_edge_to(w, HG_OTHER, HG_E_ELEMENT, (uint32_t)w->syn[HG_OTHER].n, self);
            }
        }
        hg_name_reset(&w->nb);
        hg_name_cstr(&w->nb, "<class ");
        hg_name_type(&w->nb, (PyTypeObject *)o);
        hg_name_cstr(&w->nb, ">");
        name = hg_intern_name(&w->strings, &w->nb);
        hg_type_refs(w, (PyTypeObject *)o);
        break;
    case HG_K_CELL:
        hg_edge(w, HG_E_PROPERTY, w->s_cell, PyCell_GET(o));
        break;
    case HG_K_METHOD:
        hg_edge(w, HG_E_PROPERTY, w->s_func, PyMethod_GET_FUNCTION(o));
        hg_edge(w, HG_E_PROPERTY, w->s_self, PyMethod_GET_SELF(o));
        break;
    case HG_K_FRAMEOBJ: {
#if PY_VERSION_HEX >= 0x030B0000
        ps_frame *f = hg_frameobj_owned_frame(o);
#else
        ps_frame *f = (ps_frame *)o;
#endif
        PyCodeObject *co = PyFrame_GetCode((PyFrameObject *)o); /* new reference */
        if (co != NULL) {
            name = hg_frame_name(w, co, PyFrame_GetLineNumber((PyFrameObject *)o));
            if (f != NULL) {
                hg_frame_locals(w, f, co);
                hg_frame_fields(f, hg_field_edge, w);
            }
            Py_DECREF(co);
        }
#if PY_VERSION_HEX >= 0x030B0000
        /* 3.11+: the object's own fields (3.9-3.10: hg_frame_fields) */
        hg_field_edge(w, "f_back", (PyObject *)((PyFrameObject *)o)->f_back);
        hg_field_edge(w, "f_trace", ((PyFrameObject *)o)->f_trace);
#endif
        break;
    }
    case HG_K_GEN: {
        ps_frame *f = hg_gen_frame(o);
        PyCodeObject *co = f != NULL ? ps_frame_code(f) : NULL;
        if (co != NULL) {
            hg_name_reset(&w->nb);
            hg_name_cstr(&w->nb, "<");
            hg_name_cstr(&w->nb, Py_TYPE(o)->tp_name);
            hg_name_cstr(&w->nb, " ");
            hg_name_unicode(&w->nb, hg_code_qualname(co), 300);
            hg_name_cstr(&w->nb, ">");
            name = hg_intern_name(&w->strings, &w->nb);
            hg_frame_locals(w, f, co);
            hg_frame_fields(f, hg_field_edge, w);
        }
        hg_gen_fields(o, hg_field_edge, w);
        break;
    }
    case HG_K_WEAKREF: {
        PyObject *ref = ((PyWeakReference *)o)->wr_object;
        hg_field_edge(w, "__callback__", ((PyWeakReference *)o)->wr_callback);
        if (ref != NULL && ref != Py_None && Py_REFCNT(ref) > 0) {
            int saved = w->use_bag;
            w->use_bag = 0;
            hg_edge(w, HG_E_WEAK, w->s_referent, ref);
            w->use_bag = saved;
        }
        break;
    }
    case HG_K_NDARRAY:
        hg_ndarray_refs(w, o);
        break;
    case HG_K_EXCEPTION:
        hg_exception_fields(o, hg_field_edge, w);
        break;
    case HG_K_TRACEBACK:
        hg_field_edge(w, "tb_frame", (PyObject *)((PyTracebackObject *)o)->tb_frame);
        hg_field_edge(w, "tb_next", (PyObject *)((PyTracebackObject *)o)->tb_next);
        break;
    default:
        break;
    }
    if (traverse && !w->err) {
        Py_TYPE(o)->tp_traverse(o, hg_visit_rest, w);
    }
    w->use_bag = 0;
    size = hg_sizeof(o, t);
    hg_write_node(w, node_type, name, hg_id_for(w, key), size);
}

#if PY_VERSION_HEX >= 0x030B0000
/* A frame on a thread's stack (3.11+ frames are not objects). */
static void hg_write_iframe(hg_walk *w, ps_frame *f, uintptr_t key)
{
    PyCodeObject *co = ps_frame_code(f);
    uint32_t name = 0;
    w->cur_edges = 0;
    w->use_bag = 0;
    if (co != NULL) {
        name = hg_frame_name(w, co, PyCode_Addr2Line(co, ps_frame_lasti_bytes(f)));
        hg_frame_locals(w, f, co);
    }
    hg_frame_fields(f, hg_field_edge, w);
    hg_write_node(w, HG_T_OBJECT, name, hg_id_for(w, key), hg_frame_size(f));
}
#endif

#endif /* PYSAMPLER_HG_REFS_H */
