"""The match schedule: who buys what, who goes where, who kills whom and when, for every round.

Planning touches no tick-level data, so the whole match is planned up front in milliseconds;
round lengths, and so the frame count, are known before a single frame is built. Everything
comes from one ``random.Random(seed)`` consumed in a fixed order, so a seed fixes the match.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from processing.synthetic import mirage
from processing.synthetic.mirage import Point
from processing.synthetic.weapons import (
    ARMOR_COST,
    C4,
    FORCE_BUY,
    FULL_BUY,
    GUNS,
    HELMET_COST,
    KIT_COST,
    KNIFE,
    KNIFE_SPEED,
    NADES,
    PISTOL,
    PISTOL_UPGRADE,
)
from processing.vocabulary import client_name, fire_grenade

FREEZE_S = 15.0
ROUND_S = 115.0  # 1:55 of play after freeze time
BOMB_S = 40.0
PLANT_S = 3.2
DEFUSE_S, KIT_DEFUSE_S = 10.0, 5.0
AFTER_S = 7.0  # round-end delay before the next round starts
START_MONEY, MAX_MONEY = 800, 16000
WALK_FACTOR = 0.52  # walking speed / running speed (250 -> 130)

CLANS = ("Kettu Esports", "Tundra")
NAMES = (
    ("kettu", "Sisu", "nokka", "Pakkanen", "räntä"),
    ("Halla", "tuisku", "Kuura", "varis", "Jää"),
)


@dataclass(frozen=True)
class Person:
    sid: int
    name: str
    clan: str
    first_side: str  # "T" or "CT" in the first half


@dataclass
class Leg:
    """Move from where the previous leg ended through ``points`` at ``speed``, from ``start``."""

    start: int
    points: list[Point]
    speed: float
    walking: bool = False
    knife: bool = False
    face: Point | None = None  # what to look at once arrived


@dataclass(frozen=True)
class Hit:
    tick: int
    attacker: int
    victim: int
    damage: int


@dataclass(frozen=True)
class KillEvent:
    tick: int
    killer: int
    victim: int
    weapon: str  # the client's name (processing/vocabulary.py)
    is_hs: bool
    penetrations: int
    assister: int | None


@dataclass(frozen=True)
class Throw:
    tick: int
    player: int
    item: str  # display name of the grenade
    target: Point


@dataclass
class Loadout:
    pistol: str
    primary: str | None = None
    nades: list[str] = field(default_factory=list)
    armor: int = 0
    helmet: bool = False
    kit: bool = False

    def main(self) -> str:
        return self.primary or self.pistol


@dataclass
class RoundPlan:
    index: int
    start_tick: int
    length: int  # ticks in the round, freeze and round-end delay included
    live: int  # offset of the first tick after freeze time
    end: int  # offset of the tick the round is decided on
    sides: list[str]  # per player
    t_clan: str
    ct_clan: str
    wins_before: tuple[int, int]  # (t_wins, ct_wins) of the clans on those sides
    wins_after: tuple[int, int]
    winner: str
    reason: str
    spawns: list[Point]
    offsets: list[tuple[float, float]]
    legs: list[list[Leg]]
    deaths: dict[int, int]  # player -> offset of the tick they die on
    kills: list[KillEvent]
    hits: list[Hit]
    shots: list[tuple[int, int]]  # (offset, player)
    throws: list[Throw]
    carrier: int
    plant: tuple[int, int, int] | None  # (start, end, planter)
    defuse: tuple[int, int, int] | None  # (start, end, defuser)
    exploded_at: int | None
    main_before: list[str]  # active gun before the buy
    main_after: list[str]
    buy_tick: list[int]
    initial: list[dict]  # player state fields at the round's first tick (no position/flags)
    updates: list[tuple[int, int, str, object]]  # (offset, player, field, value)


def make_roster(rng: random.Random) -> list[Person]:
    people = []
    for team, names in enumerate(NAMES):
        for name in names:
            sid = 76561197960265728 + rng.randrange(10_000_000, 1_000_000_000)
            people.append(Person(sid, name, CLANS[team], "T" if team == 0 else "CT"))
    return people


def items_of(side: str, load: Loadout, bomb: bool) -> list[str]:
    items = [KNIFE[side], load.pistol]
    if load.primary:
        items.append(load.primary)
    items.extend(load.nades)
    if bomb:
        items.append(C4)
    return items


class _Ticks:
    def __init__(self, tickrate: float, rng: random.Random) -> None:
        self.rate = tickrate
        self.rng = rng

    def __call__(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def between(self, lo: float, hi: float) -> int:
        return self(self.rng.uniform(lo, hi))

    def travel(self, distance: float, speed: float) -> int:
        return math.ceil(distance / speed * self.rate)


def _path_points(start: Point, goal: str) -> tuple[list[Point], float]:
    nodes, _ = mirage.route(mirage.nearest_node(start), goal)
    points = [mirage.NODES[n] for n in nodes]
    length = sum(math.dist(a, b) for a, b in zip([start, *points], points, strict=False))
    return points, length


class _Mover:
    """Appends legs for one player, knowing where and when the previous one ended."""

    def __init__(self, spawn: Point, ticks: _Ticks) -> None:
        self.legs: list[Leg] = []
        self.pos = spawn
        self.free_at = 0
        self.ticks = ticks

    def go(self, at: int, goal: str, speed: float, *, walking=False, knife=False, face=None) -> int:
        """Start towards ``goal`` at ``at`` (or when the last leg ends); returns arrival offset."""
        points, length = _path_points(self.pos, goal)
        start = max(at, self.free_at)
        self.legs.append(Leg(start, points, speed, walking, knife, face))
        self.free_at = start + self.ticks.travel(length, speed) + 1
        self.pos = points[-1]
        return self.free_at


def _buy(rng, side, money, load, mode, awper) -> tuple[Loadout, int]:
    """What one player buys for the round's mode ("pistol", "eco", "force", "full")."""
    spent = 0
    new = Loadout(load.pistol, load.primary, list(load.nades), load.armor, load.helmet, load.kit)

    def pay(cost: int) -> bool:
        nonlocal spent
        if money - spent >= cost:
            spent += cost
            return True
        return False

    if mode == "full":
        if new.primary is None:
            rifle = FULL_BUY[side] if side == "T" else rng.choice(FULL_BUY["CT"])
            if awper and money >= 6000 and pay(GUNS["AWP"].cost):
                new.primary = "AWP"
            elif pay(GUNS[rifle].cost):
                new.primary = rifle
        if new.armor < 100 and pay(ARMOR_COST + HELMET_COST):
            new.armor, new.helmet = 100, True
        if side == "CT" and not new.kit and rng.random() < 0.6 and pay(KIT_COST):
            new.kit = True
        wanted = ["Smoke Grenade", "Flashbang", fire_grenade(side), "HE Grenade"]
        for nade in wanted[: rng.randint(1, 4)]:
            if nade not in new.nades and pay(NADES[nade][1]):
                new.nades.append(nade)
    elif mode == "force":
        if new.primary is None:
            gun = rng.choice(FORCE_BUY[side])
            if pay(GUNS[gun].cost):
                new.primary = gun
        if new.armor < 100 and pay(ARMOR_COST):
            new.armor = 100
        if rng.random() < 0.5 and pay(NADES["Flashbang"][1]):
            new.nades.append("Flashbang")
    elif mode == "pistol":
        if rng.random() < 0.5 and pay(ARMOR_COST):
            new.armor = 100
        else:
            for nade in ("Smoke Grenade", "Flashbang"):
                if pay(NADES[nade][1]):
                    new.nades.append(nade)
        if side == "CT" and not new.kit and rng.random() < 0.3 and pay(KIT_COST):
            new.kit = True
    else:  # eco
        if rng.random() < 0.3 and new.pistol in PISTOL[side]:
            gun = rng.choice(PISTOL_UPGRADE)
            if pay(GUNS[gun].cost):
                new.pistol = gun
        if rng.random() < 0.2 and pay(NADES["Decoy Grenade"][1]):
            new.nades.append("Decoy Grenade")
    return new, spent


