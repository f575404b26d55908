"""Where pysampler runs: the CPython versions its native core was checked
against, and the main interpreter only.

:func:`check` runs when the package is imported, before the native core
loads; setup.py runs :func:`version_problem` before building it. Pure
Python with no imports of the package: setup.py loads this file by path.

- **Versions.** The core reads CPython internals (frames, tasks, the eval
  breaker) behind ``PY_VERSION_HEX`` fences in src/_sampler/pyframes.h and
  tasks.h. A newer CPython would compile into the newest branch of each
  fence unchecked and read fields that may have moved, so it is refused at
  build time (an ``#error`` in those headers too) and at import. Setting
  ``PYSAMPLER_ALLOW_UNTESTED_PYTHON=1`` lifts both, for trying a new
  version out.
- **Subinterpreters.** The sampler samples the main interpreter, whose
  threads it walks and whose pending-call queue it uses: imported inside a
  subinterpreter it would record none of that interpreter's work, and its
  calls could land in the wrong interpreter's queue. CPython 3.12+ refuses
  the native module in an isolated subinterpreter, but a legacy one
  (``Py_NewInterpreter``, as mod_wsgi creates) loads it on every version,
  and the first interpreter to load it keeps it: a later import in the
  main interpreter fails. So the import is refused here, before the native
  module is loaded at all.
"""

from __future__ import annotations

import importlib
import os
import sys

#: oldest and newest CPython (major, minor) the native core was checked against
OLDEST = (3, 9)
NEWEST = (3, 15)
#: set to 1 to build and import on a CPython newer than NEWEST anyway
ALLOW_UNTESTED = "PYSAMPLER_ALLOW_UNTESTED_PYTHON"


def untested_allowed() -> bool:
    """Whether ``PYSAMPLER_ALLOW_UNTESTED_PYTHON=1`` is set."""
    return os.environ.get(ALLOW_UNTESTED, "").strip() == "1"


def version_problem(version: tuple[int, int] | None = None) -> str | None:
    """Why pysampler cannot run on CPython ``version`` (default: this one),
    or None when it can."""
    major_minor = version or (sys.version_info[0], sys.version_info[1])
    name = f"{major_minor[0]}.{major_minor[1]}"
    if major_minor < OLDEST:
        return f"pysampler needs CPython {OLDEST[0]}.{OLDEST[1]} or newer, not {name}"
    if major_minor > NEWEST and not untested_allowed():
        return (
            f"pysampler supports CPython {OLDEST[0]}.{OLDEST[1]} to "
            f"{NEWEST[0]}.{NEWEST[1]}; CPython {name} is newer than any version its "
            "native core reads the internals of, and it could crash the program. "
            f"Set {ALLOW_UNTESTED}=1 to try it anyway (for testing)"
        )
    return None


def in_subinterpreter() -> bool:
    """True when this code runs in an interpreter other than the main one."""
    import _thread

    is_main = getattr(_thread, "_is_main_interpreter", None)  # 3.12+
    if is_main is not None:
        return not is_main()
    try:
        interpreters = importlib.import_module("_xxsubinterpreters")  # 3.9-3.11
    except ImportError:
        return False  # cannot tell here; the native module checks again
    return bool(interpreters.get_current() != interpreters.get_main())


#: the message of the ImportError raised in a subinterpreter
SUBINTERPRETER_REFUSED = (
    "pysampler cannot be imported in a subinterpreter: it samples the main "
    "interpreter only (import it there, or run this application in the main "
    "interpreter, e.g. mod_wsgi's WSGIApplicationGroup %{GLOBAL})"
)


def check() -> None:
    """Raise ImportError when pysampler cannot run here."""
    if sys.implementation.name != "cpython":
        raise ImportError(f"pysampler runs on CPython only, not {sys.implementation.name}")
    problem = version_problem()
    if problem is not None:
        raise ImportError(problem)
    if in_subinterpreter():
        raise ImportError(SUBINTERPRETER_REFUSED)
