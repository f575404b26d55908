"""The control channel between a group's processes: Unix stream sockets
carrying framed messages.

A message is one line of JSON (the header, with ``size``: the length of a
binary payload that follows, e.g. a profile) and the payload. Every
connection is checked both ways for the peer's uid: a process of another
user (root included) is dropped before a byte is read from it.

An idle member imports this module to listen; ``json`` waits for the
first message.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Message = tuple[dict[str, Any], bytes]

#: the longest header line accepted; anything longer is not ours
MAX_HEADER = 1 << 16
#: the largest payload accepted (a profile far past the tables' caps)
MAX_PAYLOAD = 1 << 31


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket; None if
    the platform cannot tell (the connection is then refused)."""
    try:
        if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
            data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return int(struct.unpack("3i", data)[1])
        if sys.platform == "darwin" or "bsd" in sys.platform:
            # LOCAL_PEERCRED (1) at level SOL_LOCAL (0): struct xucred
            # {u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]}
            data = sock.getsockopt(0, 1, struct.calcsize("IIh16I"))
            return int(struct.unpack_from("II", data)[1])
    except OSError:
        return None
    return None


def same_user(sock: socket.socket) -> bool:
    return peer_uid(sock) == os.geteuid()


def listen(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` (a stale socket file there is
    replaced), readable by this user only."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(path: str, timeout: float) -> socket.socket:
    """A connection to the member listening at ``path``, checked to belong
    to this user (PermissionError otherwise)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if not same_user(sock):
            raise PermissionError(f"{path} is served by another user")
    except BaseException:
        sock.close()
        raise
    return sock


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A message: ``header`` as one line of JSON, with ``size``, then ``payload``."""
    import json

    line = json.dumps({**header, "size": len(payload)}, separators=(",", ":"))
    return line.encode() + b"\n" + payload


class Reader:
    """Splits bytes received on a connection into messages.

    Args:
        first_only: stop after the first message; what follows it (a
            stream, not messages) stays for :meth:`rest`.
    """

    def __init__(self, first_only: bool = False) -> None:
        self._buf = bytearray()
        self._header: dict[str, Any] | None = None
        self._first_only = first_only
        self._done = False

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by ``data``; ValueError on a malformed one."""
        import json

        self._buf += data
        out: list[Message] = []
        while not self._done:
            if self._header is None:
                end = self._buf.find(b"\n")
                if end < 0:
                    if len(self._buf) > MAX_HEADER:
                        raise ValueError("header line too long")
                    return out
                header = json.loads(bytes(self._buf[:end]))
                if not isinstance(header, dict):
                    raise ValueError("header is not an object")
                size = header.get("size", 0)
                if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD:
                    raise ValueError("bad payload size")
                del self._buf[: end + 1]
                self._header = header
            size = self._header["size"]
            if len(self._buf) < size:
                return out
            out.append((self._header, bytes(self._buf[:size])))
            del self._buf[:size]
            self._header = None
            self._done = self._first_only
        return out

    def rest(self) -> bytes:
        """Bytes received past the last complete message (the start of a
        stream that follows a header), taken out of the reader."""
        data = bytes(self._buf)
        self._buf.clear()
        return data


def read_message(sock: socket.socket, timeout: float) -> Message | None:
    """One message, read within ``timeout`` seconds; None on EOF or timeout."""
    reader = Reader(first_only=True)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except (socket.timeout, OSError):
            return None
        if not data:
            return None
        messages = reader.feed(data)
        if messages:
            return messages[0]
