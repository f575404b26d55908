"""Qualified names (``Class.method``, ``outer.<locals>.inner``) of the code
objects a profile holds.

3.11+ code objects carry their qualified name (``co_qualname``). Before,
only functions and classes know theirs, and a code object does not point
back to them. What is done instead costs what the sampled code's own
modules hold, never what the whole heap holds (walking
``gc.get_objects()`` did, and stalled every profile of a large process):

- the namespace of each module whose file holds sampled code (found by
  ``__file__`` in ``sys.modules``): its functions, and the functions,
  static and class methods and properties of its classes, nested classes
  included, give their ``__qualname__``;
- the code objects nested in those (closures, lambdas, comprehensions,
  classes defined in functions), and in any sampled ``<module>`` code, get
  their names as the compiler composes them: ``outer.<locals>.inner``
  below a function, ``Class.name`` below a class body.

Anything not reached that way (a function defined in a module that deleted
it, code run by ``exec`` with its own globals, a module not in
``sys.modules``) keeps its plain ``co_name``.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable
from typing import Any

#: a code object's flag for "runs in a new local namespace": set for
#: functions, comprehensions and lambdas; not for module and class bodies
_CO_NEWLOCALS = 0x0002
#: how deep nested classes are followed
_MAX_CLASS_DEPTH = 8


def qualnames(codes: Iterable[Any]) -> dict[Any, str]:
    """Qualified name per code object (its plain name where none is found)."""
    codes = list(codes)
    if sys.version_info >= (3, 11):
        return {c: c.co_qualname for c in codes}
    out = {c: c.co_name for c in codes}
    try:
        found = _search(codes)
    except Exception:
        return out  # a name is a nicety: never fail a profile over it
    for c in codes:
        name = found.get(c)
        if name is not None:
            out[c] = name
    return out


def _search(codes: list[Any]) -> dict[Any, str]:
    found: dict[Any, str] = {}
    for code in codes:
        if code.co_name == "<module>":
            _nested(code, "", found)
    files = {_norm(c.co_filename) for c in codes}
    seen: set[int] = set()
    for module in list(sys.modules.values()):
        if all(c in found for c in codes):
            break
        # plain modules only: a lazy module's attribute access would load it
        if type(module) is not types.ModuleType:
            continue
        namespace = module.__dict__
        path = namespace.get("__file__")
        if isinstance(path, str) and _norm(path) in files:
            _namespace(namespace, namespace.get("__name__"), seen, found, 0)
    return found


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path)) if path[:1] != "<" else path


def _namespace(
    namespace: Any, module: Any, seen: set[int], found: dict[Any, str], depth: int
) -> None:
    """Name what the functions and classes of ``module`` in ``namespace``
    (a module's or a class's) hold."""
    for value in list(namespace.values()):
        _object(value, module, seen, found, depth)


def _object(obj: Any, module: Any, seen: set[int], found: dict[Any, str], depth: int) -> None:
    # exact type checks: isinstance() would ask a proxy's __class__
    kind = type(obj)
    if kind is staticmethod or kind is classmethod:
        _object(obj.__func__, module, seen, found, depth)
    elif kind is property:
        for accessor in (obj.fget, obj.fset, obj.fdel):
            _object(accessor, module, seen, found, depth)
    elif kind is types.FunctionType:
        if id(obj) in seen or obj.__module__ != module:
            return
        seen.add(id(obj))
        code = obj.__code__
        qualname = obj.__qualname__
        # functools.wraps copies the wrapped function's names onto the
        # wrapper: the names are this code's only if they end in its name
        named = isinstance(qualname, str) and qualname.rpartition(".")[2] == code.co_name
        if named and code not in found:
            found[code] = qualname
            _nested(code, qualname, found)
        wrapped = obj.__dict__.get("__wrapped__")
        if wrapped is not None:
            _object(wrapped, module, seen, found, depth)
    elif issubclass(kind, type) and depth < _MAX_CLASS_DEPTH:
        # a class: its own attributes (methods, nested classes), when the
        # module defined it
        if id(obj) in seen:
            return
        seen.add(id(obj))
        attributes = type.__dict__["__dict__"].__get__(obj)
        if attributes.get("__module__") == module:
            _namespace(attributes, module, seen, found, depth + 1)


def _nested(code: Any, qualname: str, found: dict[Any, str]) -> None:
    """Name the code objects nested in ``code`` (named ``qualname``; "" for
    a module) as the compiler composes their qualified names."""
    todo = [(code, qualname)]
    while todo:
        parent, name = todo.pop()
        if not name:
            prefix = ""
        elif parent.co_flags & _CO_NEWLOCALS:
            prefix = name + ".<locals>."
        else:
            prefix = name + "."  # a class body
        for const in parent.co_consts:
            if type(const) is types.CodeType and const not in found:
                child = prefix + const.co_name
                found[const] = child
                todo.append((const, child))
