"""Game states in order -> frame content and the events that a change between posts proves.

GSI sends state, not events. An event is derived only where two consecutive states make it
certain (docs/gsi.md): a death counter that rose (the killer only when exactly one kills
counter rose, by as many as there were deaths, on the other team), a smoke or decoy whose
effecttime became > 0, a flashbang that left the grenade list, a round phase that became
freezetime, a planter/defuser seen just before the bomb was planted/defused (less time than a
plant/defuse takes), ammo in the clip of the weapon in hand that went down (a shot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processing.frames import Bomb, Frame, Inferno, Kill, Nade, NadeEvent, Player
from processing.gsi.state import NADE_KINDS, BombInfo, GameState, PlayerState, nade_type

PLANT_SECONDS = 3  # a C4 plant takes 3 s; a defuse 5 s with a kit, 10 s without
DEFUSE_SECONDS = 5
_PLANTED_STATES = ("planted", "defusing", "defused", "exploded")


@dataclass
class Sample:
    """One post's frame content (held until the next post) and the events it revealed."""

    frame: Frame  # tick/round_time 0, event fields empty: the framer fills them in
    round_start: bool = False
    kills: list[Kill] = field(default_factory=list)
    nade_events: list[NadeEvent] = field(default_factory=list)
    shooting: list[int] = field(default_factory=list)
    bomb_key: tuple[str, int | None] | None = None  # bomb (state, player): same key = same motion
    ended: bool = False  # map.phase gameover
    halftime: bool = False  # map.phase intermission: the break before the sides switch
    live: bool = False  # map.phase live


class StateTracker:
    """Carries what consecutive posts need: the previous state, damage totals, bomb players."""

    def __init__(self) -> None:
        self.previous: GameState | None = None
        self._dmg_base: dict[int, int] = {}
        self._planter: tuple[int, int] | None = None  # (sid, timestamp) last seen planting
        self._defuser: tuple[int, int] | None = None
        self.planted_by: str | None = None
        self.defused_by: str | None = None

    def step(self, state: GameState) -> Sample:
        prev = self.previous
        round_start = self._round_start(state, prev)
        if round_start:
            self.planted_by = self.defused_by = None
            self._planter = self._defuser = None
        self._track_damage(state, prev)
        names = {sid: p.name for sid, p in state.players.items()}
        players = [self._player(p, state) for p in state.players.values() if p.hp > 0]
        bomb = self._bomb(state, names)
        nades, infernos = _grenades(state)
        frame: Frame = {
            "tick": 0,
            "round_time": 0.0,
            "round_start": False,
            "is_freeze": state.round_phase == "freezetime",
            "t": state.t_name,
            "ct": state.ct_name,
            "t_wins": state.t_score,
            "ct_wins": state.ct_score,
            "players": players,
            "shooting": None,
            "kills": None,
            "nades": nades or None,
            "infernos": infernos or None,
            "nade_event": None,
            "bomb": bomb,
        }
        sample = Sample(
            frame=frame,
            round_start=round_start,
            kills=_kills(state, prev),
            nade_events=_nade_events(state, prev, round_start),
            shooting=_shooting(state, prev),
            bomb_key=(state.bomb.state, state.bomb.player) if state.bomb else None,
            ended=state.map_phase == "gameover",
            halftime=state.map_phase == "intermission",
            live=state.map_phase == "live",
        )
        self.previous = state
        return sample

    @staticmethod
    def _round_start(state: GameState, prev: GameState | None) -> bool:
        """A round began: the round phase became freezetime (or went over -> live directly).

        Warmup has no round phase: the first round starts when the match leaves warmup.
        """
        if state.map_phase == "gameover" or state.round_phase is None:
            return False
        before = prev.round_phase if prev is not None else state.previous_round_phase
        map_before = prev.map_phase if prev is not None else state.previous_map_phase
        if map_before == "warmup" and state.map_phase != "warmup":
            before = "warmup"
        if before is None or before == state.round_phase:
            return False
        return state.round_phase == "freezetime" or (before, state.round_phase) == ("over", "live")

    def _track_damage(self, state: GameState, prev: GameState | None) -> None:
        """Match damage = the rounds' round_totaldmg summed (GSI only has the round's)."""
        if state.map_phase == "warmup":
            self._dmg_base.clear()
            return
        if prev is None or prev.map_phase == "warmup":
            return
        for sid, player in state.players.items():
            before = prev.players.get(sid)
            if before is not None and player.round_dmg < before.round_dmg:
                self._dmg_base[sid] = self._dmg_base.get(sid, 0) + before.round_dmg

    def _player(self, p: PlayerState, state: GameState) -> Player:
        active = p.active
        dmg = p.round_dmg + self._dmg_base.get(p.sid, 0) if state.map_phase != "warmup" else 0
        rounds = state.map_round or 0
        bomb = state.bomb
        return {
            "sid": p.sid,
            "name": p.name,
            "clan": "",
            "team": p.team,
            "hp": p.hp,
            "money": p.money,
            "x": p.pos[0],
            "y": p.pos[1],
            "z": p.pos[2],
            "view_x": p.yaw,
            "view_y": p.pitch,
            "actv_itm": active.name if active else "",
            "items": [w.name for w in p.weapons],
            "helmet": p.helmet,
            "armor": p.armor,
            "kit": p.kit,
            "is_ducking": False,
            "is_walking": False,
            "is_standing": True,
            "is_air": False,
            "is_rld": active is not None and active.state == "reloading",
            "kills": p.kills,
            "deaths": p.deaths,
            "assists": p.assists,
            "dmg": dmg,
            "adr": dmg / rounds if rounds > 0 else 0.0,
            "is_planting": bomb is not None and bomb.state == "planting" and bomb.player == p.sid,
            "is_defusing": bomb is not None and bomb.state == "defusing" and bomb.player == p.sid,
        }

    def _bomb(self, state: GameState, names: dict[int, str]) -> Bomb | None:
        info: BombInfo | None = state.bomb
        if info is None or info.pos is None:
            return None
        now = state.timestamp
        if info.state == "planting" and info.player is not None:
            self._planter = (info.player, now)
        elif info.state == "defusing" and info.player is not None:
            self._defuser = (info.player, now)
        elif info.state in ("carried", "dropped"):
            self.planted_by = self.defused_by = None
            self._planter = self._defuser = None
        # Whole-second timestamps: a difference of n seconds is less than n + 1 real seconds.
        if info.state in _PLANTED_STATES and self.planted_by is None and self._planter:
            sid, seen = self._planter
            if now - seen + 1 <= PLANT_SECONDS and sid in names:
                self.planted_by = names[sid]
            self._planter = None
        if info.state == "defused" and self.defused_by is None and self._defuser:
            sid, seen = self._defuser
            if now - seen + 1 <= DEFUSE_SECONDS and sid in names:
                self.defused_by = names[sid]
            self._defuser = None
        carrier = None
        if info.state in ("carried", "planting") and info.player is not None:
            carrier = names.get(info.player)
        x, y, z = info.pos
        return {
            "carrier": carrier,
            "x": x,
            "y": y,
            "z": z,
            "planted": info.state in _PLANTED_STATES,
            "defused": info.state == "defused",
            "exploded": info.state == "exploded",
            "planted_by": self.planted_by if info.state in _PLANTED_STATES else None,
            "defused_by": self.defused_by if info.state == "defused" else None,
        }


