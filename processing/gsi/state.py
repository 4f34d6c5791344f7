"""One payload read into typed game state: what a single post says, nothing derived across posts.

Reading is pure and all-or-nothing (a malformed known field raises GsiPayloadError before any
caller state changes). Names become the client's vocabulary here; positions and forward
vectors are parsed from GSI's "x, y, z" strings, and yaw/pitch come from the forward vector
in the demos' convention (yaw = atan2(y, x) in degrees, -180..180; pitch positive looking
down, as Source's eye angles: forward.z = -sin(pitch)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from processing.gsi.payload import (
    GsiPayloadError,
    check_payload,
    flag,
    integer,
    number,
    obj,
    steamid,
    text,
    vector,
)
from processing.vocabulary import client_name, fire_grenade

Vec = tuple[float, float, float]

# GSI grenade types that are grenades in flight ("inferno" is a burning area, not a nade).
NADE_KINDS = frozenset({"smoke", "frag", "flashbang", "firebomb", "decoy"})


def nade_type(kind: str, team: str) -> str:
    """A GSI grenade type in the client's names (``frag`` -> HE Grenade), as demos name them;
    ``firebomb`` by its thrower's ``team`` (Molotov when the team is not known)."""
    if kind == "firebomb":
        return fire_grenade(team)
    return client_name(kind)


@dataclass(frozen=True)
class Weapon:
    slot: str  # GSI key, "weapon_0", ...
    name: str  # client name
    state: str  # "active", "holstered", "reloading"
    clip: int | None  # ammo_clip, None for knives and grenades


@dataclass(frozen=True)
class PlayerState:
    sid: int
    name: str
    team: str
    hp: int
    armor: int
    helmet: bool
    kit: bool
    money: int
    pos: Vec
    yaw: float
    pitch: float
    weapons: tuple[Weapon, ...]
    kills: int
    deaths: int
    assists: int
    round_kills: int
    round_killhs: int
    round_dmg: int

    @property
    def active(self) -> Weapon | None:
        """The weapon in hand: state "active", or "reloading" (reloading is the active one)."""
        for weapon in self.weapons:
            if weapon.state in ("active", "reloading"):
                return weapon
        return None


@dataclass(frozen=True)
class Grenade:
    id: int
    kind: str  # GSI type: smoke, frag, flashbang, firebomb, decoy, inferno (see nade_type)
    owner: int | None
    pos: Vec | None
    moving: bool  # velocity not zero (an HE at rest has exploded or is about to)
    effecttime: float  # smoke/decoy: seconds since it went off, 0.0 while in flight
    flames: tuple[Vec, ...]  # inferno only


@dataclass(frozen=True)
class BombInfo:
    state: str  # carried, dropped, planting, planted, defusing, defused, exploded
    pos: Vec | None
    player: int | None  # carrier, planter or defuser


@dataclass(frozen=True)
class GameState:
    """What one payload says about the match."""

    timestamp: int  # provider.timestamp, whole Unix seconds
    map_name: str | None
    map_phase: str | None  # warmup, live, intermission, gameover
    map_round: int | None  # rounds played so far
    t_name: str
    ct_name: str
    t_score: int
    ct_score: int
    round_phase: str | None  # freezetime, live, over
    players: dict[int, PlayerState]
    grenades: dict[int, Grenade]
    bomb: BombInfo | None
    # From the ``previously`` block: the values this post changed, as the game last sent them.
    previous_round_phase: str | None = None
    previous_map_phase: str | None = None
    previous_stats: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)


def read_state(payload: Any) -> GameState:
    """The game state of one payload; raises GsiPayloadError naming a malformed field."""
    payload = check_payload(payload)
    provider = payload["provider"]
    timestamp = integer(provider.get("timestamp", 0), "provider.timestamp")
    game_map = obj(payload.get("map", {}), "map")
    teams = {}
    for side in ("t", "ct"):
        team = obj(game_map.get(f"team_{side}", {}), f"map.team_{side}")
        name = text(team.get("name", ""), f"map.team_{side}.name")
        teams[side] = (name, integer(team.get("score", 0), f"map.team_{side}.score"))
    round_info = obj(payload.get("round", {}), "round")
    map_round = game_map.get("round")
    return GameState(
        timestamp=timestamp,
        map_name=_optional_text(game_map, "name", "map"),
        map_phase=_optional_text(game_map, "phase", "map"),
        map_round=None if map_round is None else integer(map_round, "map.round"),
        t_name=teams["t"][0],
        ct_name=teams["ct"][0],
        t_score=teams["t"][1],
        ct_score=teams["ct"][1],
        round_phase=_optional_text(round_info, "phase", "round"),
        players={
            sid: player
            for sid, player in (
                _player(key, value)
                for key, value in obj(payload.get("allplayers", {}), "allplayers").items()
            )
        },
        grenades=dict(
            _grenade(key, value)
            for key, value in obj(payload.get("grenades", {}), "grenades").items()
        ),
        bomb=_bomb(payload["bomb"]) if "bomb" in payload else None,
        **_previously(payload.get("previously", {})),
    )


