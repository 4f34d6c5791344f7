"""Player rows: demoparser2's per-tick props made into one numpy column per field.

demoparser2 gives each player's entity state on every tick it has (and repeats a player when
a tick had several snapshots), while every other module wants one row per player per frame.
PlayerRows makes those rows once (and with them the frames: one per tick that has player
rows); PlayerTable cuts the alive players' frame fields from them, with the fields derived
from several props computed vectorised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from processing.demo.parse import SOURCES, nan_to_none
from processing.frames import PLAYER_FIELDS
from processing.vocabulary import client_name

# Value where demoparser2 has none: the game never set the prop (a new entity's default), or
# the weapon in hand has no such prop (docs/frame-fields.md).
_DEFAULTS: dict[str, Any] = {
    "view_x": 0.0,
    "view_y": 0.0,
    "hp": 100,
    "money": 0,
    "armor": 0,
    "helmet": False,
    "kit": False,
    "actv_itm": "",
    "flags": 1,  # FL_ONGROUND
    "is_walking": False,
    "is_rld": False,
    "is_planting": False,
    "is_defusing": False,
    "kills": 0,
    "deaths": 0,
    "assists": 0,
    "dmg": 0,
    "rounds": 0,
    "team_num": 0,
    "alive": False,
    "clan": "",
    "team_clan": "",
    "team_wins": 0,
}
_INTS = ("hp", "money", "armor", "kills", "deaths", "assists", "dmg", "rounds", "flags")
_INTS += ("team_num", "team_wins")
_BOOLS = ("helmet", "kit", "is_walking", "is_rld", "is_planting", "is_defusing", "alive")
TEAMS = {0: "UA", 1: "S", 2: "T", 3: "CT"}


@dataclass
class PlayerRows:
    """One row per player per frame, in frame order; frame f's rows are bounds[f]:bounds[f+1]."""

    cols: dict[str, np.ndarray]  # field -> value per row, plus "known" (position reported)
    ticks: np.ndarray  # tick of each frame, increasing
    bounds: np.ndarray
    row_frame: np.ndarray  # frame of each row
    sid: np.ndarray
    name: np.ndarray

    @classmethod
    def from_ticks(cls, df: pd.DataFrame) -> PlayerRows:
        """Rows from demoparser2's parse_ticks answer."""
        return cls.from_windows([df])

    @classmethod
    def from_windows(cls, windows: Iterable[pd.DataFrame]) -> PlayerRows:
        """Rows from parse_ticks answers for consecutive tick windows, in order.

        Each window is made into compact numpy columns and dropped before the next is
        parsed, so a long demo never has all of demoparser2's rows in memory at once.
        """
        parts: list[dict[str, np.ndarray]] = []
        for df in windows:
            if df is None or not len(df) or "tick" not in df:
                continue
            if not df["tick"].is_monotonic_increasing:
                df = df.sort_values("tick", kind="stable")
            df = df.reset_index(drop=True)
            cols = _player_columns(df)
            # demoparser2 repeats a player when a tick had several snapshots; the last holds.
            last = ~df.duplicated(["tick", "steamid"], keep="last").to_numpy()
            part = {field: values[last] for field, values in cols.items()}
            part["_tick"] = df["tick"].to_numpy(np.int64)[last]
            part["_sid"] = df["steamid"].to_numpy(np.uint64)[last]
            part["_name"] = df["name"].to_numpy(object)[last]
            parts.append(part)
            del df, cols
        if not parts:
            raise ValueError("no player rows")
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        tick = merged.pop("_tick")
        ticks, starts = np.unique(tick, return_index=True)
        bounds = np.append(starts, len(tick))
        return cls(
            cols={k: v for k, v in merged.items() if not k.startswith("_")},
            ticks=ticks,
            bounds=bounds,
            row_frame=np.repeat(np.arange(len(ticks)), np.diff(bounds)),
            sid=merged["_sid"],
            name=merged["_name"],
        )

    def frame_index(self, event_ticks: Any) -> np.ndarray:
        """Index of the frame an event goes on: the first frame at or after its tick."""
        return np.searchsorted(self.ticks, np.asarray(event_ticks, dtype=np.int64), side="left")

    def value(self, sid: Any, tick: int, key: str) -> float | None:
        """Player ``sid``'s field ``key`` on the last frame at or before ``tick`` (None if
        the player is not on it or the value is unknown)."""
        sid = nan_to_none(sid)
        if sid is None:
            return None
        f = int(np.searchsorted(self.ticks, tick, side="right")) - 1
        if f < 0:
            return None
        a, b = self.bounds[f], self.bounds[f + 1]
        rows = np.flatnonzero(self.sid[a:b] == np.uint64(sid))
        if not len(rows):
            return None
        value = float(self.cols[key][a + rows[0]])
        return None if value != value else value


