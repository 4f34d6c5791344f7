"""Game events placed on frames: shooting, kills, grenade detonations and burning infernos.

demoparser2 gives events as tables with their own ticks, and not every event tick has a
frame (ticks without entity data are skipped), so each event goes on the first frame at or
after its tick and events after the last frame are dropped. The bomb's events are in
bomb.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from processing.demo.parse import nan_to_none
from processing.demo.players import TEAMS, PlayerRows
from processing.frames import Kill, NadeEvent
from processing.vocabulary import client_name, fire_grenade

_DETONATIONS = {
    "smokegrenade_detonate": "Smoke Grenade",
    "hegrenade_detonate": "HE Grenade",
    "flashbang_detonate": "Flashbang",
    "decoy_started": "Decoy Grenade",
}
# (first frame, end frame, entity id, x, y, z) of a burning inferno
InfernoSpan = tuple[int, int, int, float, float, float]


@dataclass
class Events:
    """The non-bomb events by frame index."""

    shooting: dict[int, list[int]]  # steam ids of the players who fired
    kills: dict[int, list[Kill]]
    nade_events: dict[int, list[NadeEvent]]  # every detonation of the frame, in tick order
    inferno_spans: list[InfernoSpan]
    detonated: dict[int, int]  # grenade entity id -> detonation tick

    @classmethod
    def from_parsed(
        cls, events: dict[str, pd.DataFrame], players: PlayerRows, round_start: list[bool]
    ) -> Events:
        nade_events, detonated = _detonations(events, players)
        return cls(
            shooting=_shooting(events.get("weapon_fire"), players),
            kills=_kills(events.get("player_death"), players),
            nade_events=nade_events,
            inferno_spans=_infernos(events, players, round_start),
            detonated=detonated,
        )


def _shooting(fire: pd.DataFrame | None, players: PlayerRows) -> dict[int, list[int]]:
    shooting: dict[int, list[int]] = defaultdict(list)
    if fire is not None and len(fire) and "user_steamid" in fire:
        n = len(players.ticks)
        fi = players.frame_index(fire["tick"])
        for f, sid in zip(fi.tolist(), fire["user_steamid"].tolist(), strict=True):
            sid = nan_to_none(sid)
            if f < n and sid is not None and int(sid) not in shooting[f]:
                shooting[f].append(int(sid))
    return shooting


def _detonations(
    events: dict[str, pd.DataFrame], players: PlayerRows
) -> tuple[dict[int, NadeEvent], dict[int, int]]:
    """Every detonation by frame (in tick order), and each grenade's detonation tick."""
    n = len(players.ticks)
    found: list[tuple[int, int, int, NadeEvent]] = []  # (tick, frame, order, event)
    detonated: dict[int, int] = {}
    for event, kind in _DETONATIONS.items():
        det = events.get(event)
        if det is None or not len(det):
            continue
        fi = players.frame_index(det["tick"])
        for eid, t in zip(det["entityid"].tolist(), det["tick"].tolist(), strict=True):
            detonated[int(eid)] = min(int(t), detonated.get(int(eid), int(t)))
        xyz = (det["x"].tolist(), det["y"].tolist(), det["z"].tolist())
        rows = zip(det["tick"].tolist(), fi.tolist(), *xyz, strict=True)
        for i, (t, f, x, y, z) in enumerate(rows):
            if f < n:
                found.append((int(t), f, len(found) + i, {"type": kind, "x": x, "y": y, "z": z}))
    nade_events: dict[int, list[NadeEvent]] = defaultdict(list)
    for _, f, _, event in sorted(found, key=lambda e: e[:3]):
        nade_events[f].append(event)
    return nade_events, detonated


def _kills(deaths: pd.DataFrame | None, players: PlayerRows) -> dict[int, list[Kill]]:
    """Kill entries, names as demoparser2 gives them ("" for a bot, which it does not know)."""
    kills: dict[int, list[Kill]] = defaultdict(list)
    if deaths is None or not len(deaths):
        return kills
    n = len(players.ticks)
    fi = players.frame_index(deaths["tick"]).tolist()
    victims = _names(deaths, "user_name")
    killers = _names(deaths, "attacker_name")
    killer_team = deaths["attacker_team_num"].tolist() if "attacker_team_num" in deaths else None
    weapons, hs = deaths["weapon"].tolist(), deaths["headshot"].tolist()
    pen = deaths["penetrated"].tolist()
    for i, f in enumerate(fi):
        if f >= n:
            continue
        kills[f].append(
            {
                "killer": killers[i] or "",
                "victim": victims[i] or "",
                "weapon": _kill_weapon(str(weapons[i]), killer_team[i] if killer_team else None),
                "is_hs": bool(hs[i]),
                "penetrations": int(pen[i]),
            }
        )
    return kills


def _kill_weapon(raw: str, team: object) -> str:
    """The kill's weapon in the client's names; fire is the killer's side's fire grenade."""
    if raw == "inferno":
        team = nan_to_none(team)
        return fire_grenade(TEAMS.get(int(team)) if team is not None else None)
    return client_name(raw)


def _names(df: pd.DataFrame, column: str) -> list[str | None]:
    values = df[column].tolist() if column in df else [None] * len(df)
    return [nan_to_none(v) for v in values]


def _infernos(
    events: dict[str, pd.DataFrame], players: PlayerRows, round_start: list[bool]
) -> list[InfernoSpan]:
    """Each inferno from its start frame until it expires or is put out, or else until the
    next round starts (a new round removes every fire) or the demo ends."""
    spans: list[InfernoSpan] = []
    start = events.get("inferno_startburn")
    if start is None or not len(start):
        return spans
    n = len(players.ticks)
    round_frames = np.append(np.flatnonzero(round_start), n)
    ends: dict[int, list[int]] = defaultdict(list)  # entity id -> end frames (ids are reused)
    for name in ("inferno_expire", "inferno_extinguish"):
        end = events.get(name)
        if end is not None and len(end):
            for eid, f in zip(
                end["entityid"].tolist(),
                players.frame_index(end["tick"]).tolist(),
                strict=True,
            ):
                ends[int(eid)].append(f)
    fi = players.frame_index(start["tick"]).tolist()
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
            next_round = int(round_frames[np.searchsorted(round_frames, f, "right")])
            end = min((e for e in ends.get(int(eid), ()) if e >= f), default=n)
            spans.append((f, min(end, next_round), int(eid), x, y, z))
    return spans
