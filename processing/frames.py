"""The frame schema: one dict per server tick, with the field names the old client knows.

Every source (a CS2 demo, the generated match, later a live feed) produces frames of this
shape; the recording stores them msgpack-encoded, and the server never re-encodes them.
Optional event lists are ``None`` (msgpack nil) when empty, as in the old JSON.
"""

from __future__ import annotations

from typing import TypedDict


class Player(TypedDict):
    sid: int  # steam id (uint64); bots: docs/protocol.md
    name: str
    clan: str
    team: str  # "T", "CT", "S" (spectator), "UA" (unassigned)
    hp: int
    money: int
    x: float
    y: float
    z: float
    view_x: float  # yaw, degrees
    view_y: float  # pitch, degrees
    actv_itm: str  # active weapon, the client's name (processing/vocabulary.py), "" when none
    items: list[str]  # inventory, the client's names
    helmet: bool
    armor: int
    kit: bool
    is_ducking: bool
    is_walking: bool
    is_standing: bool
    is_air: bool
    is_rld: bool
    kills: int
    deaths: int
    assists: int
    dmg: int
    adr: float
    is_planting: bool
    is_defusing: bool


class Kill(TypedDict):
    killer: str  # name, "" for world/suicide
    victim: str
    weapon: str  # the client's name ("AK-47", "HE Grenade", "Molotov" for fire)
    is_hs: bool
    penetrations: int


class Nade(TypedDict):
    id: int
    type: str  # the client's name: "Smoke Grenade", "HE Grenade", "Flashbang", "Molotov", ...
    x: float
    y: float
    z: float
    team: str


class Fire(TypedDict):
    x: float
    y: float
    z: float


class Inferno(TypedDict):
    id: int
    fires: list[Fire]


class NadeEvent(TypedDict):
    type: str  # "Smoke Grenade", "HE Grenade", "Flashbang", "Decoy Grenade"
    x: float
    y: float
    z: float


class Bomb(TypedDict):
    carrier: str | None  # name of the player carrying it, else None
    x: float | None  # None while the bomb's events are known but not where it is
    y: float | None
    z: float | None
    planted: bool
    defused: bool
    exploded: bool
    planted_by: str | None
    defused_by: str | None


class Frame(TypedDict):
    tick: int
    round_time: float  # seconds since the demo started
    round_start: bool  # a round started on this tick
    switch: bool  # the teams switched sides on this tick (true on that frame only)
    is_freeze: bool
    is_halftime: bool  # the halftime pause between the halves
    t: str  # clan names
    ct: str
    t_wins: int
    ct_wins: int
    players: list[Player]  # alive players only
    shooting: list[int] | None
    kills: list[Kill] | None
    nades: list[Nade] | None
    infernos: list[Inferno] | None
    nade_event: NadeEvent | None  # the frame's first detonation (what the old client reads)
    nade_events: list[NadeEvent] | None  # every detonation on the frame, in event order
    bomb: Bomb | None


class RosterEntry(TypedDict):
    sid: int
    name: str
    team: str  # team at the first tick the player was seen


PLAYER_FIELDS: tuple[str, ...] = tuple(Player.__annotations__)
FRAME_FIELDS: tuple[str, ...] = tuple(Frame.__annotations__)
