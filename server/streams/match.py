"""A match being played, as a pure state machine: its posts in, its frames and decisions out.

``MatchInPlay`` holds the rules of an ingested match and nothing else: the framer (posts ->
frames at the stream's rate behind a delay), the frames so far (a ``GrowingStore``, the one
truth the journal, the broker and the recording are written from), when the feed is stale and
when the match is over. ``step(now)`` returns what changed; server/ingest.py does the I/O
around it (journal, broker, recording). Time comes in as ``now``: no clock, no event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processing.gsi.framer import RATE, Framer
from server.streams.store import GrowingStore, room_for

STEP_S = 1.0 / RATE
# What describes a match (a store's, a journal's, a broker stream's and a recording's meta).
DESCRIBED = ("map", "tickrate", "teams", "source_file", "parser")


@dataclass(frozen=True)
class MatchRules:
    """The bounds of an ingested match (``--gsi-*`` options)."""

    delay_s: float  # frames trail the newest post by this much
    stale_after_s: float  # no post for longer: stale (and no interpolation across the silence)
    finish_after_s: float  # stale for longer: the match is over


@dataclass
class Step:
    """What one ``step`` changed."""

    frames: int = 0  # frames appended to the store
    marks: dict[str, Any] = field(default_factory=dict)  # state for subscribers: stale, ended
    finished: str | None = None  # why the match is over ("game over", "feed gone"), once


class MatchInPlay:
    """One run of a match: fed with ``add``, opened on a store, stepped with ``step``."""

    def __init__(self, name: str, rules: MatchRules) -> None:
        self.name = name
        self.rules = rules
        self.framer = Framer(rate=RATE, delay=rules.delay_s, gap=rules.stale_after_s)
        self.store: GrowingStore | None = None
        self.stale = False
        self.stale_since: float | None = None
        self.finished: str | None = None
        self._tick_offset = 0  # frames reloaded from a journal come first
        self._time_offset = 0.0
        self._depicts = np.zeros(4096, dtype=np.float64)

    def add(self, payload: dict, now: float) -> None:
        """One post (raises GsiPayloadError, nothing changed, for a malformed payload)."""
        self.framer.add(payload, now)

    @property
    def has_map(self) -> bool:
        """A post with a map came: the match can be described and its frames begin."""
        return self.framer.last_received is not None

    def description(self) -> dict[str, Any]:
        """The match as a store's (and a recording's) metadata says it, from the posts."""
        described = self.framer.description
        return {
            "map": described.map_name,
            "tickrate": RATE,
            "teams": dict(described.team_names),
            "source_file": f"gsi:{self.name}",
            "parser": f"gsi {described.provider}".strip(),
        }

    def open(self, store: GrowingStore, now: float) -> None:
        """Frames go into ``store`` from now on: a new one, or the frames of this run reloaded
        from its journal (the new frames follow them: ticks and round time go on)."""
        self.store = store
        count = store.frame_count
        self._depicts = room_for(self._depicts, count)
        # Reloaded frames show moments before the restart: as if made at the stream's rate.
        self._depicts[:count] = now - (count - np.arange(count)) / RATE
        if count:
            self._tick_offset = int(store.meta["last_tick"]) + 1
            self._time_offset = float(store.frame(count - 1)["round_time"]) + STEP_S

    def step(self, now: float) -> Step:
        """Make the frames due by ``now`` and decide on stale and the end."""
        store = self.store
        if store is None or self.finished:
            return Step()
        out = Step()
        store.meta["teams"] = dict(self.framer.description.team_names)
        depicts = now - self.rules.delay_s
        for frame in self.framer.frames(now):
            frame["tick"] += self._tick_offset
            frame["round_time"] = round(frame["round_time"] + self._time_offset, 4)
            self._depicts = room_for(self._depicts, store.frame_count + 1)
            self._depicts[store.frame_count] = depicts
            store.append(frame)
            out.frames += 1
        stale = self.framer.stale(now, self.rules.stale_after_s)
        if stale != self.stale:
            self.stale, self.stale_since = stale, (now if stale else None)
            out.marks["stale"] = stale
        quiet_for = now - self.stale_since if self.stale_since is not None else 0.0
        framed_all = now - self.rules.delay_s > (self.framer.last_received or now) + STEP_S
        if self.framer.ended and framed_all:
            out.finished = "game over"  # once its last posts are frames too
        elif quiet_for > self.rules.finish_after_s:
            out.finished = "feed gone"
        if out.finished:
            self.finished = out.finished
            store.finish()
            out.marks["ended"] = True
        return out

    def state(self) -> dict[str, Any]:
        """Every mark so far, for a new incarnation in the broker (it starts with none)."""
        return {"stale": self.stale, **({"ended": True} if self.finished else {})}

    def depicted_time(self, index: int) -> float:
        """When (on the ingest's clock) the moment frame ``index`` shows happened."""
        return float(self._depicts[index])
