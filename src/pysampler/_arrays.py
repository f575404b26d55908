"""Profile columns without numpy: ``array.array`` inside, numpy views outside.

Profiles keep their columns as ``array.array`` ('i' int32, 'q' int64), so
building one and writing any format never imports numpy into the profiled
process (importing numpy costs a host about 27 MiB RSS, 120 ms of start-up
and several percent on allocation-heavy code, for the rest of its life).
The analysis API (``Profile.stack`` and the other column attributes) gives
read-only numpy views of them, made on first access without copying: that
first access is what imports numpy.
"""

from __future__ import annotations

import array
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt

INT32 = "i"
INT64 = "q"
FLOAT64 = "d"
_DTYPES = {INT32: "int32", INT64: "int64", FLOAT64: "float64"}


def column(values: Any, typecode: str) -> array.array[Any]:
    """``values`` (a sequence of integers, an ``array.array`` or a numpy
    array) as a one-dimensional ``array.array`` of ``typecode``. An
    ``array.array`` of that typecode is taken as it is, not copied.

    Raises:
        ValueError: the values are not one-dimensional integers that fit.
    """
    if type(values) is array.array and values.typecode == typecode:
        return values
    np = sys.modules.get("numpy")
    if np is not None and isinstance(values, np.ndarray):
        # numpy is loaded already: the caller made this array with it
        arr = np.ascontiguousarray(values, dtype=_DTYPES[typecode])
        if arr.ndim != 1:
            raise ValueError("profile columns must be one-dimensional")
        out: array.array[Any] = array.array(typecode)
        out.frombytes(memoryview(arr).cast("B"))
        return out
    try:
        return array.array(typecode, values)
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"profile columns must be one-dimensional integers ({exc})") from None


def ones(n: int) -> array.array[int]:
    """An int32 column of ``n`` ones."""
    return array.array(INT32, [1]) * n


def zeros(n: int, typecode: str = INT64) -> array.array[Any]:
    """A column of ``n`` zeros."""
    return array.array(typecode, [0]) * n


def numpy_view(values: array.array[Any]) -> npt.NDArray[Any]:
    """A read-only numpy array over ``values``' memory (no copy). Imports
    numpy: only the analysis API calls this."""
    import numpy as np

    dtype = np.dtype(_DTYPES[values.typecode])
    view = np.frombuffer(values, dtype=dtype) if len(values) else np.empty(0, dtype=dtype)
    view.flags.writeable = False
    return view
