"""Typed face of the heap snapshot's graph walk (src/_heapgraph.pyx)."""

from collections.abc import Callable, Mapping
from typing import Any

def walk(
    nodes_fd: int,
    edges_fd: int,
    strings_fd: int,
    modules: Mapping[str, Any],
    thread_names: Mapping[int, str],
    get_objects: Callable[[], list[Any]],
    ndarray: type | None,
) -> dict[str, Any]: ...
