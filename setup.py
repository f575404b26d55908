"""Build of the native parts: src/_sampler.pyx becomes pysampler._sampler
(the sampler), src/_columns.pyx becomes pysampler._columns (the loops over
a profile's rows that building and writing it needs).

The extensions are named explicitly because their sources sit outside the
package directory, the sampler's beside the C headers it includes
(src/_sampler/*.h).
"""

import os
import runpy
import sys

# CPython versions the native core was checked against: a newer one is
# refused first thing (and by #error fences in pyframes.h and tasks.h),
# unless PYSAMPLER_ALLOW_UNTESTED_PYTHON=1
_here = os.path.dirname(os.path.abspath(__file__))
_support = runpy.run_path(os.path.join(_here, "src", "pysampler", "_support.py"))
_problem = _support["version_problem"]()
if _problem is not None:
    sys.exit(f"error: {_problem}")

from Cython.Build import cythonize  # noqa: E402
from setuptools import Extension, setup  # noqa: E402
from setuptools.command.build_py import build_py  # noqa: E402

define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if _support["untested_allowed"]():
    define_macros.append(("PYSAMPLER_ALLOW_UNTESTED_PYTHON", "1"))

extra_compile_args = []
if sys.platform != "win32":
    extra_compile_args = ["-O2", "-Wall", "-Wno-unused-function"]

# heap.h draws exponential intervals with log(), which glibc keeps in libm;
# placement.h looks symbols up with dlsym(), in libdl before glibc 2.34
libraries = ["m", "dl"] if sys.platform.startswith("linux") else []

extension = Extension(
    "pysampler._sampler",
    sources=["src/_sampler.pyx"],
    include_dirs=["src"],
    depends=[
        "src/_sampler/core.h",
        "src/_sampler/codes.h",
        "src/_sampler/cpu.h",
        "src/_sampler/reader.h",
        "src/_sampler/saferead.h",
        "src/_sampler/placement.h",
        "src/_sampler/platform.h",
        "src/_sampler/pyframes.h",
        "src/_sampler/tables.h",
        "src/_sampler/heap.h",
        "src/_sampler/tasks.h",
    ],
    define_macros=define_macros,
    extra_compile_args=extra_compile_args,
    libraries=libraries,
)

columns = Extension(
    "pysampler._columns",
    sources=["src/_columns.pyx"],
    extra_compile_args=extra_compile_args,
)

#: Start-up hook for ``PYSAMPLER_PORT=9119 python app.py``: site.py runs this
#: line at every interpreter start, so it only reads os.environ (site has
#: imported os already) and imports the small hook module, which starts the
#: HTTP endpoint, only when the variable is set. The name sorts after
#: ``__editable__.*.pth`` so an editable install's path entry exists first.
HOOK_PTH = "pysampler-hook.pth"
HOOK_LINE = "import os; os.environ.get('PYSAMPLER_PORT') and __import__('_pysampler_hook')\n"


class build_py_with_hook(build_py):
    """build_py that also writes the start-up hook beside the packages."""

    def run(self) -> None:
        super().run()
        target = self.build_lib
        if getattr(self, "editable_mode", False):
            # An editable wheel ignores build_lib; setuptools points the
            # install command's install_lib at the unpacked wheel's root,
            # which becomes site-packages when installed.
            target = self.get_finalized_command("install").install_lib
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, HOOK_PTH), "w", encoding="utf-8") as f:
            f.write(HOOK_LINE)


#: The heap snapshot's graph walk: a module of its own, apart from the
#: sampler's primitives (it only shares pyframes.h, for thread stacks).
heapgraph = Extension(
    "pysampler._heapgraph",
    sources=["src/_heapgraph.pyx"],
    include_dirs=["src"],
    depends=[
        "src/_heapgraph/graph.h",
        "src/_heapgraph/out.h",
        "src/_heapgraph/pyobjects.h",
        "src/_heapgraph/refs.h",
        "src/_heapgraph/tables.h",
        "src/_heapgraph/walk.h",
        "src/_sampler/pyframes.h",
        "src/_sampler/tables.h",
    ],
    extra_compile_args=extra_compile_args,
)

setup(
    ext_modules=cythonize([extension, columns, heapgraph], language_level=3),
    cmdclass={"build_py": build_py_with_hook},
)
