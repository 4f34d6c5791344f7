"""Turns a planned round into frames: paths become per-tick arrays, events become field changes.

Per round, numpy computes every player's positions, view angles and flags for all ticks at
once; the per-tick loop then only copies each alive player's current state dict and sets the
five fields that change every tick. Fields that change rarely (hp, money, items, flags) are
applied at the ticks where they change.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from processing.frames import Frame
from processing.synthetic.plan import GUNS, Person, RoundPlan
from processing.synthetic.weapons import C4, FIRE_TYPES, KNIFE, NADES

JUMP_S = 0.755  # airtime of a standing jump (jump impulse 301.99 u/s, gravity 800 u/s^2)
JUMP_V, GRAVITY = 301.99, 800.0
EYE_HEIGHT = 56.0
INFERNO_S = 7.0
SMOOTH_TICKS = 9  # width of the view smoothing window
_FLAGS = ("is_ducking", "is_walking", "is_standing", "is_air", "is_rld")
_FLAGS += ("is_planting", "is_defusing")


class _Span:
    """Tick offsets as slices, clipped to the round."""

    def __init__(self, n: int, tickrate: float) -> None:
        self.n = n
        self.rate = tickrate

    def __call__(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def clip(self, a: int, b: int) -> slice:
        return slice(max(0, min(a, self.n)), max(0, min(b, self.n)))


def _trajectory(plan: RoundPlan, i: int, n: int, tickrate: float):
    """Positions (n, 3), moving/walking/knife masks and facing yaw (NaN = none) of player i."""
    pos = np.empty((n, 3))
    pos[:] = plan.spawns[i]
    moving = np.zeros(n, bool)
    walking = np.zeros(n, bool)
    knife = np.zeros(n, bool)
    face = np.full(n, np.nan)
    cur = np.asarray(plan.spawns[i], float)
    for leg in plan.legs[i]:
        if leg.start >= n:
            break
        pts = np.vstack([cur, np.asarray(leg.points, float)])
        cum = np.concatenate(([0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))))
        s = np.minimum(np.arange(n - leg.start) * (leg.speed / tickrate), cum[-1])
        for d in range(3):
            pos[leg.start :, d] = np.interp(s, cum, pts[:, d])
        going = s < cum[-1]
        moving[leg.start :] = going
        walking[leg.start :] = going & leg.walking
        knife[leg.start :] = going & leg.knife
        face[leg.start :] = np.nan
        if leg.face is not None:
            end = pts[-1]
            face[leg.start :][~going] = math.degrees(
                math.atan2(leg.face[1] - end[1], leg.face[0] - end[0])
            )
        cur = pts[-1]
    pos[:, 0] += plan.offsets[i][0]
    pos[:, 1] += plan.offsets[i][1]
    return pos, moving, walking, knife, face


def _smooth_yaw(yaw: np.ndarray, initial: float) -> np.ndarray:
    """Forward-fill NaNs, then turn smoothly (moving average of the unwrapped angle)."""
    valid = ~np.isnan(yaw)
    if not valid[0]:
        yaw[0] = initial
        valid[0] = True
    idx = np.maximum.accumulate(np.where(valid, np.arange(len(yaw)), 0))
    angle = np.unwrap(np.radians(yaw[idx]))
    pad = SMOOTH_TICKS // 2
    padded = np.concatenate((np.full(pad, angle[0]), angle, np.full(pad, angle[-1])))
    csum = np.concatenate(([0.0], np.cumsum(padded)))
    smooth = (csum[SMOOTH_TICKS:] - csum[:-SMOOTH_TICKS]) / SMOOTH_TICKS
    return (np.degrees(smooth) + 180.0) % 360.0 - 180.0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in mask."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _changes(values: np.ndarray) -> tuple[list[int], list]:
    at = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    return at.tolist(), values[at].tolist()


class RoundRenderer:
    """Frames of one planned round."""

    def __init__(self, plan: RoundPlan, people: list[Person], tickrate: float, seed: int, ids):
        self.plan = plan
        self.people = people
        self.rate = tickrate
        self.n = plan.length
        self.span = _Span(self.n, tickrate)
        r = random.Random(f"{seed}:{plan.index}")
        self.rng = r
        self.np_rng = np.random.default_rng(r.getrandbits(64))
        self.ids = ids

    def frames(self) -> Iterator[Frame]:
        plan, n, span = self.plan, self.n, self.span
        count = len(self.people)
        tracks = [_trajectory(plan, i, n, self.rate) for i in range(count)]
        pos = [t[0] for t in tracks]
        shots_of: dict[int, list[int]] = defaultdict(list)
        for tick, p in plan.shots:
            shots_of[p].append(tick)

        # Where each player looks: travel direction, hold direction, or at an opponent.
        yaws = []
        for i in range(count):
            p, moving, _, _, face = tracks[i]
            step = np.diff(p[:, :2], axis=0, append=p[-1:, :2])
            yaw = face.copy()
            heading = np.degrees(np.arctan2(step[:, 1], step[:, 0]))
            yaw[moving] = heading[moving]
            yaws.append(yaw)
        for hit in plan.hits:
            self._aim(
                yaws, pos, hit.attacker, hit.victim, span.clip(hit.tick - span(0.6), hit.tick + 3)
            )
        for kill in plan.kills:
            self._aim(
                yaws, pos, kill.victim, kill.killer, span.clip(kill.tick - span(0.8), kill.tick)
            )
        for i in range(count):
            first = plan.legs[i][0].points[0] if plan.legs[i] else (0.0, 0.0, 0.0)
            start = plan.spawns[i]
            initial = math.degrees(math.atan2(first[1] - start[1], first[0] - start[0]))
            yaws[i] = np.round(_smooth_yaw(yaws[i], initial), 2)

        changes: dict[int, list[tuple[int, str, object]]] = defaultdict(list)
        for tick, i, name, value in plan.updates:
            changes[tick].append((i, name, value))
        for i in range(count):
            self._flags(i, tracks[i], shots_of, changes)

        columns = []
        for i in range(count):
            z = pos[i][:, 2] + self._jumps(i, tracks[i][1], changes)
            pitch = self._pitch()
            columns.append(
                (
                    np.round(pos[i][:, 0], 2).tolist(),
                    np.round(pos[i][:, 1], 2).tolist(),
                    np.round(z, 2).tolist(),
                    yaws[i].tolist(),
                    pitch.tolist(),
                )
            )

        nades, infernos, events = self._grenades(pos)
        kills = defaultdict(list)
        for k in plan.kills:
            kills[k.tick].append(
                {
                    "killer": self.people[k.killer].name,
                    "victim": self.people[k.victim].name,
                    "weapon": k.weapon,
                    "is_hs": k.is_hs,
                    "penetrations": k.penetrations,
                }
            )
        shooting = defaultdict(list)
        for tick, p in plan.shots:
            shooting[tick].append(self.people[p].sid)
        dying = defaultdict(list)
        for p, tick in plan.deaths.items():
            dying[tick].append(p)
        bomb = self._bomb_track(pos)

        states = [dict(s) for s in plan.initial]
        alive = list(range(count))
        t_clan, ct_clan = plan.t_clan, plan.ct_clan
        rate = self.rate
        for k in range(n):
            for i, name, value in changes.get(k, ()):
                states[i][name] = value
            for i in dying.get(k, ()):
                alive.remove(i)
            players = []
            for i in alive:
                p = states[i].copy()
                xs, ys, zs, vx, vy = columns[i]
                p["x"] = xs[k]
                p["y"] = ys[k]
                p["z"] = zs[k]
                p["view_x"] = vx[k]
                p["view_y"] = vy[k]
                p["items"] = list(p["items"])
                players.append(p)
            tick = plan.start_tick + k
            wins = plan.wins_before if k < plan.end else plan.wins_after
            yield {
                "tick": tick,
                "round_time": round(tick / rate, 4),
                "round_start": k == 0,
                "switch": False,  # set on a half's first frame by the match (it knows the halves)
                "is_freeze": k < plan.live,
                "is_halftime": False,  # the generated match has no halftime pause
                "t": t_clan,
                "ct": ct_clan,
                "t_wins": wins[0],
                "ct_wins": wins[1],
                "players": players,
                "shooting": shooting.get(k),
                "kills": kills.get(k),
                "nades": nades.get(k),
                "infernos": infernos.get(k),
                "nade_event": events.get(k),
                "nade_events": [events[k]] if k in events else None,
                "bomb": bomb(k),
            }

    # -- per-player arrays ---------------------------------------------------------------
    def _aim(self, yaws, pos, who: int, at: int, window: slice) -> None:
        d = pos[at][window, :2] - pos[who][window, :2]
        yaws[who][window] = np.degrees(np.arctan2(d[:, 1], d[:, 0]))

    def _pitch(self) -> np.ndarray:
        coarse = self.np_rng.normal(2.0, 3.0, self.n // 32 + 2)
        return np.round(np.interp(np.arange(self.n) / 32.0, np.arange(len(coarse)), coarse), 2)

    def _jumps(self, i: int, moving: np.ndarray, changes) -> np.ndarray:
        """z offset of a few running jumps; records is_air changes."""
        lift = np.zeros(self.n)
        air = np.zeros(self.n, bool)
        length = self.span(JUMP_S)
        t = np.arange(length) / self.rate
        arc = np.maximum(0.0, JUMP_V * t - 0.5 * GRAVITY * t * t)
        runs = [(a, b) for a, b in _runs(moving) if b - a > 2 * length]
        for a, b in self.rng.sample(runs, min(len(runs), self.rng.randint(0, 2))):
            start = self.rng.randrange(a, b - length)
            lift[start : start + length] = arc
            air[start : start + length] = True
        at, values = _changes(air)
        for tick, value in zip(at, values, strict=True):
            changes[tick].append((i, "is_air", value))
        return lift

    def _flags(self, i: int, track, shots_of, changes) -> None:
        """Ducking, walking, reloading, planting, defusing and the active item of player i."""
        plan, n, span, rng = self.plan, self.n, self.span, self.rng
        _, moving, walking, knife, _ = track
        side = plan.sides[i]
        names = [plan.main_before[i], plan.main_after[i], KNIFE[side], C4, *NADES]
        active = np.zeros(n, np.int8)
        active[plan.buy_tick[i] :] = 1
        active[knife] = 2
        for throw in plan.throws:
            if throw.player == i:
                active[span.clip(throw.tick - span(0.8), throw.tick)] = names.index(throw.item)
        planting = np.zeros(n, bool)
        defusing = np.zeros(n, bool)
        ducking = np.zeros(n, bool)
        if plan.plant and plan.plant[2] == i:
            planting[span.clip(plan.plant[0], plan.plant[1])] = True
            active[planting] = 3
        if plan.defuse and plan.defuse[2] == i:
            defusing[span.clip(plan.defuse[0], plan.defuse[1])] = True
            ducking |= defusing & (rng.random() < 0.5)
        shots = shots_of.get(i, [])
        for tick in shots:
            active[tick] = 1
        still = ~moving
        still[: plan.live] = False
        for a, b in _runs(still):
            if b - a > span(2) and rng.random() < 0.35:
                start = rng.randrange(a, b - span(1))
                ducking[start : min(b, start + span(rng.uniform(1, 6)))] = True
        reloading = np.zeros(n, bool)
        gun = GUNS[plan.main_after[i]]
        for kill in plan.kills:
            if kill.killer == i and rng.random() < 0.5:
                a = kill.tick + span(0.3)
                b = a + span(gun.reload)
                if not any(a <= t < b for t in shots):
                    reloading[span.clip(a, b)] = True
        reloading &= active == 1
        for name, values in (
            ("is_ducking", ducking),
            ("is_standing", ~ducking),
            ("is_walking", walking),
            ("is_rld", reloading),
            ("is_planting", planting),
            ("is_defusing", defusing),
        ):
            at, vals = _changes(values)
            for tick, value in zip(at, vals, strict=True):
                changes[tick].append((i, name, value))
        at, vals = _changes(active)
        for tick, value in zip(at, vals, strict=True):
            changes[tick].append((i, "actv_itm", names[value]))

    # -- grenades and the bomb -----------------------------------------------------------
    def _grenades(self, pos):
        """In-flight grenades per tick, infernos per tick, and one detonation per tick."""
        plan, span, rng = self.plan, self.span, self.rng
        nades: dict[int, list] = defaultdict(list)
        infernos: dict[int, list] = defaultdict(list)
        events: dict[int, dict] = {}
        for throw in plan.throws:
            kind = NADES[throw.item][0]
            t0 = throw.tick
            ox, oy, oz = pos[throw.player][t0].tolist()
            oz += EYE_HEIGHT
            tx = throw.target[0] + rng.uniform(-60, 60)
            ty = throw.target[1] + rng.uniform(-60, 60)
            tz = throw.target[2]
            dist = math.hypot(tx - ox, ty - oy)
            det = t0 + max(span(0.7), min(span(2.2), span(dist / 750.0)))
            fire = kind in FIRE_TYPES
            while not fire and det in events:
                det += 1
            if det >= self.n:
                continue
            height = min(350.0, 0.25 * dist)
            nade_id = next(self.ids)
            team = plan.sides[throw.player]
            steps = det - t0
            for k in range(t0, det):
                u = (k - t0) / steps
                nades[k].append(
                    {
                        "id": nade_id,
                        "type": kind,
                        "x": round(ox + (tx - ox) * u, 2),
                        "y": round(oy + (ty - oy) * u, 2),
                        "z": round(oz + (tz - oz) * u + 4 * height * u * (1 - u), 2),
                        "team": team,
                    }
                )
            if not fire:
                events[det] = {"type": kind, "x": round(tx, 2), "y": round(ty, 2), "z": tz}
                continue
            fires = []
            for _ in range(rng.randint(6, 12)):
                angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(0, 110)
                fires.append(
                    {
                        "x": round(tx + radius * math.cos(angle), 2),
                        "y": round(ty + radius * math.sin(angle), 2),
                        "z": tz,
                    }
                )
            inferno_id = next(self.ids)
            grow = max(1, span(1.0) // len(fires))
            for k in range(det, min(self.n, det + span(INFERNO_S))):
                shown = fires[: 1 + (k - det) // grow]
                infernos[k].append({"id": inferno_id, "fires": [dict(f) for f in shown]})
        return nades, infernos, events

    def _bomb_track(self, pos):
        """A function giving the bomb dict at a tick offset."""
        plan = self.plan
        carrier = plan.carrier
        name = self.people[carrier].name
        died = plan.deaths.get(carrier)
        planted_at = plan.plant[1] if plan.plant else None
        drop = planted_at if planted_at is not None else died
        rest = pos[carrier][drop if drop is not None else 0]
        rest = (round(float(rest[0]), 2), round(float(rest[1]), 2), round(float(rest[2]), 2))
        defuser = self.people[plan.defuse[2]].name if plan.defuse else None
        defused_at = plan.defuse[1] if plan.defuse else None
        exploded_at = plan.exploded_at
        carried = pos[carrier].round(2).tolist()

        def bomb(k: int) -> dict:
            held = drop is None or k < drop
            x, y, z = carried[k] if held else rest
            planted = planted_at is not None and k >= planted_at
            defused = defused_at is not None and k >= defused_at
            return {
                "carrier": name if held else None,
                "x": x,
                "y": y,
                "z": z,
                "planted": planted,
                "defused": defused,
                "exploded": exploded_at is not None and k >= exploded_at,
                "planted_by": name if planted else None,
                "defused_by": defuser if defused else None,
            }

        return bomb
