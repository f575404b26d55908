"""pysampler: a low-overhead sampling profiler for live Python processes.

>>> import pysampler
>>> pysampler.start()                  # hz=100, mode="cpu"
>>> prof = pysampler.stop()
>>> prof.save("out.pprof")             # or "out.cpuprofile"

Names are imported on first use: ``import pysampler`` itself loads nothing
else, so a program that imports it and is not profiling (or whose start-up
hook only opened the HTTP endpoint) does not hold the profiler's modules.
"""

import atexit
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pysampler import heap
    from pysampler._control import Profiling, cancel, is_running, profile, start, stop
    from pysampler.errors import (
        ProfilerAlreadyRunning,
        ProfilerNotRunning,
        PysamplerError,
        SnapshotInProgress,
    )
    from pysampler.heap_profile import HeapMetadata, HeapProfile
    from pysampler.profile import (
        Frame,
        FunctionStat,
        Metadata,
        ProcessInfo,
        Profile,
        ThreadInfo,
    )
    from pysampler.server import Server

__version__ = "0.1.0"

from pysampler import _support  # noqa: E402

# Before the native core loads: an untested CPython or a subinterpreter
# gets an ImportError that says why (see _support).
_support.check()


def _stop_at_exit() -> None:
    # Stop a running session at interpreter exit. Registered here, at
    # `import pysampler`, rather than when the session controls load (on
    # first use): atexit runs handlers last-in first-out, and a handler the
    # program registers after importing pysampler may still stop a session
    # and save its profile.
    # A later first load of the controls refuses to start (see _control).
    global _exited
    _exited = True
    control = sys.modules.get("pysampler._control")
    if control is not None:
        control._stop_at_exit()


#: pysampler's exit hook has run: no session may start any more
_exited = False


atexit.register(_stop_at_exit)

#: public name -> the module that defines it
_LAZY = {
    "heap": "pysampler.heap",
    "Profiling": "pysampler._control",
    "cancel": "pysampler._control",
    "is_running": "pysampler._control",
    "start": "pysampler._control",
    "stop": "pysampler._control",
    "ProfilerAlreadyRunning": "pysampler.errors",
    "ProfilerNotRunning": "pysampler.errors",
    "PysamplerError": "pysampler.errors",
    "SnapshotInProgress": "pysampler.errors",
    "HeapMetadata": "pysampler.heap_profile",
    "HeapProfile": "pysampler.heap_profile",
    "Frame": "pysampler.profile",
    "FunctionStat": "pysampler.profile",
    "Metadata": "pysampler.profile",
    "ProcessInfo": "pysampler.profile",
    "Profile": "pysampler.profile",
    "ThreadInfo": "pysampler.profile",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pysampler' has no attribute {name!r}")
    import importlib

    loaded = importlib.import_module(module)
    value = loaded if module == f"pysampler.{name}" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "profile"})


class _Package(types.ModuleType):
    """The package's module type. ``pysampler.profile`` names both the
    ``profile()`` context manager and the submodule defining Profile; the
    import system binds a submodule onto its package when it first loads
    it, whenever that is, so the function is a property the binding cannot
    replace (the submodule stays in ``sys.modules``)."""

    @property
    def profile(self) -> object:
        from pysampler._control import profile

        return profile

    @profile.setter
    def profile(self, value: object) -> None:
        pass


sys.modules[__name__].__class__ = _Package


def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    token: "str | None" = None,
    max_duration: float = 600.0,
    heap: bool = False,
    heap_sample_bytes: int = 512 * 1024,
    allowed_hosts: "Iterable[str]" = (),
) -> "Server":
    """Serve profiles of this process over HTTP; see :func:`pysampler.server.serve`.

    Args:
        port: TCP port; 0 picks a free one (read it from ``.port``).
        host: address to bind (loopback by default).
        token: when given, requests need ``Authorization: Bearer <token>``.
        max_duration: longest profile a request may ask for, in seconds.
        heap: keep a heap profiling session running for ``/debug/pprof/heap``.
        heap_sample_bytes: mean bytes between heap samples for that session.
        allowed_hosts: host names requests may address besides IP literals
            and ``localhost`` (DNS rebinding guard); ``"*"`` allows any.
    """
    # Imported on use: a program that never serves does not pay for it.
    from pysampler.server import serve as _serve

    return _serve(port, host, token, max_duration, heap, heap_sample_bytes, allowed_hosts)


__all__ = [
    "Frame",
    "FunctionStat",
    "HeapMetadata",
    "HeapProfile",
    "Metadata",
    "ProcessInfo",
    "Profile",
    "ProfilerAlreadyRunning",
    "ProfilerNotRunning",
    "Profiling",
    "PysamplerError",
    "SnapshotInProgress",
    "ThreadInfo",
    "__version__",
    "cancel",
    "heap",
    "is_running",
    "profile",
    "serve",
    "start",
    "stop",
]
