"""The CS2 demo file's own formats, as far as stringtables.py needs them.

A .dem file is a 16-byte header and a run of frames (command, tick, size as varints, then the
body, snappy-compressed when the command has bit 64). Frame bodies are protobuf messages; a
packet frame's data is a bit stream of network messages (type as UBitVar, size as varint,
body). Nothing here knows what a message means: it reads and writes these layers only.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import NamedTuple

import pyarrow

HEADER_SIZE = 16  # magic (8), file info offset, spawn groups offset
COMPRESSED = 64  # a frame command with this bit has a snappy-compressed body
DEM_STOP, DEM_STRING_TABLES, DEM_PACKET, DEM_SIGNON_PACKET = 0, 6, 7, 8
DEM_FULL_PACKET = 13
_MAX_INFLATION = 64  # snappy cannot inflate more than this (an honest frame is far below)


class WireError(ValueError):
    """Bytes that do not follow the demo's formats (the demo is corrupt)."""


Data = bytes | memoryview | mmap.mmap


class Frame(NamedTuple):
    start: int  # offset of the frame's first byte in the file
    command: int  # without the compression bit
    compressed: bool
    tick: int
    body: int  # offset of the body
    end: int  # offset after the body


def frames(data: Data, commands: frozenset[int] | None = None) -> Iterator[Frame]:
    """The frames of a demo file's bytes, up to and including DEM_Stop; only those whose
    command is in ``commands`` when it is given (the walk itself sees every frame)."""
    i, size = HEADER_SIZE, len(data)
    header = [0, 0, 0]
    while i < size:
        start = i
        for n in range(3):  # command, tick, body size: varints, read inline (hot loop)
            value = shift = 0
            while True:
                if i >= size:
                    raise WireError(f"the frame at byte {start} runs past the end of the file")
                byte = data[i]
                i += 1
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise WireError(f"the frame at byte {start} has a varint over 64 bits")
            header[n] = value
        command, tick, length = header
        if i + length > size:
            raise WireError(f"the frame at byte {start} runs past the end of the file")
        kind = command & ~COMPRESSED
        if commands is None or kind in commands:
            yield Frame(start, kind, bool(command & COMPRESSED), tick, i, i + length)
        i += length
        if kind == DEM_STOP:
            return


def frame_body(data: Data, frame: Frame) -> bytes:
    body = bytes(data[frame.body : frame.end])
    return snappy(body) if frame.compressed else body


def encode_frame(command: int, tick: int, body: bytes) -> bytes:
    return encode_varint(command) + encode_varint(tick) + encode_varint(len(body)) + body


def varint(data: Data, i: int) -> tuple[int, int]:
    """The varint at ``i`` and the offset after it."""
    value = shift = 0
    while True:
        if i >= len(data):
            raise WireError("a varint runs past the end of its data")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise WireError("a varint longer than 64 bits")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def snappy(body: bytes) -> bytes:
    """A raw snappy block (the format frames and string tables use)."""
    size, _ = varint(body, 0)  # the block starts with its uncompressed length
    if size > _MAX_INFLATION * len(body) + 1024:
        raise WireError(f"a snappy block claims {size} bytes from {len(body)}")
    try:
        return pyarrow.decompress(body, decompressed_size=size, codec="snappy").to_pybytes()
    except (OSError, ValueError) as exc:
        raise WireError(f"a snappy block does not decompress: {exc}") from exc


# -- protobuf ---------------------------------------------------------------------------------


def fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, the rest as bytes."""
    i = 0
    while i < len(message):
        key, i = varint(message, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = varint(message, i)
            yield number, value
        elif kind == 2:
            length, i = varint(message, i)
            if i + length > len(message):
                raise WireError("a protobuf field runs past the end of its message")
            yield number, message[i : i + length]
            i += length
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            if i + width > len(message):
                raise WireError("a protobuf field runs past the end of its message")
            yield number, message[i : i + width]
            i += width
        else:
            raise WireError(f"unknown protobuf wire type {kind}")


def bytes_field(number: int, value: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


def int_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


# -- bit streams ------------------------------------------------------------------------------


class BitReader:
    """Little-endian bits from ``data``, the way the game packs packets and string tables."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0  # in bits
        self.size = 8 * len(data)

    def read(self, bits: int) -> int:
        if self.position + bits > self.size:
            raise WireError("a bit stream ends in the middle of a value")
        start = self.position >> 3
        chunk = int.from_bytes(self.data[start : start + (bits + 15) // 8], "little")
        value = (chunk >> (self.position & 7)) & ((1 << bits) - 1)
        self.position += bits
        return value

    def flag(self) -> bool:
        return self.read(1) == 1

    def ubitvar(self) -> int:
        """Source 2's UBitVar: 4 low bits, then 2 bits saying how many more follow."""
        value = self.read(6)
        more = value & 0x30
        if more == 16:
            return (value & 15) | (self.read(4) << 4)
        if more == 32:
            return (value & 15) | (self.read(8) << 4)
        if more == 48:
            return (value & 15) | (self.read(28) << 4)
        return value

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.read(8)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise WireError("a varint longer than 64 bits")

    def bytes(self, count: int) -> bytes:
        return self.read(8 * count).to_bytes(count, "little") if count else b""

    def string(self) -> bytes:
        """A NUL-terminated string (without the NUL)."""
        out = bytearray()
        while (byte := self.read(8)) != 0:
            out.append(byte)
        return bytes(out)

    def skip(self, bits: int) -> None:
        if self.position + bits > self.size:
            raise WireError("a bit stream ends in the middle of a value")
        self.position += bits

    @property
    def left(self) -> int:
        return self.size - self.position


class BitWriter:
    """The writing side of BitReader: whole bytes go out as soon as they are complete."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._bits = 0  # pending bits, fewer than 8 after every call
        self._count = 0

    def put(self, value: int, bits: int) -> None:
        self._bits |= (value & ((1 << bits) - 1)) << self._count
        self._count += bits
        self._flush()

    def flag(self, value: bool) -> None:
        self.put(int(value), 1)

    def bytes(self, data: bytes) -> None:
        if not self._count:
            self._out += data
            return
        self._bits |= int.from_bytes(data, "little") << self._count
        self._count += 8 * len(data)
        self._flush()

    def _flush(self) -> None:
        whole = self._count // 8
        if whole:
            self._out += (self._bits & ((1 << (8 * whole)) - 1)).to_bytes(whole, "little")
            self._bits >>= 8 * whole
            self._count -= 8 * whole

    def ubitvar(self, value: int) -> None:
        if value < 16:
            self.put(value, 6)
        elif value < 256:
            self.put((value & 15) | 16, 6)
            self.put(value >> 4, 4)
        elif value < 4096:
            self.put((value & 15) | 32, 6)
            self.put(value >> 4, 8)
        else:
            self.put((value & 15) | 48, 6)
            self.put(value >> 4, 28)

    def getvalue(self) -> bytes:
        if self._count:
            return bytes(self._out) + self._bits.to_bytes(1, "little")
        return bytes(self._out)


# -- packets ----------------------------------------------------------------------------------


def packet_messages(packet: bytes, wanted: frozenset[int]) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each message of type in ``wanted`` in a CDemoPacket (its data = 3);
    the others are skipped without being copied."""
    data = next((v for n, v in fields(packet) if n == 3 and isinstance(v, bytes)), b"")
    bits = BitReader(data)
    while bits.left > 8:
        kind = bits.ubitvar()
        size = bits.varint()
        if kind in wanted:
            yield kind, bits.bytes(size)
        else:
            bits.skip(8 * size)


def encode_packet(messages: list[tuple[int, bytes]]) -> bytes:
    """A CDemoPacket holding ``messages`` (type, body)."""
    bits = BitWriter()
    for kind, body in messages:
        bits.ubitvar(kind)
        bits.bytes(encode_varint(len(body)))
        bits.bytes(body)
    return bytes_field(3, bits.getvalue())