_SCENARIOS = {
    "T": (("explode", 0.45), ("t_elim_pre", 0.3), ("t_elim_post", 0.25)),
    "CT": (("ct_elim", 0.6), ("defuse", 0.3), ("time", 0.1)),
}
_STRENGTH = {"pistol": 1.0, "eco": 0.3, "force": 1.0, "full": 2.0}


def _team_mode(rng, money: list[int], streak: int, pistol_round: bool) -> str:
    if pistol_round:
        return "pistol"
    avg = sum(money) / len(money)
    if avg >= 4200:
        return "full"
    if avg < 2000 or (streak >= 1 and avg < 3300 and rng.random() < 0.7):
        return "eco"
    return "force"


class MatchPlanner:
    """Plans round after round, carrying money, loadouts, scores and stats between them."""

    def __init__(self, seed: int, rounds: int, tickrate: float) -> None:
        self.rng = random.Random(seed)
        self.rounds = rounds
        self.tickrate = tickrate
        self.people = make_roster(self.rng)
        self.half = rounds // 2
        self.wins = [0, 0]  # per clan
        self.stats = [{"kills": 0, "deaths": 0, "assists": 0, "dmg": 0} for _ in self.people]
        self._reset_economy()

    def _reset_economy(self) -> None:
        self.money = [START_MONEY] * len(self.people)
        self.loadouts: list[Loadout | None] = [None] * len(self.people)
        self.streak = [0, 0]  # consecutive losses per clan

    def plan(self) -> list[RoundPlan]:
        plans, start = [], 0
        for index in range(self.rounds):
            if index == self.half and index > 0:
                self._reset_economy()
            plan = self._plan_round(index, start)
            plans.append(plan)
            start += plan.length
        return plans

    def _sides(self, index: int) -> list[str]:
        swap = 0 < self.half <= index
        flip = {"T": "CT", "CT": "T"}
        return [flip[p.first_side] if swap else p.first_side for p in self.people]

    def _plan_round(self, index: int, start_tick: int) -> RoundPlan:
        rng = self.rng
        ticks = _Ticks(self.tickrate, rng)
        sides = self._sides(index)
        team_of = {side: [i for i, s in enumerate(sides) if s == side] for side in ("T", "CT")}
        clan_of = {side: self.people[team_of[side][0]].clan for side in ("T", "CT")}
        clan_index = {side: CLANS.index(clan_of[side]) for side in ("T", "CT")}
        pistol_round = index in (0, self.half)
        live = ticks(FREEZE_S)

        # -- buying ---------------------------------------------------------------------
        loads_before = [
            self.loadouts[i] or Loadout(pistol=rng.choice(PISTOL[sides[i]]))
            for i in range(len(self.people))
        ]
        loads: list[Loadout] = []
        spent: list[int] = []
        modes = {}
        for side in ("T", "CT"):
            members = team_of[side]
            modes[side] = _team_mode(
                rng, [self.money[i] for i in members], self.streak[clan_index[side]], pistol_round
            )
        for i in range(len(self.people)):
            awper = i in (team_of[sides[i]][0],)
            load, cost = _buy(rng, sides[i], self.money[i], loads_before[i], modes[sides[i]], awper)
            loads.append(load)
            spent.append(cost)
        buy_tick = [ticks.between(0.5, 6.0) for _ in self.people]

        p_t = 0.47 + 0.1 * (_STRENGTH[modes["T"]] - _STRENGTH[modes["CT"]])
        winner = "T" if rng.random() < min(0.85, max(0.15, p_t)) else "CT"
        names, weights = zip(*_SCENARIOS[winner], strict=True)
        scenario = rng.choices(names, weights)[0]
        carrier = rng.choice(team_of["T"])

        for _attempt in range(200):
            plan = self._try_round(
                index, start_tick, ticks, sides, team_of, scenario, carrier, loads, live
            )
            if plan is not None:
                break
        else:  # pragma: no cover - planning constraints always admit a solution quickly
            raise RuntimeError(f"could not plan round {index}")

        # -- state carried into the round, and the updates during it --------------------
        initial, updates = [], plan.updates
        rounds_played = index + 1
        for i, person in enumerate(self.people):
            st = self.stats[i]
            before = loads_before[i]
            initial.append(
                {
                    "sid": person.sid,
                    "name": person.name,
                    "clan": person.clan,
                    "team": sides[i],
                    "hp": 100,
                    "money": self.money[i],
                    "x": 0.0,
                    "y": 0.0,
                    "z": 0.0,
                    "view_x": 0.0,
                    "view_y": 0.0,
                    "actv_itm": before.main(),
                    "items": items_of(sides[i], before, i == carrier),
                    "helmet": before.helmet,
                    "armor": before.armor,
                    "kit": before.kit,
                    "is_ducking": False,
                    "is_walking": False,
                    "is_standing": True,
                    "is_air": False,
                    "is_rld": False,
                    "kills": st["kills"],
                    "deaths": st["deaths"],
                    "assists": st["assists"],
                    "dmg": st["dmg"],
                    "adr": round(st["dmg"] / rounds_played, 1),
                    "is_planting": False,
                    "is_defusing": False,
                }
            )
            self.money[i] -= spent[i]
            load = loads[i]
            updates.append((buy_tick[i], i, "money", self.money[i]))
            updates.append((buy_tick[i], i, "items", items_of(sides[i], load, i == carrier)))
            updates.append((buy_tick[i], i, "armor", load.armor))
            updates.append((buy_tick[i], i, "helmet", load.helmet))
            updates.append((buy_tick[i], i, "kit", load.kit))

        self._play_events(plan, loads, rounds_played)
        self._settle(plan, loads, clan_index, team_of)
        plan.initial = initial
        plan.main_before = [load.main() for load in loads_before]
        plan.main_after = [load.main() for load in loads]
        plan.buy_tick = buy_tick
        return plan

    def _play_events(self, plan: RoundPlan, loads: list[Loadout], rounds_played: int) -> None:
        """Turn hits, kills, throws, plant and defuse into per-player field updates."""
        events: list[tuple[int, int, object]] = []
        events += [(h.tick, 0, h) for h in plan.hits]
        events += [(k.tick, 1, k) for k in plan.kills]
        events += [(t.tick, 2, t) for t in plan.throws]
        if plan.plant:
            events.append((plan.plant[1], 3, None))
        events.sort(key=lambda e: (e[0], e[1]))
        hp = [100] * len(self.people)
        armor = [load.armor for load in loads]
        has_bomb = plan.carrier
        up = plan.updates
        for tick, _, ev in events:
            if isinstance(ev, Hit):
                dealt = min(ev.damage, hp[ev.victim])
                hp[ev.victim] -= dealt
                armor[ev.victim] = max(0, armor[ev.victim] - dealt // 3)
                st = self.stats[ev.attacker]
                st["dmg"] += dealt
                up.append((tick, ev.victim, "hp", hp[ev.victim]))
                up.append((tick, ev.victim, "armor", armor[ev.victim]))
                up.append((tick, ev.attacker, "dmg", st["dmg"]))
                up.append((tick, ev.attacker, "adr", round(st["dmg"] / rounds_played, 1)))
            elif isinstance(ev, KillEvent):
                killer, victim = self.stats[ev.killer], self.stats[ev.victim]
                killer["kills"] += 1
                victim["deaths"] += 1
                up.append((tick, ev.killer, "kills", killer["kills"]))
                gun = GUNS[loads[ev.killer].main()]
                self.money[ev.killer] = min(MAX_MONEY, self.money[ev.killer] + gun.reward)
                up.append((tick, ev.killer, "money", self.money[ev.killer]))
                if ev.assister is not None:
                    helper = self.stats[ev.assister]
                    helper["assists"] += 1
                    up.append((tick, ev.assister, "assists", helper["assists"]))
            elif isinstance(ev, Throw):
                load = loads[ev.player]
                load.nades.remove(ev.item)
                side = plan.sides[ev.player]
                up.append((tick, ev.player, "items", items_of(side, load, ev.player == has_bomb)))
            else:  # the bomb is down
                planter = plan.carrier
                has_bomb = None
                up.append((tick, planter, "items", items_of("T", loads[planter], False)))
                self.money[planter] = min(MAX_MONEY, self.money[planter] + 300)
                up.append((tick, planter, "money", self.money[planter]))
        for i, load in enumerate(loads):
            load.armor = armor[i]
        if plan.defuse:
            _, end, defuser = plan.defuse
            self.money[defuser] = min(MAX_MONEY, self.money[defuser] + 300)
            up.append((end, defuser, "money", self.money[defuser]))

    def _settle(self, plan: RoundPlan, loads, clan_index, team_of) -> None:
        """Round-end money, scores and what survivors carry into the next round."""
        winner = plan.winner
        loser = "CT" if winner == "T" else "T"
        self.wins[clan_index[winner]] += 1
        win_pay = 3500 if plan.reason in ("bomb", "defuse") else 3250
        streak = self.streak[clan_index[loser]]
        lose_pay = 1400 + 500 * min(streak, 4) + (600 if loser == "T" and plan.plant else 0)
        self.streak[clan_index[winner]] = 0
        self.streak[clan_index[loser]] = streak + 1
        for side, pay in ((winner, win_pay), (loser, lose_pay)):
            for i in team_of[side]:
                self.money[i] = min(MAX_MONEY, self.money[i] + pay)
                plan.updates.append((plan.end, i, "money", self.money[i]))
        for i, load in enumerate(loads):
            self.loadouts[i] = None if i in plan.deaths else load
        plan.wins_after = (self.wins[clan_index["T"]], self.wins[clan_index["CT"]])

    # -- one attempt at a round's timeline ---------------------------------------------
    def _try_round(self, index, start_tick, ticks, sides, team_of, scenario, carrier, loads, live):
        rng = self.rng
        n_players = len(self.people)
        site = "A" if rng.random() < 0.6 else "B"
        spawn_points = {"T": list(mirage.T_SPAWNS), "CT": list(mirage.CT_SPAWNS)}
        for pts in spawn_points.values():
            rng.shuffle(pts)
        spawns = [spawn_points[sides[i]].pop() for i in range(n_players)]
        offsets = [(rng.uniform(-24, 24), rng.uniform(-24, 24)) for _ in range(n_players)]
        movers = [_Mover(spawns[i], ticks) for i in range(n_players)]

        def run_speed(i: int) -> float:
            return GUNS[loads[i].main()].speed

        # T: spawn -> staging point, wait for the call, then take the site.
        rush = rng.random() < 0.15
        call = live + (ticks.between(2, 6) if rush else ticks.between(40, 80))
        if scenario == "time":
            call = live + ticks.between(75, 90)
        routes = mirage.T_ROUTES[site]
        entry_at: list[int] = []
        carrier_arrival = 0
        plant_node = rng.choice(mirage.PLANT_SPOTS[site])
        for i in team_of["T"]:
            stage, entry = rng.choice(routes)
            knife = rng.random() < 0.5
            speed = KNIFE_SPEED if knife else run_speed(i)
            face = mirage.NODES[entry]
            movers[i].go(live + ticks.between(0, 1.5), stage, speed, knife=knife, face=face)
            walking = rng.random() < 0.3
            speed = run_speed(i) * (WALK_FACTOR if walking else 1.0)
            arrive_entry = movers[i].go(call, entry, speed, walking=walking)
            entry_at.append(arrive_entry)
            goal = plant_node if i == carrier else rng.choice(mirage.SITE_SPOTS[site])
            arrival = movers[i].go(0, goal, run_speed(i), face=mirage.NODES[entry])
            if i == carrier:
                carrier_arrival = arrival
        contact = min(entry_at) - ticks(1.0)

        # CT: spawn -> hold; the ones away from the site rotate on contact.
        areas = ["A", "A", "mid", "B", "B"]
        rng.shuffle(areas)
        holds = {area: list(spots) for area, spots in mirage.CT_HOLDS.items()}
        for spots in holds.values():
            rng.shuffle(spots)
        for i, area in zip(team_of["CT"], areas, strict=True):
            spot, faces = holds[area].pop() if holds[area] else mirage.CT_HOLDS[area][0]
            movers[i].go(live + ticks.between(0, 1.0), spot, run_speed(i), face=mirage.NODES[faces])
            if area != site:
                goal = rng.choice(mirage.SITE_SPOTS[site])
                movers[i].go(contact + ticks.between(1, 5), goal, KNIFE_SPEED, knife=True)

        # -- kills -------------------------------------------------------------------
        plants = scenario in ("explode", "t_elim_post", "defuse")
        pre: list[str] = []
        post: list[str] = []
        if scenario == "ct_elim":
            pre = ["T"] * 5 + ["CT"] * rng.randint(0, 3)
        elif scenario == "t_elim_pre":
            pre = ["CT"] * 5 + ["T"] * rng.randint(0, 3)
        elif scenario == "time":
            pre = ["T"] * rng.randint(1, 3) + ["CT"] * rng.randint(0, 3)
        else:
            ct_pre, t_pre = rng.randint(0, 2), rng.randint(0, 2)
            pre = ["CT"] * ct_pre + ["T"] * t_pre
            if scenario == "explode":
                post = ["CT"] * rng.randint(0, 4 - ct_pre) + ["T"] * rng.randint(0, 3 - t_pre)
            elif scenario == "t_elim_post":
                post = ["CT"] * (5 - ct_pre) + ["T"] * rng.randint(0, 3 - t_pre)
            else:  # defuse
                post = ["T"] * (5 - t_pre) + ["CT"] * rng.randint(0, 3 - ct_pre)
        last_side = {"ct_elim": "T", "t_elim_pre": "CT", "t_elim_post": "CT", "defuse": "T"}
        for order in (pre, post):
            rng.shuffle(order)
        order = post if post else pre
        want = last_side.get(scenario)
        if want and order and order[-1] != want:
            j = order.index(want)
            order[j], order[-1] = order[-1], order[j]

        defuser = None
        if scenario == "defuse":
            defuser = rng.choice(team_of["CT"])
        protected = {defuser} if defuser is not None else set()
        if plants:
            protected.add(carrier)

        times: list[int] = []
        t = contact - ticks(1.0)
        if pre and rng.random() < 0.3 and contact - live > ticks(30):
            times.append(live + ticks.between(18, 28))
        while len(times) < len(pre):
            t += ticks.between(0.5, 9.0)
            times.append(t)
        if any(x <= live for x in times):
            return None
        plant = None
        defuse = None
        exploded_at = None
        if plants:
            last_pre = max(times, default=live)
            p_start = max(
                carrier_arrival + ticks.between(0.3, 1.5), last_pre + ticks.between(0.5, 3)
            )
            p_end = p_start + ticks(PLANT_S)
            if p_end >= live + ticks(ROUND_S) - ticks(1):
                return None
            plant = (p_start, p_end, carrier)
            for i in team_of["CT"]:
                goal = plant_node if i == defuser else rng.choice(mirage.SITE_SPOTS[site])
                movers[i].go(p_end + ticks.between(0.5, 2.5), goal, run_speed(i))
            for i in team_of["T"]:
                if i != carrier:
                    movers[i].go(
                        p_end + ticks.between(0, 2),
                        rng.choice(mirage.SITE_SPOTS[site]),
                        run_speed(i) * WALK_FACTOR,
                        walking=True,
                        face=mirage.NODES[mirage.SITE_SPOTS[site][-1]],
                    )
            t = p_end + ticks.between(4, 12)
            for _ in post:
                times.append(t)
                t += ticks.between(0.5, 6.0)
            if max(times, default=0) >= p_end + ticks(BOMB_S) - ticks(1):
                return None

        # Who dies, who kills, in time order.
        dead: dict[int, int] = {}
        kills: list[KillEvent] = []
        hits: list[Hit] = []
        shots: list[tuple[int, int]] = []
        for tick, side in zip(times, pre + post, strict=True):
            before_plant = plant is None or tick < plant[1]
            alive = [i for i in team_of[side] if i not in dead]
            victims = [i for i in alive if not (i in protected and (before_plant or i == defuser))]
            enemies = [i for i in team_of["CT" if side == "T" else "T"] if i not in dead]
            if not victims or not enemies:
                return None
            victim, killer = rng.choice(victims), rng.choice(enemies)
            kills.append(
                self._kill(rng, ticks, live, tick, killer, victim, loads, dead, team_of, hits)
            )
            dead[victim] = tick
        for h in hits:
            shots.extend(self._burst(rng, ticks, h.tick, h.attacker, loads, live))
        for k in kills:
            if rng.random() < 0.5:  # the victim fires back before going down
                shots.extend(
                    self._burst(rng, ticks, k.tick - ticks.between(0.1, 0.5), k.victim, loads, live)
                )

        # How the round ends.
        if scenario in ("ct_elim", "t_elim_pre", "t_elim_post"):
            end = times[-1]
            reason = "elimination"
        elif scenario == "time":
            end = live + ticks(ROUND_S)
            reason = "time"
        elif scenario == "explode":
            end = plant[1] + ticks(BOMB_S)
            exploded_at = end
            reason = "bomb"
        else:
            arrival = movers[defuser].free_at
            d_start = max(arrival, times[-1]) + ticks.between(0.3, 1.5)
            d_end = d_start + ticks(KIT_DEFUSE_S if loads[defuser].kit else DEFUSE_S)
            if d_end >= plant[1] + ticks(BOMB_S) - ticks(0.5):
                return None
            defuse = (d_start, d_end, defuser)
            end = d_end
            reason = "defuse"
        if (times and max(times) > end) or end > live + ticks(ROUND_S) + ticks(BOMB_S):
            return None
        if plant is None and end > live + ticks(ROUND_S):
            return None

        # Chip damage on some survivors.
        for i in range(n_players):
            if i in dead or rng.random() > 0.25:
                continue
            tick = rng.randint(min(contact, end - 1), end - 1)
            enemies = [
                j for j in team_of["CT" if sides[i] == "T" else "T"] if dead.get(j, end + 1) > tick
            ]
            if tick > live and enemies:
                attacker = rng.choice(enemies)
                hits.append(Hit(tick, attacker, i, rng.randint(8, 60)))
                shots.extend(self._burst(rng, ticks, tick, attacker, loads, live))

        throws = self._throws(
            rng, ticks, sides, team_of, site, loads, movers, live, contact, dead, end
        )
        shots = [(tick, p) for tick, p in shots if tick < dead.get(p, end + ticks(AFTER_S))]
        return RoundPlan(
            index=index,
            start_tick=start_tick,
            length=end + ticks(AFTER_S),
            live=live,
            end=end,
            sides=sides,
            t_clan=self.people[team_of["T"][0]].clan,
            ct_clan=self.people[team_of["CT"][0]].clan,
            wins_before=(
                self.wins[CLANS.index(self.people[team_of["T"][0]].clan)],
                self.wins[CLANS.index(self.people[team_of["CT"][0]].clan)],
            ),
            wins_after=(0, 0),
            winner="T" if scenario in _WINS_T else "CT",
            reason=reason,
            spawns=spawns,
            offsets=offsets,
            legs=[m.legs for m in movers],
            deaths=dead,
            kills=kills,
            hits=hits,
            shots=sorted(set(shots)),
            throws=throws,
            carrier=carrier,
            plant=plant,
            defuse=defuse,
            exploded_at=exploded_at,
            main_before=[],
            main_after=[],
            buy_tick=[],
            initial=[],
            updates=[],
        )

    def _kill(
        self, rng, ticks, live, tick, killer, victim, loads, dead, team_of, hits
    ) -> KillEvent:
        """The hits that take ``victim`` from 100 hp to 0 at ``tick``; returns the kill."""
        gun_name = loads[killer].main()
        gun = GUNS[gun_name]
        health = 100
        assister = None
        side = "T" if killer in team_of["T"] else "CT"
        helpers = [i for i in team_of[side] if i != killer and i not in dead]
        assist_at = tick - ticks.between(0.8, 2.5)
        if helpers and assist_at > live and rng.random() < 0.25:
            assister = rng.choice(helpers)
            damage = rng.randint(41, 75)
            hits.append(Hit(assist_at, assister, victim, damage))
            health -= damage
        is_hs = rng.random() < (0.2 if gun_name == "AWP" else 0.45)
        before = 0 if is_hs or gun.damage >= health else rng.randint(1, 2)
        for j in range(before, 0, -1):
            damage = min(health - 1, gun.damage + rng.randint(-4, 4))
            if damage <= 0:
                break
            hits.append(Hit(tick - j * max(1, ticks(gun.interval)), killer, victim, damage))
            health -= damage
        hits.append(Hit(tick, killer, victim, health))
        pen = 1 if rng.random() < 0.08 else 0
        return KillEvent(tick, killer, victim, client_name(gun.kill_name), is_hs, pen, assister)

    def _burst(self, rng, ticks, tick, player, loads, live) -> list[tuple[int, int]]:
        gun = GUNS[loads[player].main()]
        count = 1 if gun.interval > 1 else rng.randint(1, 4)
        step = max(1, ticks(gun.interval))
        return [(tick - j * step, player) for j in range(count) if tick - j * step > live]

    def _throws(self, rng, ticks, sides, team_of, site, loads, movers, live, contact, dead, end):
        """Executes' smokes, flashes and fire; CT fire at the entries; the odd decoy."""
        throws: list[Throw] = []
        entries = [mirage.NODES[entry] for _, entry in mirage.T_ROUTES[site]]
        targets = [mirage.NODES[n] for n in mirage.UTILITY_TARGETS[site]]
        for i in range(len(sides)):
            nades = list(loads[i].nades)
            if not nades:
                continue
            if sides[i] == "T":
                leg = movers[i].legs[1]
                at = leg.start + ticks.between(0.3, 2.0)
            else:
                at = contact - ticks.between(0.5, 3.0)
            for item in nades:
                if item == "Decoy Grenade":
                    tick, target = live + ticks.between(4, 15), rng.choice(entries + targets)
                else:
                    if rng.random() > 0.8:
                        continue
                    tick = at
                    at += ticks.between(0.8, 1.6)
                    target = rng.choice(targets if sides[i] == "T" else entries)
                if live < tick < min(dead.get(i, end), end) - ticks(0.5):
                    throws.append(Throw(tick, i, item, target))
        throws.sort(key=lambda t: (t.tick, t.player))
        return throws


_WINS_T = ("explode", "t_elim_pre", "t_elim_post")


def plan_match(seed: int, rounds: int, tickrate: float) -> tuple[list[Person], list[RoundPlan]]:
    planner = MatchPlanner(seed, rounds, tickrate)
    return planner.people, planner.plan()
