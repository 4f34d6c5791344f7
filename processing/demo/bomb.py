"""The bomb: its events in order with lost names filled in, and its state frame by frame.

demoparser2 often leaves the player of a bomb event unnamed and reports no bomb entity, so
the bomb is followed through its events and its carrier (an event is never dropped for want
of a position: the bomb is then sent with x/y/z None): BombEvents orders the events once
(who planted, who carried it when the demo began), and BombState replays them during frame
assembly, moving the bomb with whoever carries it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from processing.demo.parse import nan_to_none
from processing.demo.players import PlayerRows
from processing.frames import Bomb, Player

# (kind, name, sid, x, y, z); a field demoparser2 did not give is None
BombEvent = tuple[str, Any, int | None, Any, Any, Any]


@dataclass
class BombEvents:
    """Bomb events by frame, with what the frames need to replay them."""

    by_frame: dict[int, list[BombEvent]]
    has_info: bool  # any bomb event at all
    initial_carrier: tuple[str, int | None] | None  # who had the bomb when the demo began

    @classmethod
    def from_parsed(
        cls, events: dict[str, pd.DataFrame], players: PlayerRows, round_start: list[bool]
    ) -> BombEvents:
        """Bomb events in order, with the carrier filling in names demoparser2 lost.

        Only the carrier can drop or plant the bomb, so an unnamed drop or plant is the
        current carrier's.
        """
        n = len(players.ticks)
        merged: list[tuple[int, int, str, Any, Any, Any, Any, Any]] = []
        for order, kind in enumerate(("pickup", "dropped", "planted", "defused", "exploded")):
            ev = events.get(f"bomb_{kind}")
            if ev is None or not len(ev):
                continue
            fi = players.frame_index(ev["tick"]).tolist()
            cols = [
                ev[c].tolist() if c in ev else [None] * len(fi)
                for c in ("user_name", "user_steamid", "user_X", "user_Y", "user_Z")
            ]
            for i, f in enumerate(fi):
                if f < n:
                    vals = [nan_to_none(col[i]) for col in cols]
                    merged.append((int(ev["tick"].iat[i]), order, kind, f, *vals))
        merged.sort(key=lambda e: (e[0], e[1]))
        by_frame: dict[int, list[BombEvent]] = defaultdict(list)
        round_frames = np.flatnonzero(round_start)
        carrier: tuple[str, int | None] | None = None
        first = merged[0] if merged else None
        # A first drop or plant names who carried the bomb since the demo (or round) began.
        if first and first[2] in ("dropped", "planted") and first[4] is not None:
            carrier = (first[4], first[5])
        rounds_seen = int(np.searchsorted(round_frames, first[3], "right")) if first else 0
        initial_carrier = carrier if rounds_seen == 0 else None
        for _, _, kind, f, name, sid, x, y, z in merged:
            rounds_now = int(np.searchsorted(round_frames, f, "right"))
            if rounds_now != rounds_seen:
                rounds_seen, carrier = rounds_now, None
            if kind == "pickup":
                carrier = (name, sid) if name is not None else None
            elif kind in ("dropped", "planted"):
                if name is None and carrier is not None:
                    name, sid = carrier
                carrier = None
            sid_int = int(sid) if sid is not None else None
            by_frame[f].append((kind, name, sid_int, x, y, z))
        return cls(by_frame, bool(merged), initial_carrier)


class BombState:
    """The bomb as the events describe it, moved with its carrier between events."""

    def __init__(self, has_info: bool, carrier: tuple[str, int | None] | None) -> None:
        self.has_info = has_info
        self.carrier = carrier
        self._reset()

    def _reset(self) -> None:
        self.pos: tuple[float, float, float] | None = None
        self.seen = False  # anything about the bomb known in this round
        self.planted = self.defused = self.exploded = False
        self.planted_by: str | None = None
        self.defused_by: str | None = None

    def step(
        self,
        round_start: bool,
        events: Sequence[BombEvent],
        players: list[Player],
        holder: tuple | None,
    ) -> Bomb | None:
        """Advance one frame; ``holder`` is the player whose inventory shows the C4, if any."""
        if not self.has_info:
            return None
        if round_start:
            self._reset()
            self.carrier = None
        for kind, name, sid, x, y, z in events:
            self.seen = True
            at = (x, y, z) if x is not None else None
            if kind == "pickup":
                self.carrier = (name, sid) if name is not None else None
            elif kind == "dropped":
                self.pos = at or self._carrier_pos(players) or self.pos
                self.carrier = None
            elif kind == "planted":
                self.pos = at or self._carrier_pos(players) or self.pos
                self.carrier = None
                self.planted, self.planted_by = True, name
            elif kind == "defused":
                self.defused, self.defused_by = True, name
            elif kind == "exploded":
                self.exploded = True
        if holder is not None and not self.planted:
            self.carrier = holder
        if self.carrier is not None:
            self.seen = True
            self.pos = self._carrier_pos(players) or self.pos
        if not self.seen:
            return None
        x, y, z = self.pos if self.pos is not None else (None, None, None)
        return {
            "carrier": self.carrier[0] if self.carrier else None,
            "x": x,
            "y": y,
            "z": z,
            "planted": self.planted,
            "defused": self.defused,
            "exploded": self.exploded,
            "planted_by": self.planted_by,
            "defused_by": self.defused_by,
        }

    def _carrier_pos(self, players: list[Player]) -> tuple[float, float, float] | None:
        if self.carrier is None:
            return None
        name, sid = self.carrier
        for p in players:
            if p["sid"] == sid or (sid is None and p["name"] == name):
                return (p["x"], p["y"], p["z"])
        return None
