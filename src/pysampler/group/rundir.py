"""The per-user directory that holds each group's control sockets.

Everything a group exchanges goes through sockets in this directory, so it
is the group's only protection against other users: it is made with mode
0700 and checked before every use (owned by this user, a real directory
and not a symlink to someone else's, no permission for anyone else). A
directory that fails the check is never used.

A member that joins needs only the check, the lock and its socket's path;
what founding a group and sweeping old ones need is imported by them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat

LOCK_NAME = "leader.lock"
PORT_NAME = "port"
SOCKET_SUFFIX = ".sock"


class NotPrivate(PermissionError):
    """A group directory that is not this user's alone: never used."""


def user_dir() -> str:
    """``$TMPDIR/pysampler-<uid>``: where this user's groups live."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"pysampler-{os.geteuid()}")


def check_private(path: str) -> None:
    """Raise PermissionError unless ``path`` is a directory (not a symlink)
    owned by this user that no one else may enter or list."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotPrivate(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise NotPrivate(f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()}")
    if st.st_mode & 0o077:
        raise NotPrivate(f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o})")


def make_private(path: str) -> None:
    """Create ``path`` with mode 0700 if it is missing, then check it."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)  # checked below, whoever made it
    check_private(path)


def new_group() -> str:
    """A new, empty group directory; its path is the group's identity."""
    base = user_dir()
    make_private(base)
    sweep(base)
    path = os.path.join(base, os.urandom(8).hex())
    os.mkdir(path, 0o700)
    check_private(path)
    return path


def open_group(path: str) -> None:
    """Check an inherited group directory (and the user directory above
    it); re-create the group's own directory if a cleaner removed it."""
    if not os.path.isabs(path):
        raise NotPrivate(f"{path!r} is not an absolute path")
    check_private(os.path.dirname(path))
    make_private(path)


def open_lock(path: str) -> int:
    """A descriptor of the group's leader lock file (not inherited by exec)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    return os.open(os.path.join(path, LOCK_NAME), flags, 0o600)


def try_lock(fd: int) -> bool:
    """Take the leader lock if no live process holds it. An fcntl (POSIX)
    lock belongs to the process: the kernel drops it when the process
    exits, and a forked child does not inherit it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def member_pids(path: str) -> list[int]:
    """Pids that have a control socket in the group directory."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    out = []
    for name in names:
        stem = name[: -len(SOCKET_SUFFIX)]
        if name.endswith(SOCKET_SUFFIX) and stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def socket_path(path: str, pid: int) -> str:
    return os.path.join(path, f"{pid}{SOCKET_SUFFIX}")


def read_port(path: str) -> int:
    """The port the group last served on; 0 if unknown."""
    try:
        with open(os.path.join(path, PORT_NAME)) as f:
            text = f.read(16).strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() and int(text) <= 65535 else 0


def write_port(path: str, port: int) -> None:
    tmp = os.path.join(path, f".{PORT_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, os.path.join(path, PORT_NAME))


def _alive(path: str) -> bool:
    """Whether some process leads or belongs to the group at ``path``."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        fd = -1
    except OSError:
        return True  # cannot tell: leave it
    try:
        if fd >= 0 and not try_lock(fd):
            return True
        for pid in member_pids(path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.2)
                try:
                    probe.connect(socket_path(path, pid))
                    return True
                except OSError:
                    continue
        return False
    finally:
        if fd >= 0:
            os.close(fd)  # also releases a lock taken above


def sweep(base: str, limit: int = 32) -> None:
    """Remove up to ``limit`` group directories no live process uses
    (groups killed whole, never cleaned up)."""
    import shutil

    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries[:limit]:
        if entry.is_dir(follow_symlinks=False) and not _alive(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
