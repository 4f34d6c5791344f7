"""The built-in stream: the generated match, recorded once into a cache file and reused."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from processing.recording import SUFFIX, Recording, RecordingError, write_recording

log = logging.getLogger(__name__)
SEED = 1


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/eeict, else ~/.cache/eeict, else the temp folder (read-only homes)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (Path(base) / "eeict", Path(tempfile.gettempdir()) / "eeict"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise RuntimeError("no writable cache folder for the built-in recording; set XDG_CACHE_HOME")


def load_builtin(rounds: int) -> Recording:
    """Open the generated match of ``rounds`` rounds, generating it when the cache is stale."""
    from processing.synthetic import generate_match  # only needed when no live stream is named

    match = generate_match(seed=SEED, rounds=rounds)  # lazy: frames are made while writing
    path = cache_dir() / f"generated-seed{SEED}-rounds{rounds}{SUFFIX}"
    if path.exists():
        try:
            cached = Recording.open(path)
            if cached.meta["source_sha256"] == match.info.source_sha256:
                return cached
        except RecordingError as exc:
            log.warning("regenerating the built-in match: %s", exc)
    log.info("generating the built-in match (%d rounds) into %s", rounds, path)
    write_recording(path, match.info, match.frames)
    return Recording.open(path)
