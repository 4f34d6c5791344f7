"""A live match's run, once over, written as a normal recording (the same file a demo gives).

A run's id names both its journal (server/journal.py) and its recording: ``<match>-<start>``
(UTC, to the second), with ``-2``, ``-3``, ... when a run of that match already started in the
same second, so a new run never takes an older run's files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from processing.frames import Frame
from processing.recording import SUFFIX, write_recording
from processing.source import SourceInfo
from server.journal import journal_path
from server.streams.store import GrowingStore

_BLOCK = 256  # frames read from the store at a time while writing


def new_run_id(name: str, started: float, folder: Path, taken: set[str]) -> str:
    """An id no run in ``folder`` (journal or recording) nor in ``taken`` has."""
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%d-%H%M%S")
    base = run = f"{name}-{stamp}"
    number = 1
    while (
        run in taken or journal_path(folder, run).exists() or (folder / f"{run}{SUFFIX}").exists()
    ):
        number += 1
        run = f"{base}-{number}"
    return run


def write_match(store: GrowingStore, run: str, folder: Path) -> Path:
    """Write the store's frames as ``<folder>/<run>.eeict`` (atomic: the file appears whole
    or not at all). Blocking: run it in a worker thread."""
    meta = store.meta
    digest = hashlib.sha256()
    for start in range(0, store.frame_count, _BLOCK):
        digest.update(store.frames_bytes(start, start + _BLOCK))
    info = SourceInfo(
        map_name=str(meta["map"]),
        tickrate=float(meta["tickrate"]),
        source_file=str(meta["source_file"]),
        source_sha256=digest.hexdigest(),  # of the frames: a live match has no source file
        parser=str(meta.get("parser", "gsi")),
        team_names=dict(meta["teams"]),
    )
    path = folder / f"{run}{SUFFIX}"
    write_recording(path, info, _frames(store))
    return path


def _frames(store: GrowingStore) -> Iterator[Frame]:
    for start in range(0, store.frame_count, _BLOCK):
        yield from store.frames(start, start + _BLOCK)
