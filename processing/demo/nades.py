"""Grenades in flight: demoparser2's projectile rows turned into positions per frame.

demoparser2's parse_grenades gives each projectile's world position on every tick it exists
(x, y, z from the entity's cell and offset); this module names and teams them and keeps each
from its first tick until its detonation event (or removal).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from processing.demo.parse import GRENADE_TEAM
from processing.demo.players import TEAMS, PlayerRows
from processing.frames import Nade
from processing.vocabulary import fire_grenade

_NADE_TYPES = {
    "CSmokeGrenadeProjectile": "Smoke Grenade",
    "CHEGrenadeProjectile": "HE Grenade",
    "CFlashbangProjectile": "Flashbang",
    "CIncendiaryGrenadeProjectile": "Incendiary Grenade",
    "CDecoyProjectile": "Decoy Grenade",
}
_FIRE_CLASS = "CMolotovProjectile"  # the molotov's and the incendiary's (fire_grenade)


def nades_in_flight(
    gren: pd.DataFrame | None, players: PlayerRows, detonated: dict[int, int]
) -> dict[int, list[Nade]]:
    """Projectiles from their first tick until their detonation event (or removal); a row
    without a position (demoparser2 never got the entity's cell) is left out.
    ``detonated`` maps a grenade entity id to its detonation tick."""
    nades: dict[int, list[Nade]] = defaultdict(list)
    if gren is None or not len(gren) or "grenade_entity_id" not in gren:
        return nades
    n = len(players.ticks)
    gren = gren.sort_values(["grenade_entity_id", "tick"], kind="stable")
    eid = gren["grenade_entity_id"].to_numpy(np.int64)
    tick = gren["tick"].to_numpy(np.int64)
    pos = gren[["x", "y", "z"]].to_numpy(float)
    teams = _teams(gren, players, eid, tick)
    types = [
        fire_grenade(team) if t == _FIRE_CLASS else _NADE_TYPES.get(t, t)
        for t, team in zip(gren["grenade_type"].tolist(), teams, strict=True)
    ]
    fi = players.frame_index(tick)
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
        nades[f].append(
            {"id": e, "type": types[r], "x": xs[r], "y": ys[r], "z": zs[r], "team": teams[r]}
        )
    return nades


def _teams(gren: pd.DataFrame, players: PlayerRows, eid: np.ndarray, tick: np.ndarray) -> list:
    """Each row's grenade team: the entity's own team prop as last reported for that grenade,
    else its thrower's team at the grenade's first tick ("" when neither is known)."""
    if GRENADE_TEAM in gren:
        own = gren[GRENADE_TEAM].groupby(eid).ffill().tolist()
    else:
        own = [None] * len(gren)
    throwers = gren["steamid"].tolist() if "steamid" in gren else [None] * len(gren)
    first_team: dict[int, str] = {}
    out = []
    for e, t, team, sid in zip(eid.tolist(), tick.tolist(), own, throwers, strict=True):
        if team == team and team is not None:
            out.append(TEAMS.get(int(team), "UA"))
            continue
        if e not in first_team:
            num = players.value(sid, t, "team_num")
            first_team[e] = TEAMS.get(int(num), "UA") if num is not None else ""
        out.append(first_team[e])
    return out
