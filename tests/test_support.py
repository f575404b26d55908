"""Where pysampler refuses to run: a CPython newer than its native core was
checked against (at build and at import, unless overridden for testing),
and a subinterpreter (at import, on every version, before the native
module loads, so the main interpreter can still use it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import run_python
from pysampler import _support

ROOT = Path(__file__).resolve().parent.parent
FAKE_316 = "import sys; sys.version_info = (3, 16, 0, 'final', 0)\n"


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != _support.ALLOW_UNTESTED}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **env},
        cwd=ROOT,
    )


def test_versions_outside_the_checked_range_are_named() -> None:
    assert _support.version_problem((3, 9)) is None
    assert _support.version_problem(_support.NEWEST) is None
    assert "3.9 or newer" in str(_support.version_problem((3, 8)))
    newer = _support.version_problem((3, 16))
    assert newer is not None
    assert "3.9 to 3.15" in newer and "PYSAMPLER_ALLOW_UNTESTED_PYTHON=1" in newer


def test_import_on_an_untested_python_is_refused() -> None:
    proc = _python(FAKE_316 + "import pysampler")
    assert proc.returncode == 1
    assert "ImportError: pysampler supports CPython 3.9 to 3.15; CPython 3.16" in proc.stderr
    # nothing native was loaded for it
    proc = _python(
        FAKE_316
        + "try:\n    import pysampler\nexcept ImportError:\n    pass\n"
        + "print(sorted(m for m in sys.modules if m.startswith('pysampler')))"
    )
    assert proc.stdout.strip() == "['pysampler._support']", proc.stderr


def test_untested_python_override_lifts_the_import_check() -> None:
    # Only the check itself: the rest of the package (numpy, for one) does
    # not import under a faked version number.
    code = FAKE_316 + (
        "import runpy\n"
        f"support = runpy.run_path({_support.__file__!r})\n"
        "support['check']()\n"
        "print('allowed')\n"
    )
    refused = _python(code)
    assert refused.returncode == 1 and "CPython 3.16" in refused.stderr
    allowed = _python(code, PYSAMPLER_ALLOW_UNTESTED_PYTHON="1")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "allowed"


@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_build_on_an_untested_python_is_refused() -> None:
    code = FAKE_316 + (
        "import runpy\n"
        "sys.argv = ['setup.py', '--name']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    proc = _python(code)
    assert proc.returncode == 1
    assert "error: pysampler supports CPython 3.9 to 3.15; CPython 3.16" in proc.stderr


CC = shutil.which(sysconfig.get_config_var("CC") or "cc") or shutil.which("cc")


@pytest.mark.skipif(
    CC is None or not (ROOT / "src" / "_sampler").is_dir(), reason="needs a C compiler and src/"
)
@pytest.mark.parametrize("header", ["pyframes.h", "tasks.h"])
def test_headers_refuse_a_newer_cpython_unless_allowed(header: str, tmp_path: Path) -> None:
    # The headers as this CPython's build sees them, told they are on 3.16:
    # the fence must stop the preprocessor with its own message.
    probe = tmp_path / "probe.c"
    probe.write_text(
        "#include <Python.h>\n"
        "#undef PY_VERSION_HEX\n"
        "#define PY_VERSION_HEX 0x03100000\n"
        f'#include "_sampler/{header}"\n'
    )
    args = [
        str(CC),
        "-E",
        f"-I{sysconfig.get_paths()['include']}",
        f"-I{ROOT / 'src'}",
        str(probe),
        "-o",
        os.devnull,
    ]
    refused = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode != 0
    assert "checked against CPython 3.9 to 3.15" in refused.stderr or (
        "supports CPython 3.9 to 3.15" in refused.stderr
    ), refused.stderr
    allowed = subprocess.run(
        [*args, "-DPYSAMPLER_ALLOW_UNTESTED_PYTHON=1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # past the fence (what comes after may need headers this CPython lacks)
    assert "PYSAMPLER_ALLOW_UNTESTED_PYTHON=1 to build anyway" not in allowed.stderr


SUBINTERPRETER_RUNNERS = {
    # a legacy subinterpreter, as mod_wsgi and other embedders create
    "_testcapi.run_in_subinterp": "import _testcapi\n_testcapi.run_in_subinterp(SUB)\n",
    # the interpreters module's own (isolated from 3.12)
    "_xxsubinterpreters.run_string": (
        "import _xxsubinterpreters as X\ninterp = X.create()\nX.run_string(interp, SUB)\n"
    ),
    "_interpreters.run_string": (  # 3.13+
        "import _interpreters as X\ninterp = X.create()\nX.run_string(interp, SUB)\n"
    ),
}


def _has_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("runner", sorted(SUBINTERPRETER_RUNNERS))
@pytest.mark.parametrize("main_first", [False, True], ids=["sub-first", "main-first"])
def test_subinterpreter_import_is_refused_and_main_keeps_working(
    runner: str, main_first: bool
) -> None:
    module = runner.split(".")[0]
    if not _has_module(module):
        pytest.skip(f"{module} is not available on this Python")
    out = run_python(
        f"""
import os, sys, tempfile, time
report = tempfile.mktemp()
SUB = f'''
import sys
try:
    import pysampler
    outcome = "imported"
except ImportError as exc:
    outcome = "ImportError: " + str(exc)
with open({{report!r}}, "w") as f:
    f.write(outcome)
'''
if {main_first}:
    import pysampler
"""
        + SUBINTERPRETER_RUNNERS[runner]
        + """
with open(report) as f:
    print(f.read())
os.unlink(report)
import pysampler
pysampler.start(hz=1000, mode="wall")
time.sleep(0.1)
p = pysampler.stop()
assert p.sample_count > 10, p.metadata
assert "MainThread" in {t.name for t in p.threads}
print("main ok")
"""
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "ImportError: " + _support.SUBINTERPRETER_REFUSED, out.stdout + out.stderr
    assert lines[-1] == "main ok"
