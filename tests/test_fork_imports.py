"""A fork while one of pysampler's threads is importing a module: the child
can still import it (pysampler._fork_imports), while what the program's own
threads were importing is left as CPython leaves it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import helpers

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

#: forks while a thread named ``THREAD`` is one second into importing
#: slow_mod, then imports slow_mod in the child (SIGALRM after ``ALARM`` s)
FORK_MID_IMPORT = """
import os, signal, sys, threading, time
sys.path.insert(0, %(where)r)
import pysampler.server  # what an endpoint imports: the at-fork handlers

started = threading.Event()

def load():
    started.set()
    import slow_mod

thread = threading.Thread(target=load, name=%(thread)r, daemon=True)
thread.start()
started.wait()
time.sleep(0.3)  # slow_mod is being imported, its lock held by the thread
pid = os.fork()
if pid == 0:
    signal.alarm(%(alarm)d)
    import slow_mod
    os._exit(0 if slow_mod.VALUE == 42 else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
thread.join()
"""


def fork_mid_import(tmp_path: Path, thread: str, alarm: int) -> str:
    (tmp_path / "slow_mod.py").write_text("import time\ntime.sleep(1.0)\nVALUE = 42\n")
    code = FORK_MID_IMPORT % {"where": str(tmp_path), "thread": thread, "alarm": alarm}
    return helpers.run_python(code, timeout=60).stdout


def test_a_module_our_thread_was_importing_imports_in_the_child(tmp_path: Path) -> None:
    assert "child 0" in fork_mid_import(tmp_path, "pysampler-http-request", alarm=20)


def test_a_module_the_programs_thread_was_importing_is_left_alone(tmp_path: Path) -> None:
    # CPython's own behaviour, unchanged: the child waits for a lock no
    # thread will release (here until the alarm ends it)
    out = fork_mid_import(tmp_path, "worker", alarm=2)
    assert f"child -{int(signal.SIGALRM)}" in out, out
