"""The recordings the server knows: a folder watched for new files, plus built-in ones.

A file that fails to open is listed as refused with the reason instead of crashing anything;
a file is (re)opened only when its size or modification time changes, refused or not, so a
hostile file costs one open, not one per scan. No file can stop a scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.recording import SUFFIX, Recording, RecordingError

log = logging.getLogger(__name__)

RECORDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch


@dataclass
class Entry:
    id: str
    recording: Recording
    path: Path  # the file (built-in recordings live in a cache folder)
    stamp: tuple[int, int]  # (size, mtime_ns) the recording was opened at
    _sha256: str | None = None
    _description: dict[str, Any] | None = None

    def sha256(self) -> str:
        """Checksum of the whole file, for downloads; computed once, on first use."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for block in self.recording.iter_raw():
                digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def describe(self) -> dict[str, Any]:
        """The catalog entry (/recordings, replay's hello); made once, and checked to be
        JSON so that no file can break an answer that lists it (raises if it is not)."""
        if self._description is None:
            description = self._make_description()
            json.dumps(description, allow_nan=False)
            self._description = description
        return dict(self._description)

    def _make_description(self) -> dict[str, Any]:
        meta = self.recording.meta
        return {
            "id": self.id,
            "kind": "recording",
            "path": f"/replay/{self.id}",
            "download": f"/recordings/{self.id}/file",
            "map": meta["map"],
            "tickrate": meta["tickrate"],
            "first_tick": meta["first_tick"],
            "last_tick": meta["last_tick"],
            "frame_count": meta["frame_count"],
            "duration_s": meta["duration_s"],
            "rounds": meta["round_starts"],
            "teams": meta["teams"],
            "players": meta["roster"],
            "synthetic": meta["synthetic"],
            "source_file": meta["source_file"],
            # The match's settings (seconds; None where the source does not say).
            **{key: meta.get(key) for key in ("freeze_time", "round_time", "bomb_time")},
            "events": f"/recordings/{self.id}/events",
            "size_bytes": self.recording.size,
        }


class Catalog:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.entries: dict[str, Entry] = {}
        self.refused: dict[str, str] = {}  # file name -> reason
        self._refused_at: dict[str, tuple[int, int]] = {}  # file name -> (size, mtime_ns) refused
        self._builtin: set[str] = set()
        self._scan_lock = threading.Lock()  # scans run in worker threads; one at a time
        self._scanned_at = 0.0
        self._undescribable: set[str] = set()  # ids whose description failed (logged once)

    def add_builtin(self, recording_id: str, recording: Recording, path: Path) -> Entry:
        """A recording that lives outside the folder (the generated match, a finished live match
        when no folder is set)."""
        stat = path.stat()
        entry = Entry(recording_id, recording, path, (stat.st_size, stat.st_mtime_ns))
        self.entries[recording_id] = entry
        self._builtin.add(recording_id)
        return entry

    def get(self, recording_id: str) -> Entry | None:
        return self.entries.get(recording_id)

    def scan(self) -> None:
        """Pick up new, changed and removed files in the folder.

        Builds new tables and swaps them in whole, so readers on the event loop never see a
        half-updated catalog while a scan runs in a worker thread.
        """
        if self.folder is None or not self.folder.is_dir():
            return
        with self._scan_lock:
            try:
                self._scan()
            except OSError as exc:  # the folder itself unreadable: keep what we have
                log.warning("cannot scan %s: %s", self.folder, exc)
            self._scanned_at = time.monotonic()

    def scan_if_older(self, seconds: float) -> None:
        """Scan unless one finished within ``seconds`` (clients cannot force a scan storm)."""
        if time.monotonic() - self._scanned_at >= seconds:
            self.scan()

    def _scan(self) -> None:
        entries = {name: self.entries[name] for name in self._builtin}
        refused: dict[str, str] = {}
        refused_at: dict[str, tuple[int, int]] = {}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                info = os.lstat(path)  # a symlink is looked at, not followed
            except OSError:
                continue  # removed since the listing
            stamp = (info.st_size, info.st_mtime_ns)
            if self._refused_at.get(path.name) == stamp:  # refused before and unchanged
                refused[path.name], refused_at[path.name] = self.refused[path.name], stamp
                continue
            reason = self._add(path, stamp, entries)
            if reason is not None:
                refused[path.name], refused_at[path.name] = reason, stamp
                if self.refused.get(path.name) != reason:
                    log.warning("refused recording %r: %s", path.name, reason)
        for gone in sorted(set(self.entries) - set(entries)):
            name = self.entries[gone].path.name
            if name in refused:
                log.warning("recording %r withdrawn: its file was changed and is now refused", gone)
            else:
                log.info("recording %r withdrawn: its file was removed or renamed", gone)
        self.entries, self.refused, self._refused_at = entries, refused, refused_at

    def _add(self, path: Path, stamp: tuple[int, int], entries: dict[str, Entry]) -> str | None:
        """Add one file to ``entries`` or say why not; whatever the file holds, never raises."""
        recording_id = path.name[: -len(SUFFIX)]
        try:
            return self._refusal(recording_id) or self._open(path, recording_id, stamp, entries)
        except Exception as exc:  # a bug met by a crafted file: one file, not the whole scan
            log.exception("recording %r: unexpected error while opening", path.name)
            return f"unexpected error while opening ({type(exc).__name__})"

    def _refusal(self, recording_id: str) -> str | None:
        if recording_id in self._builtin:
            return f"the id {recording_id!r} is taken by a built-in recording"
        if not RECORDING_ID.fullmatch(recording_id):
            return "file name must be letters, digits, '.', '_' or '-'"
        return None

    def _open(
        self, path: Path, recording_id: str, stamp: tuple[int, int], entries: dict[str, Entry]
    ) -> str | None:
        """Add the file to ``entries`` (reusing the open recording if unchanged) or say why not."""
        current = self.entries.get(recording_id)
        if current is not None and current.stamp == stamp:
            entries[recording_id] = current
            return None
        try:
            recording = Recording.open(path)
        except RecordingError as exc:
            return str(exc)
        entry = Entry(recording_id, recording, path, recording.stamp)
        entry.describe()  # raises (the file is refused) if it cannot be listed
        entries[recording_id] = entry
        log.info(
            "recording %r%s: %r, %d frames, %.0f s",
            recording_id, "" if current is None else " (its file was replaced)",
            recording.meta["map"], recording.frame_count, recording.meta["duration_s"],
        )  # fmt: skip
        return None

    def describe(self) -> dict[str, Any]:
        """What /recordings answers: one entry that cannot be described is listed as refused
        (and logged once), never an error for the whole answer."""
        recordings, refused = [], dict(self.refused)
        for recording_id, entry in sorted(self.entries.items()):
            try:
                recordings.append(entry.describe())
            except Exception as exc:
                refused[entry.path.name] = f"cannot be listed ({type(exc).__name__})"
                if recording_id not in self._undescribable:
                    self._undescribable.add(recording_id)
                    log.exception("recording %r cannot be listed", recording_id)
        return {
            "recordings": recordings,
            "refused": [{"file": f, "reason": r} for f, r in sorted(refused.items())],
        }
