"""read_demo: the parsed demo's parts derived once, then frames built from them block by block.

Every other module prepares numpy columns or per-frame lookups; this one is the only place
that makes frame dicts, lazily and a block of ticks at a time so that memory stays bounded
however long the demo is, and it fills in the SourceInfo that goes with them.
"""

from __future__ import annotations

import gc
import hashlib
from collections import defaultdict
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np

from processing.demo.bomb import BombEvents, BombState
from processing.demo.events import Events
from processing.demo.nades import nades_in_flight
from processing.demo.parse import TICKRATE, Parsed, game_settings, parse_demo
from processing.demo.players import VOLATILE, PlayerRows, PlayerTable
from processing.demo.rounds import Rounds, first_name
from processing.frames import PLAYER_FIELDS, Frame, Inferno, Player
from processing.source import MatchData, SourceInfo

_BLOCK_TICKS = 1024  # frames built at a time (bounds memory)


def read_demo(path: Path, **windows: int) -> MatchData:
    """Parse a CS2 demo; frames are built lazily, in increasing tick order.

    ``windows`` (``window_above``, ``window_ticks``) override when player rows are read in
    tick windows (see parse_demo); the frames are the same either way.
    """
    path = Path(path)
    parsed = parse_demo(path, **windows)
    builder = _Builder(parsed)
    rounds = builder.rounds
    teams = {"t": first_name(rounds.t_name), "ct": first_name(rounds.ct_name)}
    info = SourceInfo(
        map_name=parsed.header.get("map_name", ""),
        tickrate=TICKRATE,
        source_file=path.name,
        source_sha256=_sha256(path),
        parser=f"demoparser2 {version('demoparser2')}",
        team_names=teams,
        settings=game_settings(parsed.events.get("server_cvar")),
    )
    return MatchData(info=info, frames=builder.frames(), frame_count=len(builder.players.ticks))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Builder:
    """Every part of the frames, prepared once with numpy/pandas; frames() assembles dicts."""

    def __init__(self, parsed: Parsed) -> None:
        self.players = PlayerRows.from_windows(parsed.windows)
        self.rounds = Rounds.from_rows(self.players)
        self.events = Events.from_parsed(parsed.events, self.players, self.rounds.round_start)
        self.bomb = BombEvents.from_parsed(parsed.events, self.players, self.rounds.round_start)
        self.nades = nades_in_flight(parsed.grenades, self.players, self.events.detonated)
        self.table = PlayerTable.from_rows(self.players)

    def frames(self) -> Iterator[Frame]:
        """Frames block by block; each block is built with the cyclic GC paused.

        The frames are acyclic dicts, so the collector finds nothing in them, yet without the
        pause it rescans them thousands of times and takes most of the build time.
        """
        has_info = self.bomb.has_info or bool(self.table.c4_carrier)
        bomb = BombState(has_info, self.bomb.initial_carrier)
        infernos: dict[int, list[Inferno]] = defaultdict(list)
        for first, end, eid, x, y, z in self.events.inferno_spans:
            entry: Inferno = {"id": eid, "fires": [{"x": x, "y": y, "z": z}]}
            for f in range(first, end):
                infernos[f].append(entry)
        for block in range(0, len(self.players.ticks), _BLOCK_TICKS):
            enabled = gc.isenabled()
            gc.disable()
            try:
                frames = self._block(block, bomb, infernos)
            finally:
                if enabled:
                    gc.enable()
            yield from frames

    def _players(self, lo: int, hi: int) -> list[Player]:
        """The player dicts of table rows [lo, hi): each a copy of its run's shared fields
        (made once per run) with the fields that change every tick set on it."""
        columns, run = self.table.columns, self.table.run_start[lo:hi]
        firsts = np.unique(run)
        shared = zip(*(col[firsts].tolist() for col in columns), strict=True)
        runs = {
            r: dict(zip(PLAYER_FIELDS, values, strict=True))
            for r, values in zip(firsts.tolist(), shared, strict=True)
        }
        index = {field: i for i, field in enumerate(PLAYER_FIELDS)}
        xs, ys, zs, yaws, pitches = (columns[index[f]][lo:hi].tolist() for f in VOLATILE)
        out: list[Player] = []
        for r, x, y, z, yaw, pitch in zip(run.tolist(), xs, ys, zs, yaws, pitches, strict=True):
            player = runs[r].copy()
            player["x"], player["y"], player["z"] = x, y, z
            player["view_x"], player["view_y"] = yaw, pitch
            out.append(player)  # type: ignore[arg-type]
        return out

    def _block(
        self, block: int, bomb: BombState, infernos: dict[int, list[Inferno]]
    ) -> list[Frame]:
        ticks, rounds, events = self.players.ticks, self.rounds, self.events
        bomb_events, c4_carrier = self.bomb.by_frame, self.table.c4_carrier
        stop = min(block + _BLOCK_TICKS, len(ticks))
        pb, first_tick = self.table.bounds, int(ticks[0])
        lo, hi = int(pb[block]), int(pb[stop])
        starts = (pb[block : stop + 1] - lo).tolist()
        players_of = self._players(lo, hi)
        out: list[Frame] = []
        for f in range(block, stop):
            players = players_of[starts[f - block] : starts[f - block + 1]]
            tick = int(ticks[f])
            nade_events = events.nade_events.get(f)
            out.append(
                {
                    "tick": tick,
                    "round_time": (tick - first_tick) / TICKRATE,
                    "round_start": rounds.round_start[f],
                    "switch": rounds.switch[f],
                    "is_freeze": rounds.freeze[f],
                    "is_halftime": rounds.halftime[f],
                    "t": rounds.t_name[f],
                    "ct": rounds.ct_name[f],
                    "t_wins": rounds.t_wins[f],
                    "ct_wins": rounds.ct_wins[f],
                    "players": players,
                    "shooting": events.shooting.get(f),
                    "kills": events.kills.get(f),
                    "nades": self.nades.get(f),
                    "infernos": infernos.get(f),
                    "nade_event": nade_events[0] if nade_events else None,
                    "nade_events": nade_events,
                    "bomb": bomb.step(
                        rounds.round_start[f], bomb_events.get(f, ()), players, c4_carrier.get(f)
                    ),
                }
            )
        return out