def yaw_pitch(forward: Vec) -> tuple[float, float]:
    """Yaw and pitch in degrees from a forward vector (any length)."""
    fx, fy, fz = forward
    return math.degrees(math.atan2(fy, fx)), math.degrees(math.atan2(-fz, math.hypot(fx, fy)))


def _optional_text(block: dict, key: str, where: str) -> str | None:
    return None if key not in block else text(block[key], f"{where}.{key}")


def _player(key: str, value: Any) -> tuple[int, PlayerState]:
    where = f"allplayers.{key}"
    sid = steamid(key, where)
    p = obj(value, where)
    state = obj(p.get("state", {}), f"{where}.state")
    stats = obj(p.get("match_stats", {}), f"{where}.match_stats")
    if "position" not in p or "forward" not in p:
        raise GsiPayloadError(f"{where} has no position/forward (subscribe allplayers_position)")
    yaw, pitch = yaw_pitch(vector(p["forward"], f"{where}.forward"))

    def st(name: str) -> int:
        return integer(state.get(name, 0), f"{where}.state.{name}")

    def ms(name: str) -> int:
        return integer(stats.get(name, 0), f"{where}.match_stats.{name}")

    return sid, PlayerState(
        sid=sid,
        name=text(p.get("name", ""), f"{where}.name"),
        team=text(p.get("team", "UA"), f"{where}.team"),
        hp=st("health"),
        armor=st("armor"),
        helmet=flag(state.get("helmet", False), f"{where}.state.helmet"),
        kit=flag(state.get("defusekit", False), f"{where}.state.defusekit"),
        money=st("money"),
        pos=vector(p["position"], f"{where}.position"),
        yaw=yaw,
        pitch=pitch,
        weapons=tuple(
            _weapon(slot, w, f"{where}.weapons.{slot}")
            for slot, w in sorted(
                obj(p.get("weapons", {}), f"{where}.weapons").items(), key=lambda kv: _slot(kv[0])
            )
        ),
        kills=ms("kills"),
        deaths=ms("deaths"),
        assists=ms("assists"),
        round_kills=st("round_kills"),
        round_killhs=st("round_killhs"),
        round_dmg=st("round_totaldmg"),
    )


def _slot(key: str) -> tuple[int, str]:
    digits = key.rpartition("_")[2]
    return (int(digits) if digits.isdigit() else 1 << 30, key)


def _weapon(slot: str, value: Any, where: str) -> Weapon:
    w = obj(value, where)
    clip = w.get("ammo_clip")
    return Weapon(
        slot=slot,
        name=client_name(text(w.get("name", ""), f"{where}.name")),
        state=text(w.get("state", "holstered"), f"{where}.state"),
        clip=None if clip is None else integer(clip, f"{where}.ammo_clip"),
    )


def _grenade(key: str, value: Any) -> tuple[int, Grenade]:
    where = f"grenades.{key}"
    g = obj(value, where)
    if not key.isdigit():
        raise GsiPayloadError(f"{where}: grenade id is not a number")
    owner = g.get("owner")
    flames = obj(g.get("flames", {}), f"{where}.flames")
    return int(key), Grenade(
        id=int(key),
        kind=text(g.get("type", ""), f"{where}.type"),
        owner=None if owner is None else steamid(owner, f"{where}.owner"),
        pos=vector(g["position"], f"{where}.position") if "position" in g else None,
        moving="velocity" not in g or any(vector(g["velocity"], f"{where}.velocity")),
        effecttime=number(g.get("effecttime", 0), f"{where}.effecttime"),
        flames=tuple(vector(v, f"{where}.flames.{k}") for k, v in flames.items()),
    )


def _bomb(value: Any) -> BombInfo:
    b = obj(value, "bomb")
    player = b.get("player")
    return BombInfo(
        state=text(b.get("state", ""), "bomb.state"),
        pos=vector(b["position"], "bomb.position") if "position" in b else None,
        player=None if player is None else steamid(player, "bomb.player"),
    )


def _previously(value: Any) -> dict[str, Any]:
    """The earlier round phase and match stats from ``previously`` (a delta; shapes vary)."""
    prev = value if isinstance(value, dict) else {}
    round_prev, map_prev = prev.get("round"), prev.get("map")
    phase = round_prev.get("phase") if isinstance(round_prev, dict) else None
    map_phase = map_prev.get("phase") if isinstance(map_prev, dict) else None
    stats: dict[int, tuple[int | None, int | None]] = {}
    players = prev.get("allplayers")
    for key, entry in players.items() if isinstance(players, dict) else ():
        ms = entry.get("match_stats") if isinstance(entry, dict) else None
        if isinstance(ms, dict) and key.isdigit():
            kills, deaths = ms.get("kills"), ms.get("deaths")
            stats[int(key)] = (
                kills if isinstance(kills, int) and not isinstance(kills, bool) else None,
                deaths if isinstance(deaths, int) and not isinstance(deaths, bool) else None,
            )
    return {
        "previous_round_phase": phase if isinstance(phase, str) else None,
        "previous_map_phase": map_phase if isinstance(map_phase, str) else None,
        "previous_stats": stats,
    }
