"""A live match's frames on disk as they are made, so a server restart loses only the last second.

One journal per run of a match (``.<run>.journal`` beside the recordings; a run is one match
from its first post to its recording, and its id is the recording's). The header holds the
match's name, run, start and description; each record is one sealed chunk of the run's
``GrowingStore`` (~1 s of frames, zstd-compressed, exactly as the store keeps it) with the time
it was written. After a restart the server finds every journal at start-up: a run whose game
posts again continues from it (under a new epoch); one whose game stays silent for
``--gsi-finish-after`` seconds after its last record is written as a recording. The journal is
removed once its run is a recording.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from server.streams.store import GrowingStore

log = logging.getLogger(__name__)

MAGIC = b"EEICTJN2"  # 2: records carry the time they were written
SUFFIX = ".journal"
_LENGTH = struct.Struct("<I")
_RECORD = struct.Struct("<Id")  # chunk length, Unix time written
MAX_CHUNK = 64 * 1024 * 1024  # a chunk of 64 frames is ~200 KB; anything near this is damage


def journal_path(folder: Path, run: str) -> Path:
    return folder / f".{run}{SUFFIX}"


@dataclass
class Contents:
    """What a journal holds: its header, its whole chunks and where each one ends."""

    path: Path
    name: str  # the match (stream id)
    run: str  # the run (recording id)
    started: float  # Unix time of the run's first post
    meta: dict[str, Any]  # the match description (map, tickrate, teams, ...)
    written_at: float  # when the last record (or the header) was written
    chunks: list[bytes] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # file size after each chunk's record
    header_size: int = 0

    def load(self, frames_per_chunk: int) -> tuple[GrowingStore, int]:
        """The run's frames as a store, and the journal size they fill: the chunks up to the
        first damaged one (a later run appends after them, never after damage)."""
        store = GrowingStore(self.name, self.meta, frames_per_chunk)
        size = self.header_size
        for chunk, end in zip(self.chunks, self.ends, strict=True):
            try:
                store.add_sealed_chunk(chunk)
            except ValueError as exc:
                log.warning("journal %s: %s; the frames after it are dropped", self.path.name, exc)
                break
            size = end
        return store, size


def read(path: Path) -> Contents | None:
    """The journal's contents; None if it is not one (another format, or no header).

    A torn last record (the process died while writing it) is dropped, and the file is cut
    back to the last whole record so appending continues cleanly.
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
        header = msgpack.unpackb(data[offset : offset + size])
        contents = Contents(
            path,
            str(header["name"]),
            str(header["run"]),
            float(header["started"]),
            dict(header["meta"]),
            float(header["written_at"]),
        )
    except Exception:  # not a header this server wrote
        return None
    offset += size
    contents.header_size = offset
    while offset + _RECORD.size <= len(data):
        size, written_at = _RECORD.unpack_from(data, offset)
        end = offset + _RECORD.size + size
        if size > MAX_CHUNK or end > len(data):
            break
        contents.chunks.append(data[offset + _RECORD.size : end])
        contents.ends.append(end)
        contents.written_at = written_at
        offset = end
    if offset != len(data):
        with contextlib.suppress(OSError):
            os.truncate(path, offset)
    return contents


def scan(folder: Path) -> tuple[list[Contents], list[Path]]:
    """Every journal in ``folder``: those read, and the files that are not journals this
    server can read (left where they are, for a person to look at)."""
    found, unreadable = [], []
    for path in sorted(folder.glob(f".*{SUFFIX}")):
        contents = read(path)
        if contents is None:
            unreadable.append(path)
        else:
            found.append(contents)
    return found, unreadable


class Journal:
    """Writes a run's sealed chunks as the store seals them; the store stays the truth.

    ``write`` catches up with the store from where the last successful write ended, so a
    failed write (a full disk) loses nothing: the file is cut back to its last whole record
    and the next ``write`` tries again.
    """

    def __init__(
        self,
        path: Path,
        header: dict[str, Any],
        size: int = 0,
        chunks: int = 0,
    ) -> None:
        self.path = path
        self.header = header  # name, run, started, meta
        self.size = size  # bytes of whole records in the file (0: not started)
        self.chunks = chunks  # chunks written
        self._fd: int | None = None

    def write(self, store: GrowingStore, now: float) -> None:
        """Append every chunk ``store`` sealed since the last write. Raises OSError."""
        if self.chunks >= store.sealed_count and self.size:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                os.ftruncate(self._fd, self.size)
                os.lseek(self._fd, self.size, os.SEEK_SET)
            if not self.size:
                header = msgpack.packb({**self.header, "written_at": now})
                self._write(MAGIC + _LENGTH.pack(len(header)) + header)
            while self.chunks < store.sealed_count:
                chunk = store.sealed_chunk(self.chunks)
                self._write(_RECORD.pack(len(chunk), now) + chunk)
                self.chunks += 1
        except OSError:
            self._abandon()
            raise

    def _write(self, data: bytes) -> None:
        """All of ``data`` or an OSError; then it counts as written (the kernel has it: a crash
        of this process keeps it)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def _abandon(self) -> None:
        """After a failed write: cut the file back to its whole records and close it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self.size)
        os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
