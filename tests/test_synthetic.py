"""The generated match: deterministic, schema-exact, and plausible as a CS2 game on de_mirage."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from typing import get_type_hints

import msgpack
import pytest

from processing.frames import FRAME_FIELDS, PLAYER_FIELDS, Frame, Player
from processing.synthetic import generate_match, parameters_string
from processing.synthetic.mirage import MAX_X, MAX_Y, MIN_X, MIN_Y
from processing.synthetic.plan import plan_match
from processing.vocabulary import CLIENT_NAMES

TICKRATE = 64
RUN_STEP = 250.0 / TICKRATE  # fastest horizontal move per tick (knife out)
Z_STEP = 250.0 / TICKRATE + 301.99 / TICKRATE  # walking up a slope plus a jump's takeoff


@pytest.fixture(scope="module")
def six_rounds() -> list[Frame]:
    return list(generate_match(seed=1, rounds=6).frames)


def _rounds(frames: list[Frame]) -> list[list[Frame]]:
    rounds: list[list[Frame]] = []
    for frame in frames:
        if frame["round_start"]:
            rounds.append([])
        rounds[-1].append(frame)
    return rounds


def test_same_seed_gives_identical_bytes_and_another_seed_differs():
    def packed(seed: int, frames: int) -> bytes:
        match = generate_match(seed=seed, rounds=2)
        return b"".join(msgpack.packb(f) for f in itertools.islice(match.frames, frames))

    first = packed(3, 20_000)
    assert first == packed(3, 20_000)
    assert first[:100_000] != packed(4, 500)[:100_000]


def test_source_info_describes_the_generation():
    match = generate_match(seed=5, rounds=2)
    info = match.info
    assert info.map_name == "de_mirage"
    assert info.tickrate == 64.0
    assert info.synthetic is True
    assert info.source_file == "synthetic-seed5-rounds2"
    assert info.parser == "eeict synthetic v1 seed=5 rounds=2"
    expected = hashlib.sha256(parameters_string(5, 2, 64).encode()).hexdigest()
    assert info.source_sha256 == expected
    assert set(info.team_names) == {"t", "ct"}
    assert info.team_names["t"] != info.team_names["ct"]


@functools.cache
def _hints(typed_dict: type) -> dict:
    return get_type_hints(typed_dict)


def _check_type(value, hint, where: str) -> None:
    """Check against the TypedDict annotations (int is not bool, float is float)."""
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ())
    if type(None) in args:
        if value is None:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = getattr(hint, "__origin__", None), getattr(hint, "__args__", ())
    if origin is list:
        assert type(value) is list, where
        for item in value:
            _check_type(item, args[0], where)
    elif isinstance(hint, type) and hasattr(hint, "__annotations__"):  # a TypedDict
        assert type(value) is dict, where
        fields = _hints(hint)
        assert list(value) == list(fields), f"{where}: keys {list(value)}"
        for key, sub in fields.items():
            _check_type(value[key], sub, f"{where}.{key}")
    else:
        assert type(value) is hint, f"{where}: {value!r} is not {hint}"


def test_every_frame_matches_the_schema_exactly(six_rounds):
    assert tuple(get_type_hints(Frame)) == FRAME_FIELDS
    assert tuple(get_type_hints(Player)) == PLAYER_FIELDS
    for frame in six_rounds[::11] + six_rounds[-50:]:
        _check_type(frame, Frame, f"tick {frame['tick']}")
    # every frame has the frame keys and every player the player keys, in schema order
    for frame in six_rounds:
        assert tuple(frame) == FRAME_FIELDS
        for player in frame["players"]:
            assert tuple(player) == PLAYER_FIELDS


def test_ticks_strictly_increase_and_frame_count_is_exact(six_rounds):
    ticks = [f["tick"] for f in six_rounds]
    assert len(ticks) == generate_match(seed=1, rounds=6).frame_count
    assert all(b > a for a, b in itertools.pairwise(ticks))


def test_players_move_at_most_running_speed_and_stay_on_the_map(six_rounds):
    for frame in six_rounds:
        for p in frame["players"]:
            assert MIN_X <= p["x"] <= MAX_X and MIN_Y <= p["y"] <= MAX_Y, p
            assert -500 < p["z"] < 300
    for rnd in _rounds(six_rounds):
        for before, after in itertools.pairwise(rnd):
            where = {p["sid"]: p for p in before["players"]}
            for p in after["players"]:
                q = where[p["sid"]]
                assert math.hypot(p["x"] - q["x"], p["y"] - q["y"]) <= RUN_STEP + 0.02
                assert abs(p["z"] - q["z"]) <= Z_STEP + 0.02


def test_round_structure_scores_and_halftime_switch(six_rounds):
    rounds = _rounds(six_rounds)
    assert len(rounds) == 6
    first_t, first_ct = rounds[0][0]["t"], rounds[0][0]["ct"]
    score: dict[str, int] = {}
    for index, rnd in enumerate(rounds):
        assert sum(f["round_start"] for f in rnd) == 1
        assert len(rnd[0]["players"]) == 10
        assert rnd[0]["is_freeze"] and not rnd[-1]["is_freeze"]
        assert rnd[0]["t"] == (first_t if index < 3 else first_ct)
        for p in rnd[0]["players"]:
            assert p["hp"] == 100
            assert p["team"] == ("T" if p["clan"] == rnd[0]["t"] else "CT")
        for frame in rnd:
            for clan, wins in ((frame["t"], frame["t_wins"]), (frame["ct"], frame["ct_wins"])):
                assert wins >= score.get(clan, 0)
                score[clan] = wins
        assert sum(score.values()) == index + 1  # one result per round, counted in the round
    last = six_rounds[-1]
    assert last["t_wins"] + last["ct_wins"] == 6


def test_dead_players_leave_and_stay_gone_for_the_round(six_rounds):
    deaths = 0
    for rnd in _rounds(six_rounds):
        gone: set[str] = set()
        for frame in rnd:
            names = {p["name"] for p in frame["players"]}
            assert not names & gone
            for kill in frame["kills"] or ():
                assert kill["victim"] not in names
                assert kill["killer"] != kill["victim"]
                gone.add(kill["victim"])
                deaths += 1
            assert all(p["hp"] > 0 for p in frame["players"])
            assert len(names) == 10 - len(gone)
    assert deaths > 20
    final = {p["name"]: p for p in six_rounds[-1]["players"]}
    assert sum(p["kills"] for p in final.values()) > 0


def test_a_round_is_decided_by_elimination_bomb_defuse_or_time(six_rounds):
    for rnd in _rounds(six_rounds):
        played = rnd[0]["t_wins"] + rnd[0]["ct_wins"]
        at = next(i for i, f in enumerate(rnd) if f["t_wins"] + f["ct_wins"] > played)
        frame, before = rnd[at], rnd[at - 1]
        sides = {p["team"] for p in frame["players"]}
        live_ticks = at - next(i for i, f in enumerate(rnd) if not f["is_freeze"])
        assert (
            (frame["bomb"]["exploded"] and not before["bomb"]["exploded"])
            or (frame["bomb"]["defused"] and not before["bomb"]["defused"])
            or (frame["kills"] and len(sides) < 2)
            or live_ticks == 115 * TICKRATE
        )


def test_bomb_is_planted_and_stays_planted_until_the_round_ends(six_rounds):
    plants = 0
    for rnd in _rounds(six_rounds):
        planted_at = next((i for i, f in enumerate(rnd) if f["bomb"]["planted"]), None)
        if planted_at is None:
            continue
        plants += 1
        assert all(f["bomb"]["planted"] for f in rnd[planted_at:])
        bomb = rnd[planted_at]["bomb"]
        assert bomb["carrier"] is None and bomb["planted_by"]
        assert bomb["x"] < 0 and bomb["y"] < 500  # on a site, west of mid
        before = rnd[planted_at - 1]
        planter = next(p for p in before["players"] if p["name"] == bomb["planted_by"])
        assert planter["is_planting"] and planter["actv_itm"] == "C4"
        outcome = rnd[-1]["bomb"]
        assert outcome["exploded"] or outcome["defused"] or outcome["planted"]
    assert plants >= 1


def test_grenades_fly_then_detonate(six_rounds):
    flights: dict[int, list] = {}
    detonations = 0
    for frame in six_rounds:
        for nade in frame["nades"] or ():
            flights.setdefault(nade["id"], []).append(frame["tick"])
        if frame["nade_event"]:
            detonations += 1
            assert frame["nade_event"]["type"] in (
                "Smoke Grenade",
                "HE Grenade",
                "Flashbang",
                "Decoy Grenade",
            )
            assert frame["nade_events"] == [frame["nade_event"]]
    assert flights and detonations
    for ticks in flights.values():
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # contiguous flight
        assert 0.5 <= len(ticks) / TICKRATE <= 2.5
    assert any(frame["infernos"] for frame in six_rounds)


def test_shooters_are_alive_players_holding_a_gun(six_rounds):
    shots = 0
    for frame in six_rounds:
        by_sid = {p["sid"]: p for p in frame["players"]}
        for sid in frame["shooting"] or ():
            assert sid in by_sid
            item = by_sid[sid]["actv_itm"]
            assert item in CLIENT_NAMES
            assert item not in ("Knife", "C4", "Flashbang", "Molotov") and "Grenade" not in item
            shots += 1
    assert shots > 100


def test_every_name_is_the_clients(six_rounds):
    for frame in six_rounds:
        for p in frame["players"]:
            assert p["actv_itm"] in CLIENT_NAMES, p["actv_itm"]
            assert set(p["items"]) <= CLIENT_NAMES, p["items"]
        for kill in frame["kills"] or ():
            assert kill["weapon"] in CLIENT_NAMES, kill
        for nade in frame["nades"] or ():
            assert nade["type"] in CLIENT_NAMES, nade


def test_sides_switch_once_at_halftime():
    frames = generate_match(seed=3, rounds=4, tickrate=16).frames
    switches = [f for f in frames if f["switch"]]
    assert len(switches) == 1 and switches[0]["round_start"]


def test_full_match_length_is_known_without_generating_it():
    people, plans = plan_match(1, 24, TICKRATE)
    total = sum(p.length for p in plans)
    assert 150_000 <= total <= 210_000
    assert total == generate_match(seed=1, rounds=24).frame_count
    assert len(people) == 10
    assert all(str(p.sid).startswith("7656119") and len(str(p.sid)) == 17 for p in people)


def test_recording_events_index_matches_the_frames(tmp_path):
    from processing.recording import write_recording

    match = generate_match(seed=2, rounds=3, tickrate=16)
    frames = list(match.frames)
    meta = write_recording(tmp_path / "g.eeict", match.info, frames)
    kinds = [e["type"] for e in meta["events"]]
    assert kinds.count("round_start") == sum(f["round_start"] for f in frames) == 3
    assert kinds.count("kill") == sum(len(f["kills"] or ()) for f in frames)
    assert kinds.count("freeze_end") == 3
    ends = [e for e in meta["events"] if e["type"] == "round_end"]
    assert len(ends) == 3 and all(e["winner"] in ("T", "CT") for e in ends)
    assert meta["bomb_time"] == 40.0 and meta["settings_from"]["bomb_time"] == "generator"
