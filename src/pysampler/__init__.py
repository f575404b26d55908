"""pysampler: a low-overhead sampling profiler for live Python processes.

>>> import pysampler
>>> pysampler.start()                  # hz=100, mode="cpu"
>>> prof = pysampler.stop()
>>> prof.save("out.pprof")             # or "out.cpuprofile"
"""

from typing import TYPE_CHECKING

from pysampler import heap
from pysampler._control import Profiling, cancel, is_running, profile, start, stop
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning, PysamplerError
from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import Frame, FunctionStat, Metadata, ProcessInfo, Profile, ThreadInfo

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pysampler.server import Server


def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    token: "str | None" = None,
    max_duration: float = 600.0,
    heap: bool = False,
    heap_sample_bytes: int = 512 * 1024,
) -> "Server":
    """Serve profiles of this process over HTTP; see :func:`pysampler.server.serve`.

    Args:
        port: TCP port; 0 picks a free one (read it from ``.port``).
        host: address to bind (loopback by default).
        token: when given, requests need ``Authorization: Bearer <token>``.
        max_duration: longest profile a request may ask for, in seconds.
        heap: keep a heap profiling session running for ``/debug/pprof/heap``.
        heap_sample_bytes: mean bytes between heap samples for that session.
    """
    # Imported on use: http.server is not paid for by programs that never serve.
    from pysampler.server import serve as _serve

    return _serve(port, host, token, max_duration, heap, heap_sample_bytes)


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