def _grenades(state: GameState) -> tuple[list[Nade], list[Inferno]]:
    nades: list[Nade] = []
    infernos: list[Inferno] = []
    for g in state.grenades.values():
        if g.kind == "inferno":
            fires = [{"x": x, "y": y, "z": z} for x, y, z in g.flames]
            infernos.append({"id": g.id, "fires": fires})
        elif (
            g.kind in NADE_KINDS
            and g.pos is not None
            and g.effecttime <= 0
            and (g.moving or g.kind != "frag")
        ):
            owner = state.players.get(g.owner) if g.owner is not None else None
            team = owner.team if owner else ""
            x, y, z = g.pos
            nades.append(
                {"id": g.id, "type": nade_type(g.kind, team), "x": x, "y": y, "z": z, "team": team}
            )
    return nades, infernos


def _kills(state: GameState, prev: GameState | None) -> list[Kill]:
    """Deaths whose counter rose; the killer named only when the counters leave one choice."""
    deaths: list[PlayerState] = []
    killers: list[tuple[PlayerState, int, int]] = []  # (player, kills rise, headshot rise)
    for sid, p in state.players.items():
        before = prev.players.get(sid) if prev is not None else None
        if before is not None:
            old_kills, old_deaths = before.kills, before.deaths
        else:
            old_kills, old_deaths = state.previous_stats.get(sid, (None, None))
        if old_deaths is not None and p.deaths > old_deaths:
            deaths.extend([p] * (p.deaths - old_deaths))
        if old_kills is not None and p.kills > old_kills:
            hs = 0
            if before is not None and p.round_kills - before.round_kills == p.kills - old_kills:
                hs = p.round_killhs - before.round_killhs
            killers.append((p, p.kills - old_kills, hs))
    if not deaths:
        return []
    killer, headshot = None, False
    if len(killers) == 1:
        candidate, rise, hs = killers[0]
        if rise == len(deaths) and all(
            v.sid != candidate.sid and v.team != candidate.team for v in deaths
        ):
            killer, headshot = candidate.name, hs == rise
    return [
        {
            "killer": killer or "",
            "victim": v.name,
            "weapon": "",
            "is_hs": headshot,
            "penetrations": 0,
        }
        for v in deaths
    ]


def _nade_events(state: GameState, prev: GameState | None, round_start: bool) -> list[NadeEvent]:
    """Smokes/decoys that went off (effecttime became > 0), flashbangs that popped (vanished)."""
    if prev is None:
        return []
    events: list[NadeEvent] = []
    for gid, g in state.grenades.items():
        before = prev.grenades.get(gid)
        if (
            g.kind in ("smoke", "decoy")
            and before is not None
            and before.effecttime <= 0 < g.effecttime
            and g.pos is not None
        ):
            x, y, z = g.pos
            events.append({"type": nade_type(g.kind, ""), "x": x, "y": y, "z": z})
    if not round_start:
        for gid, before in prev.grenades.items():
            if before.kind == "flashbang" and gid not in state.grenades and before.pos is not None:
                x, y, z = before.pos
                events.append({"type": nade_type("flashbang", ""), "x": x, "y": y, "z": z})
    return events


def _shooting(state: GameState, prev: GameState | None) -> list[int]:
    """Players whose weapon in hand (same slot and weapon in both posts) lost ammo in its clip."""
    if prev is None:
        return []
    shooters = []
    for sid, p in state.players.items():
        before = prev.players.get(sid)
        now_w, old_w = p.active, before.active if before else None
        if (
            now_w is not None
            and old_w is not None
            and (now_w.slot, now_w.name) == (old_w.slot, old_w.name)
            and now_w.clip is not None
            and old_w.clip is not None
            and now_w.clip < old_w.clip
        ):
            shooters.append(sid)
    return shooters
