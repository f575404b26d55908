"""pysampler: a low-overhead sampling profiler for live Python processes.

>>> import pysampler
>>> pysampler.start()                  # hz=100, mode="cpu"
>>> prof = pysampler.stop()
>>> prof.save("out.pprof")             # or "out.cpuprofile"
"""

from pysampler import heap
from pysampler._control import Profiling, cancel, is_running, profile, start, stop
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning, PysamplerError
from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import Frame, FunctionStat, Metadata, Profile, ThreadInfo

__version__ = "0.1.0"

__all__ = [
    "Frame",
    "FunctionStat",
    "HeapMetadata",
    "HeapProfile",
    "Metadata",
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
    "start",
    "stop",
]
