"""What every source of match data hands to the recording writer: its description and its frames."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from processing.frames import Frame


@dataclass(frozen=True)
class SourceInfo:
    """What a recording was made from; becomes part of its metadata."""

    map_name: str
    tickrate: float
    source_file: str
    source_sha256: str
    parser: str  # e.g. "demoparser2 0.42.0" or "synthetic seed=1 rounds=24"
    synthetic: bool = False
    team_names: dict[str, str] = field(default_factory=dict)  # {"t": ..., "ct": ...}
    # Match settings: {"freeze_time"|"round_time"|"bomb_time": {"seconds", "from"}}
    settings: dict[str, dict] = field(default_factory=dict)


@dataclass
class MatchData:
    """A source ready to record: frames in increasing tick order, and how many (for progress)."""

    info: SourceInfo
    frames: Iterable[Frame]
    frame_count: int
