"""The demoparser2 side: the file checks, every query the package makes, and the three passes.

demoparser2 panics or answers with nothing on a truncated or foreign file, so the file is
checked first and every failure becomes a DemoError naming the file and what to do. The
queries (player props, events, grenade props) live here so that one place says what the rest
of the package may expect in the parsed columns.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from demoparser2 import DemoParser

from processing.demo.stringtables import restore_string_tables
from processing.demo.wire import WireError

TICKRATE = 64.0  # CS2 servers tick at 64/s; the demo header does not carry it.
_MAGIC = b"PBDEMS2\x00"

# Field -> the demoparser2 prop it is read from.
SOURCES: dict[str, str] = {
    "x": "X",
    "y": "Y",
    "z": "Z",
    "view_x": "yaw",
    "view_y": "pitch",
    "hp": "health",
    "money": "balance",
    "armor": "armor_value",
    "helmet": "has_helmet",
    "kit": "has_defuser",
    "actv_itm": "active_weapon_name",
    "items": "inventory",
    "flags": "CCSPlayerPawn.m_fFlags",
    "is_walking": "is_walking",
    "is_rld": "is_in_reload",  # the weapon in hand's m_bInReload
    "is_planting": "m_bStartedArming",  # the weapon in hand's: the C4 while it is armed
    "is_defusing": "is_defusing",
    "kills": "kills_total",
    "deaths": "deaths_total",
    "assists": "assists_total",
    "dmg": "CCSPlayerController.CCSPlayerController_ActionTrackingServices.m_iDamage",
    "rounds": "total_rounds_played",
    "team_num": "team_num",
    "alive": "is_alive",
    "clan": "clan_name",
    "team_clan": "team_clan_name",
    "team_wins": "team_rounds_total",
    "freeze": "is_freeze_period",
    "round_start_time": "round_start_time",
    "game_phase": "game_phase",
}
TICK_PROPS: list[str] = list(SOURCES.values())

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
    "server_cvar",
]
EVENT_PLAYER_PROPS = ["X", "Y", "Z", "team_num"]

GRENADE_TEAM = "Grenade.m_iTeamNum"


class DemoError(Exception):
    """A demo that cannot be processed; the message names the file and what to do."""


# A demo larger than this is read in tick windows: parse_ticks' answer costs about 1 KB per
# player-tick at peak, so a full match (180,000 ticks x 10 players) in one answer would pass
# the processing Job's 2 GiB. Smaller demos keep the single (faster) pass.
WINDOW_ABOVE_BYTES = 64 << 20
WINDOW_TICKS = 32_768  # about 8.5 minutes at 64 tick/s: ~330k player rows per window


@dataclass
class Parsed:
    header: dict[str, str]
    windows: Iterator[pd.DataFrame]  # parse_ticks answers for consecutive tick windows
    events: dict[str, pd.DataFrame]
    grenades: pd.DataFrame  # projectiles in flight


def parse_demo(
    path: Path, window_above: int = WINDOW_ABOVE_BYTES, window_ticks: int = WINDOW_TICKS
) -> Parsed:
    """The demoparser2 passes read_demo needs (also the benchmark's baseline).

    Events and grenades are read at once; player rows come lazily from ``windows``, in one
    window unless the file is larger than ``window_above`` bytes. A demo whose string tables
    only a DEM_StringTables frame carries is parsed from a restored copy (stringtables.py),
    removed once the last window is read.
    """
    path = Path(path)
    size = _check_file(path)
    workdir = tempfile.TemporaryDirectory(prefix="eeict-demo-")
    try:
        source = restore_string_tables(path, Path(workdir.name))
        parser = DemoParser(str(source))
        header = parser.parse_header()
        events = dict(parser.parse_events(EVENTS, player=EVENT_PLAYER_PROPS))
        grenades = parser.parse_grenades(extra=[GRENADE_TEAM])
    except (KeyboardInterrupt, SystemExit):
        workdir.cleanup()
        raise
    except WireError as exc:
        workdir.cleanup()
        raise DemoError(
            f"{path.name}: its frames are corrupt ({exc}); copy the demo again"
        ) from exc
    except OSError as exc:  # writing the restored copy: a full or unwritable TMPDIR
        workdir.cleanup()
        raise DemoError(
            f"{path.name}: cannot write its restored copy to {tempfile.gettempdir()} "
            f"({exc.strerror}); free space there or point TMPDIR elsewhere"
        ) from exc
    except BaseException as exc:  # demoparser2 raises plain Exception, or panics (BaseException)
        workdir.cleanup()
        raise DemoError(
            f"{path.name}: demoparser2 cannot read it ({type(exc).__name__}: {exc}); "
            "is it a complete CS2 demo?"
        ) from exc
    grenades = _projectiles(grenades)
    last_tick = max(
        [int(df["tick"].max()) for df in (*events.values(), grenades) if len(df) and "tick" in df]
        or [0]
    )
    window = window_ticks if size > window_above else None
    windows = _windows(path, parser, window, last_tick, workdir)
    return Parsed(header, windows, events, grenades)


def _windows(
    path: Path,
    parser: DemoParser,
    window: int | None,
    last_event_tick: int,
    workdir: tempfile.TemporaryDirectory[str],
) -> Iterator[pd.DataFrame]:
    """parse_ticks answers: the whole demo at once (``window`` None), or ``window`` ticks at a
    time until past the last event and a window comes back empty; then ``workdir`` goes."""
    with workdir:
        yield from _ticks(path, parser, window, last_event_tick)


def _ticks(
    path: Path, parser: DemoParser, window: int | None, last_event_tick: int
) -> Iterator[pd.DataFrame]:
    start, found = 0, False
    while True:
        ticks = list(range(start, start + window)) if window else None
        try:
            df = parser.parse_ticks(TICK_PROPS, ticks=ticks)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise DemoError(
                f"{path.name}: demoparser2 cannot read its player data "
                f"({type(exc).__name__}: {exc}); is it a complete CS2 demo?"
            ) from exc
        empty = df is None or len(df) == 0 or "tick" not in df
        if not empty:
            found = True
            yield df
        del df
        start += window or 0
        if not window or (empty and start > last_event_tick):
            break
    if not found:
        raise DemoError(f"{path.name}: demoparser2 found no player data in it; nothing to record")


def _projectiles(df: pd.DataFrame | None) -> pd.DataFrame:
    """Grenades in flight: parse_grenades also lists the grenade weapons players carry."""
    if df is None or not len(df) or "grenade_type" not in df:
        return pd.DataFrame()
    flying = df["grenade_type"].astype(str).str.endswith("Projectile").to_numpy()
    return df[flying].reset_index(drop=True)


def _check_file(path: Path) -> int:
    """The file's size, once it looks like a whole CS2 demo."""
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
    return size


# Match settings from the server's convars (seconds); CS2's default where a demo never sent one.
_SETTINGS = {
    "freeze_time": (("mp_freezetime",), 1.0, 15.0),
    "round_time": (("mp_roundtime_defuse", "mp_roundtime"), 60.0, 115.0),  # minutes -> s
    "bomb_time": (("mp_c4timer",), 1.0, 40.0),
}


def game_settings(cvars: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Freeze, round and bomb time in seconds from the demo's ``server_cvar`` messages.

    Each is ``{"seconds": value, "from": convar}``, the last value the demo set; where the demo
    never sets it, CS2's default with ``"from": "default"`` (say so rather than guess silently).
    Bomb-defusal maps use mp_roundtime_defuse, falling back to mp_roundtime.
    """
    last: dict[str, str] = {}
    if cvars is not None and len(cvars) and "name" in cvars:
        for name, value in zip(cvars["name"].tolist(), cvars["value"].tolist(), strict=True):
            last[str(name)] = str(value)
    out: dict[str, dict[str, Any]] = {}
    for field, (names, scale, default) in _SETTINGS.items():
        found = next((n for n in names if _number(last.get(n)) is not None), None)
        if found is None:
            out[field] = {"seconds": default, "from": "default"}
        else:
            out[field] = {"seconds": round(_number(last[found]) * scale, 3), "from": found}
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def nan_to_none(value: Any) -> Any:
    """demoparser2 marks a missing value with None or NaN; frames use None."""
    return None if value is None or (isinstance(value, float) and value != value) else value