def _player_columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """One column per field for a window's rows: demoparser2's value on that tick (it keeps
    each entity's state), the field's default where there is none. A missing position stays
    NaN: that player is left out of the frame rather than placed anywhere."""
    cols: dict[str, np.ndarray] = {}
    for field, prop in SOURCES.items():
        series = df[prop] if prop in df else pd.Series(np.nan, index=df.index)
        if field in _DEFAULTS and series.isna().any():
            series = series.where(series.notna(), _DEFAULTS[field])
        if field in _INTS:
            cols[field] = series.astype(np.int64).to_numpy()
        elif field in _BOOLS:
            cols[field] = series.astype(bool).to_numpy()
        elif field == "items":
            cols[field] = _client_lists(series.tolist())
        elif field == "actv_itm":
            names = {v: client_name(v) for v in set(series.tolist())}
            cols[field] = np.array([names[v] for v in series.tolist()], dtype=object)
        else:
            cols[field] = series.to_numpy()
    cols["known"] = ~np.isnan(np.stack([cols[a].astype(float) for a in "xyz"])).any(axis=0)
    return cols


def _client_lists(values: list[Any]) -> np.ndarray:
    """Inventories in the client's names; each distinct list is translated once."""
    seen: dict[tuple[str, ...], list[str]] = {}
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        key = tuple(v) if isinstance(v, list) else ()
        if key not in seen:
            seen[key] = [client_name(item) for item in key]
        out[i] = seen[key]
    return out


# Player fields that change on almost every tick; the others stay the same for runs of ticks.
VOLATILE = ("x", "y", "z", "view_x", "view_y")


@dataclass
class PlayerTable:
    """Alive players' frame fields as arrays in frame order, one per PLAYER_FIELDS entry.

    The players of frame f are the rows bounds[f]:bounds[f+1] of every column. ``run_start``
    names, for each row, the first row of its run: the same player on consecutive frames with
    every field but the VOLATILE ones equal, so frames can share that part.
    """

    bounds: np.ndarray
    columns: list[np.ndarray]
    run_start: np.ndarray
    c4_carrier: dict[int, tuple[str, int]]  # frame -> (name, sid) of who has the C4 in inventory

    @classmethod
    def from_rows(cls, players: PlayerRows) -> PlayerTable:
        """The table of the alive players whose position is known."""
        c = players.cols
        rows = np.flatnonzero(c["alive"] & c["known"])
        bounds = np.searchsorted(players.row_frame[rows], np.arange(len(players.ticks) + 1))
        flags = c["flags"][rows]
        ducking = (flags & 2) != 0  # FL_DUCKING
        rounds, dmg = c["rounds"][rows], c["dmg"][rows]
        team_names = np.array([TEAMS.get(t, "UA") for t in range(4)], dtype=object)
        team = c["team_num"][rows]
        derived = {
            "sid": players.sid[rows],
            "name": players.name[rows],
            "team": np.where((team >= 0) & (team < 4), team_names[np.clip(team, 0, 3)], "UA"),
            "is_ducking": ducking,
            "is_standing": ~ducking,
            "is_air": (flags & 1) == 0,  # FL_ONGROUND
            "adr": np.divide(dmg, rounds, out=np.zeros(len(rows)), where=rounds > 0),
        }
        columns = [derived[f] if f in derived else c[f][rows] for f in PLAYER_FIELDS]
        has_c4 = np.fromiter(("C4" in items for items in c["items"][rows]), bool, len(rows))
        c4_rows = rows[has_c4]
        c4_carrier = {
            int(f): (players.name[r], int(players.sid[r]))
            for f, r in zip(players.row_frame[c4_rows].tolist(), c4_rows.tolist(), strict=True)
        }
        run_start = _run_starts(players.sid[rows], players.row_frame[rows], columns)
        return cls(bounds, columns, run_start, c4_carrier)


def _run_starts(sid: np.ndarray, frame: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """For each row, the first row of its run (see PlayerTable)."""
    n = len(sid)
    order = np.lexsort((frame, sid))
    same = np.zeros(n, dtype=bool)
    same[1:] = (sid[order][1:] == sid[order][:-1]) & (frame[order][1:] == frame[order][:-1] + 1)
    for field, column in zip(PLAYER_FIELDS, columns, strict=True):
        if field not in VOLATILE:
            values = column[order]
            same[1:] &= values[1:] == values[:-1]
    first = np.maximum.accumulate(np.where(same, 0, np.arange(n)))
    run_start = np.empty(n, dtype=np.int64)
    run_start[order] = order[first]
    return run_start
