"""The emulation flag (helpers.EMULATED, PYSAMPLER_EMULATED=1) is set where
the suite runs under an emulator, so that the few tests that allow for one
(and say so) do. scripts/matrix/in-chroot.sh sets it for a chroot of another
architecture, run by qemu-user."""

from __future__ import annotations

import platform
import re

import pytest

from helpers import EMULATED

#: platform.machine() spellings of the two CPU families told apart below
FAMILY = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "arm64", "arm64": "arm64"}


def _cpuinfo_family() -> str | None:
    """The CPU family /proc/cpuinfo describes. qemu-user (7.2, Debian
    bookworm's) passes the host's file through, so under it this is the
    host's CPU, not the emulated one; None where it cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    if re.search(r"^vendor_id\s*:", text, re.MULTILINE):
        return "x86-64"
    if re.search(r"^CPU implementer\s*:", text, re.MULTILINE):
        return "arm64"
    return None


def test_emulation_is_flagged_where_the_cpu_is_of_another_architecture() -> None:
    machine = FAMILY.get(platform.machine().lower())
    cpu = _cpuinfo_family()
    if machine is None or cpu is None:
        pytest.skip(f"no CPU family known for {platform.machine()} or in /proc/cpuinfo")
    if cpu != machine:
        assert EMULATED, (
            f"this interpreter runs {machine} code on a {cpu} CPU, so under an emulator: "
            "set PYSAMPLER_EMULATED=1 (scripts/matrix/in-chroot.sh does for its chroots)"
        )
