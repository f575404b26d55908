"""pysampler: a low-overhead sampling profiler for live Python processes.

>>> import pysampler
>>> pysampler.start()                  # hz=100, mode="cpu"
>>> prof = pysampler.stop()
>>> prof.save("out.pprof")             # or "out.cpuprofile"
"""

from pysampler._control import Profiling, cancel, is_running, profile, start, stop
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning, PysamplerError
from pysampler.profile import Frame, FunctionStat, Metadata, Profile, ThreadInfo

__version__ = "0.1.0"

__all__ = [
    "Frame",
    "FunctionStat",
    "Metadata",
    "Profile",
    "ProfilerAlreadyRunning",
    "ProfilerNotRunning",
    "Profiling",
    "PysamplerError",
    "ThreadInfo",
    "__version__",
    "cancel",
    "is_running",
    "profile",
    "start",
    "stop",
]
