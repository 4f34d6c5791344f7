"""A CS2 demo (.dem) turned into frames with demoparser2: one frame per tick demoparser2 reports.

demoparser2 answers column queries (props per player per tick, events, grenade entities); this
module makes three such passes and assembles frames from numpy columns, never row by row in
pandas. Where demoparser2 cannot give a field exactly, the closest honest value is used; every
such choice is listed in docs/frame-fields.md.

Events are placed on the frame of the tick they happened on; an event on a tick that has no
frame (demoparser2 skips ticks without entity data) goes on the next frame, and events after
the last frame are dropped.
"""

from __future__ import annotations

import gc
import hashlib
import struct
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from demoparser2 import DemoParser

from processing.frames import PLAYER_FIELDS, Bomb, Frame, Inferno, Kill, Nade, NadeEvent, Player
from processing.source import MatchData, SourceInfo

TICKRATE = 64.0  # CS2 servers tick at 64/s; the demo header does not carry it.
PLANT_SECONDS = 3.0  # time a C4 plant takes in CS2
_MAGIC = b"PBDEMS2\x00"
_CELL, _WORLD_HALF = 512, 16384  # entity origin = cell * 512 - 16384 + vec
_BLOCK_TICKS = 1024  # frames built at a time (bounds memory)

_HEALTH, _HEALTH_CTRL = "health", "CCSPlayerController.m_iPawnHealth"
_DAMAGE = "CCSPlayerController.CCSPlayerController_ActionTrackingServices.m_iDamage"
_FLAGS = "CCSPlayerPawn.m_fFlags"
# Field -> demoparser2 props, coalesced left to right (pawn value first, controller copy next).
_SOURCES: dict[str, tuple[str, ...]] = {
    "x": ("X",),
    "y": ("Y",),
    "z": ("Z",),
    "view_x": ("yaw",),
    "view_y": ("pitch",),
    "hp": (_HEALTH, _HEALTH_CTRL),
    "money": ("balance",),
    "armor": ("armor_value", "armor"),
    "helmet": ("has_helmet", "CCSPlayerController.m_bPawnHasHelmet"),
    "kit": ("has_defuser", "CCSPlayerController.m_bPawnHasDefuser"),
    "actv_itm": ("active_weapon_name",),
    "items": ("inventory",),
    "flags": (_FLAGS,),
    "is_walking": ("is_walking",),
    "is_rld": ("is_in_reload",),
    "is_defusing": ("is_defusing",),
    "kills": ("kills_total",),
    "deaths": ("deaths_total",),
    "assists": ("assists_total",),
    "dmg": (_DAMAGE,),
    "rounds": ("total_rounds_played",),
    "team_num": ("team_num",),
    "alive": ("is_alive",),
    "clan": ("clan_name",),
    "team_clan": ("team_clan_name",),
    "team_wins": ("team_rounds_total",),
    "freeze": ("is_freeze_period",),
    "round_start_time": ("round_start_time",),
}
TICK_PROPS: list[str] = list(dict.fromkeys(p for props in _SOURCES.values() for p in props))
_POSITION = ("x", "y", "z")
# Value used before demoparser2 first reports a field for a player (see docs/frame-fields.md).
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
_BOOLS = ("helmet", "kit", "is_walking", "is_rld", "is_defusing", "alive")
_TEAMS = {0: "UA", 1: "S", 2: "T", 3: "CT"}

EVENTS = [
    "player_death",
    "weapon_fire",
    "bomb_pickup",
    "bomb_dropped",
    "bomb_planted",
    "bomb_defused",
    "bomb_exploded",
    "smokegrenade_detonate",
    "hegrenade_detonate",
    "flashbang_detonate",
    "decoy_started",
    "inferno_startburn",
    "inferno_expire",
    "inferno_extinguish",
]
EVENT_PLAYER_PROPS = ["X", "Y", "Z"]
_DETONATIONS = {
    "smokegrenade_detonate": "smoke",
    "hegrenade_detonate": "he",
    "flashbang_detonate": "flash",
    "decoy_started": "decoy",
}
_AXES = "XYZ"
GRENADE_PROPS = [
    f"Grenade.CBodyComponentBaseAnimGraph.m_{part}{axis}"
    for part in ("cell", "vec")
    for axis in _AXES
] + ["Grenade.m_iTeamNum"]
_NADE_TYPES = {
    "CSmokeGrenadeProjectile": "smoke",
    "CHEGrenadeProjectile": "he",
    "CFlashbangProjectile": "flash",
    "CMolotovProjectile": "molotov",  # CS2 uses one class for molotov and incendiary
    "CIncendiaryGrenadeProjectile": "incendiary",
    "CDecoyProjectile": "decoy",
}


