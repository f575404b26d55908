# cython: language_level=3
"""Native half of the heap snapshot: the object graph walk.

walk() writes the node, edge and string arrays of a Chrome DevTools
.heapsnapshot to three file descriptors, holding the GIL from start to end
so that no other thread runs Python while the graph is read. The walk
itself is C (src/_heapgraph/graph.h, which says how and why); this module
only hands it its arguments. pysampler.heapsnapshot assembles the file.
"""

from time import perf_counter

from cpython.object cimport PyTypeObject
from libc.stdint cimport uint64_t


cdef extern from "_heapgraph/graph.h":
    ctypedef struct hg_result:
        uint64_t nodes
        uint64_t edges
        uint64_t strings
        uint64_t nodes_split
        uint64_t edges_split
        uint64_t nodes_bytes
        uint64_t edges_bytes
        uint64_t strings_bytes
        uint64_t other_roots
        int err

    int hg_run(int fd_nodes, int fd_edges, int fd_strings, object modules, object thread_names,
               object objs, PyTypeObject *ndarray, object sizeof_name, hg_result *res) except -1


# looked up on each type with _PyType_Lookup; made here, not mid-walk
_SIZEOF_NAME = "__sizeof__"


def walk(int nodes_fd, int edges_fd, int strings_fd, modules, thread_names, get_objects, ndarray):
    """Write the graph; returns its counts, the sections' byte sizes and
    "pause": the seconds it held the GIL for (no Python code of this
    program ran meanwhile: nothing here releases the GIL or runs bytecode).

    Args:
        nodes_fd, edges_fd, strings_fd: open, writable file descriptors.
        modules: sys.modules (the module roots).
        thread_names: {thread ident: name}, read before the pause.
        get_objects: gc.get_objects, called here so that its list is taken
            in the pause and never reachable from the program.
        ndarray: numpy.ndarray if numpy is already imported, else None.
    """
    cdef hg_result res
    cdef PyTypeObject *nd = NULL
    if ndarray is not None:
        if not isinstance(ndarray, type):
            raise TypeError("ndarray must be a type or None")
        nd = <PyTypeObject *>ndarray
    t0 = perf_counter()
    objs = get_objects()
    if not isinstance(objs, list):
        raise TypeError("get_objects() must return a list")
    try:
        hg_run(nodes_fd, edges_fd, strings_fd, modules, thread_names, objs, nd, _SIZEOF_NAME, &res)
    finally:
        del objs
        pause = perf_counter() - t0
    return {
        "pause": pause,
        "nodes": res.nodes,
        "edges": res.edges,
        "strings": res.strings,
        "nodes_split": res.nodes_split,
        "edges_split": res.edges_split,
        "nodes_bytes": res.nodes_bytes,
        "edges_bytes": res.edges_bytes,
        "strings_bytes": res.strings_bytes,
        "other_roots": res.other_roots,
    }
