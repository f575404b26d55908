"""Just enough of the protobuf wire format to write (and read) profile.proto.

Varints, length-delimited fields and packed repeated integers; no schema
machinery and no dependency.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

VARINT = 0
LEN = 2


def varint(value: int) -> bytes:
    """Encode an unsigned (or two's-complement 64-bit) integer as a varint."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Message:
    """A message under construction; fields are appended in call order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def uint(self, field: int, value: int) -> Message:
        """A varint field; zero is the default and is left out."""
        if value:
            self._buf += varint(field << 3 | VARINT)
            self._buf += varint(value)
        return self

    def flag(self, field: int, value: bool) -> Message:
        return self.uint(field, 1 if value else 0)

    def raw(self, field: int, value: bytes) -> Message:
        self._buf += varint(field << 3 | LEN)
        self._buf += varint(len(value))
        self._buf += value
        return self

    def text(self, field: int, value: str) -> Message:
        return self.raw(field, value.encode("utf-8"))

    def sub(self, field: int, value: Message) -> Message:
        return self.raw(field, value.encode())

    def packed(self, field: int, values: Iterable[int]) -> Message:
        body = b"".join(varint(v) for v in values)
        if body:
            self.raw(field, body)
        return self

    def encode(self) -> bytes:
        return bytes(self._buf)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Iterate a message's (field number, wire type, value)."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(data, pos)
            yield field, wire, value
        elif wire == LEN:
            size, pos = read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield field, wire, data[pos : pos + size]
            pos += size
        elif wire == 1:
            yield field, wire, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == 5:
            yield field, wire, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def unpack(value: int | bytes) -> list[int]:
    """A repeated integer field's values, packed or not."""
    if isinstance(value, int):
        return [value]
    out = []
    pos = 0
    while pos < len(value):
        v, pos = read_varint(value, pos)
        out.append(v)
    return out