class DemoError(Exception):
    """A demo that cannot be processed; the message names the file and what to do."""


@dataclass
class _Parsed:
    header: dict[str, str]
    ticks: pd.DataFrame
    events: dict[str, pd.DataFrame]
    grenades: pd.DataFrame


def parse_demo(path: Path) -> _Parsed:
    """The three demoparser2 passes read_demo needs (also the benchmark's baseline)."""
    path = Path(path)
    _check_file(path)
    try:
        parser = DemoParser(str(path))
        header = parser.parse_header()
        ticks = parser.parse_ticks(TICK_PROPS)
        events = dict(parser.parse_events(EVENTS, player=EVENT_PLAYER_PROPS))
        grenades = parser.parse_grenades(grenades=False, extra=GRENADE_PROPS)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # demoparser2 raises plain Exception, or panics (BaseException)
        raise DemoError(
            f"{path.name}: demoparser2 cannot read it ({type(exc).__name__}: {exc}); "
            "is it a complete CS2 demo?"
        ) from exc
    if ticks is None or len(ticks) == 0 or "tick" not in ticks:
        raise DemoError(f"{path.name}: demoparser2 found no player data in it; nothing to record")
    return _Parsed(header, ticks, events, grenades)


def read_demo(path: Path) -> MatchData:
    """Parse a CS2 demo; frames are built lazily, in increasing tick order."""
    path = Path(path)
    parsed = parse_demo(path)
    builder = _Builder(parsed)
    teams = {"t": builder.first_name(builder.t_name), "ct": builder.first_name(builder.ct_name)}
    info = SourceInfo(
        map_name=parsed.header.get("map_name", ""),
        tickrate=TICKRATE,
        source_file=path.name,
        source_sha256=_sha256(path),
        parser=f"demoparser2 {version('demoparser2')}",
        team_names=teams,
    )
    return MatchData(info=info, frames=builder.frames(), frame_count=len(builder.ticks))


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise DemoError(f"{path.name}: cannot read it ({exc.strerror})") from exc
    if size == 0:
        raise DemoError(f"{path.name}: empty file, not a CS2 demo")
    if len(head) < 16 or head[:8] != _MAGIC:
        raise DemoError(f"{path.name}: not a CS2 demo (bad header); expected a CS2 .dem file")
    (info_offset,) = struct.unpack_from("<i", head, 8)
    if info_offset >= size:
        raise DemoError(
            f"{path.name}: truncated ({size} bytes, its index says at least {info_offset + 1}); "
            "copy the whole demo again"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _column(df: pd.DataFrame, name: str) -> np.ndarray | None:
    return df[name].to_numpy() if name in df else None


def _frame_index(ticks: np.ndarray, event_ticks: Any) -> np.ndarray:
    """Index of the frame an event goes on: the first frame at or after its tick."""
    return np.searchsorted(ticks, np.asarray(event_ticks, dtype=np.int64), side="left")


def _names(df: pd.DataFrame, column: str) -> list[str | None]:
    values = df[column].tolist() if column in df else [None] * len(df)
    return [_nan_to_none(v) for v in values]


def _nan_to_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


class _Builder:
    """Columns for every frame, prepared once with numpy/pandas; frames() assembles dicts."""

    def __init__(self, parsed: _Parsed) -> None:
        df = parsed.ticks
        if not df["tick"].is_monotonic_increasing:
            df = df.sort_values("tick", kind="stable")
        df = df.reset_index(drop=True)
        cols = self._player_columns(df)
        # demoparser2 repeats a player when a tick had several snapshots; the last one holds.
        last = ~df.duplicated(["tick", "steamid"], keep="last").to_numpy()
        self.cols = {field: values[last] for field, values in cols.items()}
        tick = df["tick"].to_numpy(np.int64)[last]
        self.ticks, starts = np.unique(tick, return_index=True)
        self.bounds = np.append(starts, len(tick))
        self.row_frame = np.repeat(np.arange(len(self.ticks)), np.diff(self.bounds))
        self.sid = df["steamid"].to_numpy(np.uint64)[last]
        self.name = df["name"].to_numpy(object)[last]
        self._frame_columns()
        self._events(parsed.events)
        self._nades(parsed.grenades)
        self._player_table()

    # -- per-player state ----------------------------------------------------------------

    def _player_columns(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        merged = pd.DataFrame(index=df.index)
        for field, props in _SOURCES.items():
            col = None
            for prop in props:
                if prop in df:
                    col = df[prop] if col is None else col.where(col.notna(), df[prop])
            merged[field] = col if col is not None else pd.Series(np.nan, index=df.index)
        # Props are sent on change only: the last reported value holds until the next one.
        by_player = merged.groupby(df["steamid"].to_numpy(), sort=False)
        merged = by_player.ffill()
        # Position before its first report: the first reported value (a one-tick move away).
        merged[list(_POSITION)] = (
            merged[list(_POSITION)].groupby(df["steamid"].to_numpy(), sort=False).bfill()
        )
        cols: dict[str, np.ndarray] = {}
        for field in merged.columns:
            series = merged[field]
            if field in _DEFAULTS and series.isna().any():
                series = series.where(series.notna(), _DEFAULTS[field])
            if field in _INTS:
                cols[field] = series.astype(np.int64).to_numpy()
            elif field in _BOOLS:
                cols[field] = series.astype(bool).to_numpy()
            elif field == "items":
                cols[field] = np.array(
                    [v if isinstance(v, list) else [] for v in series.tolist()], dtype=object
                )
            else:
                cols[field] = series.to_numpy()
        cols["known"] = (
            ~np.isnan(cols["x"].astype(float))
            & ~np.isnan(cols["z"].astype(float))
            & ~np.isnan(cols["y"].astype(float))
        )
        return cols

    # -- per-frame state -----------------------------------------------------------------

    def _per_tick_first(self, values: np.ndarray) -> pd.Series:
        """The first non-missing value of a game-wide prop on each frame, carried forward."""
        s = pd.Series(values).groupby(self.row_frame).first()
        return s.reindex(range(len(self.ticks))).ffill()

    def _frame_columns(self) -> None:
        c, n = self.cols, len(self.ticks)
        freeze = self._per_tick_first(c["freeze"]).astype(object)
        self.freeze = freeze.where(freeze.notna(), False).astype(bool).tolist()
        # A round starts when the game rules' round start time changes; events replayed at the
        # demo's first tick (signon) describe the round already in progress.
        rst = self._per_tick_first(c["round_start_time"].astype(float)).to_numpy()
        prev = np.concatenate(([np.nan], rst[:-1]))
        self.round_start = ((rst != prev) & ~np.isnan(prev) & ~np.isnan(rst)).tolist()
        for team, attr in ((2, "t"), (3, "ct")):
            on_team = c["team_num"] == team
            frames = self.row_frame[on_team]
            names = pd.Series(c["team_clan"][on_team]).groupby(frames).first()
            wins = pd.Series(c["team_wins"][on_team]).groupby(frames).first()
            names = names.reindex(range(n)).ffill().fillna("")
            wins = wins.reindex(range(n)).ffill().fillna(0).astype(np.int64)
            setattr(self, f"{attr}_name", names.tolist())
            setattr(self, f"{attr}_wins", wins.tolist())

    @staticmethod
    def first_name(names: list[str]) -> str:
        return next((name for name in names if name), "")

    # -- events --------------------------------------------------------------------------

    def _events(self, events: dict[str, pd.DataFrame]) -> None:
        n = len(self.ticks)
        self.shooting: dict[int, list[int]] = defaultdict(list)
        self.kills: dict[int, list[Kill]] = defaultdict(list)
        self.nade_event: dict[int, NadeEvent] = {}
        self.bomb_events: dict[int, list[tuple]] = defaultdict(list)
        self.inferno_spans: list[tuple[int, int, int, float, float, float]] = []
        self.detonated: dict[int, int] = {}  # grenade entity id -> detonation tick

        fire = events.get("weapon_fire")
        if fire is not None and len(fire) and "user_steamid" in fire:
            fi = _frame_index(self.ticks, fire["tick"])
            for f, sid in zip(fi.tolist(), fire["user_steamid"].tolist(), strict=True):
                sid = _nan_to_none(sid)
                if f < n and sid is not None and int(sid) not in self.shooting[f]:
                    self.shooting[f].append(int(sid))
        self._kills(events.get("player_death"))
        for event, kind in _DETONATIONS.items():
            det = events.get(event)
            if det is None or not len(det):
                continue
            fi = _frame_index(self.ticks, det["tick"])
            for eid, t in zip(det["entityid"].tolist(), det["tick"].tolist(), strict=True):
                self.detonated[int(eid)] = min(int(t), self.detonated.get(int(eid), int(t)))
            xyz = (det["x"].tolist(), det["y"].tolist(), det["z"].tolist())
            rows = zip(fi.tolist(), *xyz, strict=True)
            for f, x, y, z in rows:
                if f < n and f not in self.nade_event:
                    self.nade_event[f] = {"type": kind, "x": x, "y": y, "z": z}
        self._infernos(events)
        self._bomb(events)

    def _transitions(self, field: str, rising: bool) -> dict[int, list[int]]:
        """Rows by frame where a player's value went up (or down) since their previous row."""
        values = self.cols[field].astype(np.int64)
        order = np.lexsort((self.row_frame, self.sid))
        same = self.sid[order][1:] == self.sid[order][:-1]
        diff = values[order][1:] - values[order][:-1]
        changed = same & ((diff > 0) if rising else (diff < 0))
        rows = order[1:][changed]
        found: dict[int, list[int]] = defaultdict(list)
        for r in rows.tolist():
            found[int(self.row_frame[r])].append(r)
        return found

    def _kills(self, deaths: pd.DataFrame | None) -> None:
        """Kill entries; names demoparser2 could not resolve come from the players who died
        (alive flag went off) or scored (kill count went up) on that frame or the next."""
        if deaths is None or not len(deaths):
            return
        n = len(self.ticks)
        died = self._transitions("alive", rising=False)
        scored = self._transitions("kills", rising=True)
        fi = _frame_index(self.ticks, deaths["tick"]).tolist()
        victims = _names(deaths, "user_name")
        killers = _names(deaths, "attacker_name")
        # Named players are not candidates for the unnamed events of the same frames.
        for f, victim, killer in zip(fi, victims, killers, strict=True):
            self._unclaim(died, f, victim)
            self._unclaim(scored, f, killer)
        weapons, hs = deaths["weapon"].tolist(), deaths["headshot"].tolist()
        pen = deaths["penetrated"].tolist()
        for i, f in enumerate(fi):
            if f >= n:
                continue
            victim = victims[i] if victims[i] is not None else self._claim(died, f)
            killer = killers[i] if killers[i] is not None else self._claim(scored, f)
            self.kills[f].append(
                {
                    "killer": killer or "",
                    "victim": victim or "",
                    "weapon": str(weapons[i]),
                    "is_hs": bool(hs[i]),
                    "penetrations": int(pen[i]),
                }
            )

    def _unclaim(self, found: dict[int, list[int]], frame: int, name: str | None) -> None:
        for f in (frame, frame + 1):
            rows = found.get(f, [])
            for r in rows:
                if self.name[r] == name:
                    rows.remove(r)
                    return

    def _claim(self, found: dict[int, list[int]], frame: int) -> str | None:
        """Take the next unclaimed player whose value changed on this frame or the next."""
        for f in (frame, frame + 1):
            rows = found.get(f)
            if rows:
                return self.name[rows.pop(0)]
        return None

    def _infernos(self, events: dict[str, pd.DataFrame]) -> None:
        start = events.get("inferno_startburn")
        if start is None or not len(start):
            return
        n = len(self.ticks)
        ends: dict[int, int] = {}
        for name in ("inferno_expire", "inferno_extinguish"):
            end = events.get(name)
            if end is not None and len(end):
                for eid, f in zip(
                    end["entityid"].tolist(),
                    _frame_index(self.ticks, end["tick"]).tolist(),
                    strict=True,
                ):
                    ends[int(eid)] = min(f, ends.get(int(eid), n))
        fi = _frame_index(self.ticks, start["tick"]).tolist()
        rows = zip(
            fi,
            start["entityid"].tolist(),
            start["x"].tolist(),
            start["y"].tolist(),
            start["z"].tolist(),
            strict=True,
        )
        for f, eid, x, y, z in rows:
            if f < n:
                self.inferno_spans.append((f, ends.get(int(eid), n), int(eid), x, y, z))

    def _bomb(self, events: dict[str, pd.DataFrame]) -> None:
        """Bomb events in order, with the carrier filling in names demoparser2 lost.

        Only the carrier can drop or plant the bomb, so an unnamed drop or plant is the
        current carrier's. Also records who was planting during the PLANT_SECONDS before.
        """
        n = len(self.ticks)
        merged: list[tuple[int, int, str, Any, Any, Any, Any, Any]] = []
        for order, kind in enumerate(("pickup", "dropped", "planted", "defused", "exploded")):
            ev = events.get(f"bomb_{kind}")
            if ev is None or not len(ev):
                continue
            fi = _frame_index(self.ticks, ev["tick"]).tolist()
            cols = [
                ev[c].tolist() if c in ev else [None] * len(fi)
                for c in ("user_name", "user_steamid", "user_X", "user_Y", "user_Z")
            ]
            for i, f in enumerate(fi):
                if f < n:
                    vals = [_nan_to_none(col[i]) for col in cols]
                    merged.append((int(ev["tick"].iat[i]), order, kind, f, *vals))
        merged.sort(key=lambda e: (e[0], e[1]))
        self.has_bomb_info = bool(merged)
        self.planting: list[tuple[int, int, int]] = []  # (first frame, end frame, sid)
        round_frames = np.flatnonzero(self.round_start)
        carrier: tuple[str, int | None] | None = None
        first = merged[0] if merged else None
        # A first drop or plant names who carried the bomb since the demo (or round) began.
        if first and first[2] in ("dropped", "planted") and first[4] is not None:
            carrier = (first[4], first[5])
        rounds_seen = int(np.searchsorted(round_frames, first[3], "right")) if first else 0
        self.initial_carrier = carrier if rounds_seen == 0 else None
        for tick, _, kind, f, name, sid, x, y, z in merged:
            rounds_now = int(np.searchsorted(round_frames, f, "right"))
            if rounds_now != rounds_seen:
                rounds_seen, carrier = rounds_now, None
            if kind == "pickup":
                carrier = (name, sid) if name is not None else None
            elif kind in ("dropped", "planted"):
                if name is None and carrier is not None:
                    name, sid = carrier
                carrier = None
                if kind == "planted" and sid is not None:
                    first_tick = tick - round(PLANT_SECONDS * TICKRATE)
                    first = int(_frame_index(self.ticks, [first_tick])[0])
                    self.planting.append((first, f, int(sid)))
            sid_int = int(sid) if sid is not None else None
            self.bomb_events[f].append((kind, name, sid_int, x, y, z))

    # -- grenades in flight --------------------------------------------------------------

    def _nades(self, gren: pd.DataFrame) -> None:
        """Projectiles from their first tick until their detonation event (or removal).

        demoparser2 leaves an axis' position NaN while the entity's cell was never sent; the
        cell is the one that puts the grenade within half a cell (256 units) of its thrower at
        its first tick, since grenades spawn at the thrower's eyes.
        """
        self.nades: dict[int, list[Nade]] = defaultdict(list)
        if gren is None or not len(gren) or "grenade_entity_id" not in gren:
            return
        n = len(self.ticks)
        gren = gren.sort_values(["grenade_entity_id", "tick"], kind="stable")
        eid = gren["grenade_entity_id"].to_numpy(np.int64)
        tick = gren["tick"].to_numpy(np.int64)
        pos = np.full((len(gren), 3), np.nan)
        for a, axis in enumerate(_AXES):
            cell_name = f"Grenade.CBodyComponentBaseAnimGraph.m_cell{axis}"
            vec_name = f"Grenade.CBodyComponentBaseAnimGraph.m_vec{axis}"
            if vec_name not in gren:
                continue
            vec = gren[vec_name].groupby(eid).ffill().groupby(eid).bfill().to_numpy(float)
            cell = (
                gren[cell_name].groupby(eid).ffill().to_numpy(float)
                if cell_name in gren
                else np.full(len(gren), np.nan)
            )
            pos[:, a] = cell * _CELL - _WORLD_HALF + vec
            missing = np.isnan(cell)
            if missing.any():
                pos[:, a] = self._infer_cells(gren, eid, tick, vec, cell, a)
        team = _column(gren, "Grenade.m_iTeamNum")
        teams = (
            [_TEAMS.get(int(t), "UA") if t == t else "" for t in team.tolist()]
            if team is not None
            else [""] * len(gren)
        )
        types = [_NADE_TYPES.get(t, t) for t in gren["grenade_type"].tolist()]
        detonated = self.detonated
        fi = _frame_index(self.ticks, tick)
        keep = (fi < n) & ~np.isnan(pos).any(axis=1)
        end = np.array([detonated.get(int(e), np.iinfo(np.int64).max) for e in eid.tolist()])
        keep &= tick < end
        # Keep one row per (frame, grenade): the last, when a row sits on a skipped tick.
        rows = np.flatnonzero(keep)
        last: dict[tuple[int, int], int] = {}
        for r, f, e in zip(rows.tolist(), fi[rows].tolist(), eid[rows].tolist(), strict=True):
            last[(f, e)] = r
        xs, ys, zs = pos[:, 0].tolist(), pos[:, 1].tolist(), pos[:, 2].tolist()
        for (f, e), r in sorted(last.items()):
            self.nades[f].append(
                {"id": e, "type": types[r], "x": xs[r], "y": ys[r], "z": zs[r], "team": teams[r]}
            )

    def _infer_cells(self, gren, eid, tick, vec, cell, axis: int) -> np.ndarray:
        out = cell * _CELL - _WORLD_HALF + vec
        throwers = gren["steamid"].tolist() if "steamid" in gren else [None] * len(gren)
        starts = np.flatnonzero(np.concatenate(([True], eid[1:] != eid[:-1])))
        ends = np.append(starts[1:], len(eid))
        key = ("x", "y", "z")[axis]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            lead = np.isnan(cell[s:e])
            if not lead.any() or np.isnan(vec[s]):
                continue
            ref = self._player_position(throwers[s], int(tick[s]), key)
            if ref is None:
                continue
            if key == "z":
                ref += 64.0  # eye height: grenades spawn at the eyes
            guess = np.round((ref - vec[s] + _WORLD_HALF) / _CELL)
            first_known = np.flatnonzero(~lead)
            stop = s + (int(first_known[0]) if len(first_known) else e - s)
            out[s:stop] = guess * _CELL - _WORLD_HALF + vec[s:stop]
        return out

    def _player_position(self, sid: Any, tick: int, key: str) -> float | None:
        sid = _nan_to_none(sid)
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

    # -- assembly ------------------------------------------------------------------------

    def _player_table(self) -> None:
        """Alive players' fields as arrays in frame order, derived fields computed vectorised."""
        c = self.cols
        rows = np.flatnonzero(c["alive"] & c["known"])
        self.player_bounds = np.searchsorted(self.row_frame[rows], np.arange(len(self.ticks) + 1))
        flags = c["flags"][rows]
        ducking = (flags & 2) != 0  # FL_DUCKING
        rounds, dmg = c["rounds"][rows], c["dmg"][rows]
        planting = np.zeros(len(self.sid), dtype=bool)
        for first, end, sid in self.planting:
            lo, hi = self.bounds[first], self.bounds[end]
            planting[lo:hi] |= self.sid[lo:hi] == np.uint64(sid)
        team_names = np.array([_TEAMS.get(t, "UA") for t in range(4)], dtype=object)
        team = c["team_num"][rows]
        derived = {
            "sid": self.sid[rows],
            "name": self.name[rows],
            "team": np.where((team >= 0) & (team < 4), team_names[np.clip(team, 0, 3)], "UA"),
            "is_ducking": ducking,
            "is_standing": ~ducking,
            "is_air": (flags & 1) == 0,  # FL_ONGROUND
            "adr": np.divide(dmg, rounds, out=np.zeros(len(rows)), where=rounds > 0),
            "is_planting": planting[rows],
        }
        self.player_columns = [derived[f] if f in derived else c[f][rows] for f in PLAYER_FIELDS]
        has_c4 = np.fromiter(
            ("C4 Explosive" in items for items in c["items"][rows]), bool, len(rows)
        )
        c4_rows = rows[has_c4]
        self.c4_carrier = {
            int(f): (self.name[r], int(self.sid[r]))
            for f, r in zip(self.row_frame[c4_rows].tolist(), c4_rows.tolist(), strict=True)
        }

    # -- assembly ------------------------------------------------------------------------

    def frames(self) -> Iterator[Frame]:
        """Frames block by block; each block is built with the cyclic GC paused.

        The frames are acyclic dicts, so the collector finds nothing in them, yet without the
        pause it rescans them thousands of times and takes most of the build time.
        """
        bomb = _BombState(self.has_bomb_info or bool(self.c4_carrier), self.initial_carrier)
        infernos: dict[int, list[Inferno]] = defaultdict(list)
        for first, end, eid, x, y, z in self.inferno_spans:
            entry: Inferno = {"id": eid, "fires": [{"x": x, "y": y, "z": z}]}
            for f in range(first, end):
                infernos[f].append(entry)
        for block in range(0, len(self.ticks), _BLOCK_TICKS):
            enabled = gc.isenabled()
            gc.disable()
            try:
                frames = self._block(block, bomb, infernos)
            finally:
                if enabled:
                    gc.enable()
            yield from frames

    def _block(self, block: int, bomb: _BombState, infernos: dict) -> list[Frame]:
        stop = min(block + _BLOCK_TICKS, len(self.ticks))
        pb, first_tick = self.player_bounds, int(self.ticks[0])
        lo, hi = int(pb[block]), int(pb[stop])
        rows = list(zip(*(col[lo:hi].tolist() for col in self.player_columns), strict=True))
        starts = (pb[block : stop + 1] - lo).tolist()
        out: list[Frame] = []
        for f in range(block, stop):
            players: list[Player] = [
                dict(zip(PLAYER_FIELDS, row, strict=True))  # type: ignore[misc]
                for row in rows[starts[f - block] : starts[f - block + 1]]
            ]
            tick = int(self.ticks[f])
            events = self.bomb_events.get(f, ())
            out.append(
                {
                    "tick": tick,
                    "round_time": (tick - first_tick) / TICKRATE,
                    "round_start": self.round_start[f],
                    "is_freeze": self.freeze[f],
                    "t": self.t_name[f],
                    "ct": self.ct_name[f],
                    "t_wins": self.t_wins[f],
                    "ct_wins": self.ct_wins[f],
                    "players": players,
                    "shooting": self.shooting.get(f),
                    "kills": self.kills.get(f),
                    "nades": self.nades.get(f),
                    "infernos": infernos.get(f),
                    "nade_event": self.nade_event.get(f),
                    "bomb": bomb.step(self.round_start[f], events, players, self.c4_carrier.get(f)),
                }
            )
        return out


class _BombState:
    """The bomb as the events describe it, moved with its carrier between events."""

    def __init__(self, has_info: bool, carrier: tuple[str, int | None] | None) -> None:
        self.has_info = has_info
        self.carrier = carrier
        self._reset()

    def _reset(self) -> None:
        self.pos: tuple[float, float, float] | None = None
        self.planted = self.defused = self.exploded = False
        self.planted_by: str | None = None
        self.defused_by: str | None = None

    def step(
        self, round_start: bool, events, players: list[Player], holder: tuple | None
    ) -> Bomb | None:
        """Advance one frame; ``holder`` is the player whose inventory shows the C4, if any."""
        if not self.has_info:
            return None
        if round_start:
            self._reset()
            self.carrier = None
        for kind, name, sid, x, y, z in events:
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
            self.pos = self._carrier_pos(players) or self.pos
        if self.pos is None:
            return None
        x, y, z = self.pos
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
