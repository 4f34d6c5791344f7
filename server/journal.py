"""A live match's frames on disk as they are made, so a server restart loses only the last second.

Each sealed chunk of the match's ``GrowingStore`` (~1 s of frames, zstd-compressed) is appended
with its length; the header holds the match description. After a restart the next post for the
same match reloads the journal and the match goes on (under a new epoch). The journal is removed
once the match has been written as a recording.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import zstandard

MAGIC = b"EEICTJNL"
_LENGTH = struct.Struct("<I")
MAX_CHUNK = 64 * 1024 * 1024  # a chunk of 64 frames is ~200 KB; anything near this is damage


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def start(self, meta: dict[str, Any]) -> None:
        """Begin a new journal (replacing an old one) with the match description."""
        header = msgpack.packb(meta)
        self._file = open(self.path, "wb")  # noqa: SIM115 (kept open while the match runs)
        self._file.write(MAGIC + _LENGTH.pack(len(header)) + header)
        self._file.flush()

    def reopen(self) -> None:
        """Append to an existing journal (after ``read`` loaded it)."""
        self._file = open(self.path, "ab")  # noqa: SIM115

    def append(self, chunk: bytes) -> None:
        """Add one sealed chunk, flushed to the kernel at once: a crash of this process keeps it."""
        assert self._file is not None
        self._file.write(_LENGTH.pack(len(chunk)) + chunk)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def read(path: Path) -> tuple[dict[str, Any], Iterator[list[Any]]] | None:
    """The description and the frames (per chunk) of a journal; None if it is not one.

    A torn last record (the process died while writing it) is dropped, and the file is cut
    back to the last whole chunk so appending continues cleanly.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size:
        return None
    offset = len(MAGIC)
    (size,) = _LENGTH.unpack_from(data, offset)
    offset += _LENGTH.size
    try:
        meta = msgpack.unpackb(data[offset : offset + size])
    except Exception:
        return None
    offset += size
    chunks: list[bytes] = []
    while offset + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        if size > MAX_CHUNK or offset + _LENGTH.size + size > len(data):
            break
        chunks.append(data[offset + _LENGTH.size : offset + _LENGTH.size + size])
        offset += _LENGTH.size + size
    if offset != len(data):
        os.truncate(path, offset)

    def frames() -> Iterator[list[Any]]:
        decompressor = zstandard.ZstdDecompressor()
        for chunk in chunks:
            unpacker = msgpack.Unpacker()
            unpacker.feed(decompressor.decompress(chunk))
            yield list(unpacker)

    return meta, frames()
