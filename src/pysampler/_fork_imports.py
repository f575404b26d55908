"""Imports pysampler's threads leave half done at a fork.

A process that forks while another of its threads is importing a module
hands the child that module half initialised, with its import lock held by
a thread that does not exist there: the child's next import of the module
waits forever. pysampler's threads import on first use (an idle endpoint
imports next to nothing), so a fork in the middle of a request is enough:
gunicorn starting its workers while the master answers the first request
left workers that hung on their first profile (``heap_profile`` waiting on
``profile``'s lock; seen in about one run in three of the group tests), and
the program's own import of a module ours was loading would hang the same
way.

So, before a fork, the threads that are ours (named ``pysampler-*``) are
noted; in the child, every module one of them held the import lock of is
forgotten, lock and half-made module both, and its next import starts
afresh. Modules the program's own threads were importing are left as they
are: that is the program's business. The import system's lock table is
CPython's own (``_frozen_importlib._module_locks``, the same from 3.9 to
3.15); anything unexpected there leaves the child as it was.
"""

from __future__ import annotations

import os
import sys
import threading

#: idents of pysampler's threads when the process last forked
_ours: frozenset[int] = frozenset()


def _note_ours() -> None:
    global _ours
    me = threading.get_ident()
    _ours = frozenset(
        t.ident
        for t in threading.enumerate()
        if t.ident is not None and t.ident != me and t.name.startswith("pysampler")
    )


def _forget_ours() -> None:
    ours, bootstrap = _ours, sys.modules.get("_frozen_importlib")
    locks = getattr(bootstrap, "_module_locks", None)
    if not ours or not isinstance(locks, dict):
        return
    for name, ref in list(locks.items()):
        try:
            lock = ref()
            if getattr(lock, "owner", None) not in ours:
                continue
            del locks[name]
            spec = getattr(sys.modules.get(name), "__spec__", None)
            if getattr(spec, "_initializing", False):
                del sys.modules[name]
        except Exception:  # never let the child fail over this
            continue


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_note_ours, after_in_child=_forget_ours)
