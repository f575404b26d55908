"""Build of the native core: src/_sampler.pyx becomes pysampler._sampler.

The extension is named explicitly because its source sits outside the
package directory, beside the C headers it includes (src/_sampler/*.h).
"""

import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

extra_compile_args = []
if sys.platform != "win32":
    extra_compile_args = ["-O2", "-Wall", "-Wno-unused-function"]

extension = Extension(
    "pysampler._sampler",
    sources=["src/_sampler.pyx"],
    include_dirs=["src"],
    depends=[
        "src/_sampler/core.h",
        "src/_sampler/platform.h",
        "src/_sampler/pyframes.h",
        "src/_sampler/tables.h",
        "src/_sampler/tasks.h",
    ],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=extra_compile_args,
)

setup(ext_modules=cythonize([extension], language_level=3))
