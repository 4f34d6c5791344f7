"""The framer: fixed rate behind a delay, interpolation between posts, events held, stalls."""

from __future__ import annotations

import math

import pytest
from conftest import require_shared

from processing.gsi.capture import read_capture
from processing.gsi.config import HEARTBEAT_S
from processing.gsi.framer import DELAY_S, GAP_S, Framer, lerp_yaw

SID_A, SID_B = "76561190000000001", "76561190000000002"


def player(x: float, yaw: float = 0.0, hp: int = 100, deaths: int = 0, kills: int = 0, team="T"):
    rad = math.radians(yaw)
    return {
        "name": "",
        "team": team,
        "state": {"health": hp, "armor": 0, "helmet": False, "money": 800},
        "match_stats": {"kills": kills, "deaths": deaths, "assists": 0},
        "weapons": {"weapon_0": {"name": "weapon_knife", "state": "active"}},
        "position": f"{x:.2f}, 0.00, 0.00",
        "forward": f"{math.cos(rad):.6f}, {math.sin(rad):.6f}, 0.000000",
    }


def post(ts: int, a: dict, b: dict | None = None, phase: str = "live", **extra) -> dict:
    players = {SID_A: {**a, "name": "alice"}}
    if b is not None:
        players[SID_B] = {**b, "name": "bob"}
    return {
        "provider": {"timestamp": ts},
        "map": {"name": "de_mirage", "phase": "live", "round": 3},
        "round": {"phase": phase},
        "allplayers": players,
        **extra,
    }


def feed(framer: Framer, posts: list[tuple[float, dict]]) -> None:
    for at, payload in posts:
        framer.add(payload, at)


def test_rate_delay_and_consecutive_ticks():
    framer = Framer()
    feed(framer, [(10.0 + i * 0.2, post(1, player(i * 10.0))) for i in range(11)])  # to 12.0
    assert framer.frames(10.0 + DELAY_S - 0.001) == []  # nothing before the delay has passed
    frames = framer.frames(11.0 + DELAY_S)  # frame times 10.0 .. 11.0
    assert len(frames) == 65
    assert [f["tick"] for f in frames] == list(range(65))
    assert frames[-1]["round_time"] == pytest.approx(1.0)
    more = framer.frames(20.0)  # limited by the latest post at 12.0
    assert more[0]["tick"] == 65 and len(more) == 64
    assert framer.frames(20.0) == []


def test_positions_and_yaw_interpolated_between_posts():
    framer = Framer()
    feed(
        framer,
        [(0.0, post(1, player(0.0, yaw=170.0))), (0.5, post(1, player(64.0, yaw=-170.0)))],
    )
    frames = framer.frames(0.5 + DELAY_S)
    assert len(frames) == 33  # t = 0 .. 0.5
    for i, frame in enumerate(frames):
        (p,) = frame["players"]
        f = (i / 64) / 0.5
        assert p["x"] == pytest.approx(64.0 * f, abs=1e-6)
        # yaw goes the short way, through 180, never through 0
        expected = (170.0 + 20.0 * f + 180.0) % 360.0 - 180.0
        assert p["view_x"] == pytest.approx(expected, abs=1e-3)
        assert abs(p["view_x"]) >= 169.99
    assert lerp_yaw(-179.0, 179.0, 0.5) == pytest.approx(180.0) or lerp_yaw(
        -179.0, 179.0, 0.5
    ) == pytest.approx(-180.0)


def test_discrete_state_and_events_are_not_interpolated():
    framer = Framer()
    a0, b0 = player(0.0, team="T"), player(100.0, team="CT")
    a1 = player(10.0, team="T", kills=1)
    b1 = player(110.0, hp=0, deaths=1, team="CT")
    feed(
        framer,
        [
            (0.0, post(1, a0, b0)),
            (0.3, post(1, {**a0, "state": {**a0["state"], "health": 40}}, b0)),
            (0.6, post(2, a1, b1)),
            (0.9, post(2, a1, b1)),
        ],
    )
    frames = framer.frames(0.9 + DELAY_S)
    times = [f["round_time"] for f in frames]
    hp = [next(p["hp"] for p in f["players"] if p["sid"] == int(SID_A)) for f in frames]
    assert all(h == 100 for h, t in zip(hp, times, strict=True) if t < 0.3)
    assert all(h == 40 for h, t in zip(hp, times, strict=True) if 0.3 <= t < 0.6)
    kills = [(f["round_time"], f["kills"]) for f in frames if f["kills"]]
    assert len(kills) == 1  # the event lands once, on the first frame at or after the post
    t_kill, (kill,) = kills[0]
    assert 0.6 <= t_kill < 0.6 + 1 / 64
    assert kill == {
        "killer": "alice",
        "victim": "bob",
        "weapon": "",
        "is_hs": False,
        "penetrations": 0,
    }
    # bob is alive (held) until the post that shows him dead, then gone
    assert all(len(f["players"]) == 2 for f in frames if f["round_time"] < 0.6)
    assert all(len(f["players"]) == 1 for f in frames if f["round_time"] >= 0.6)


def test_killer_left_out_when_not_certain():
    sid_c = "76561190000000003"

    def three(a_kills: int, c_kills: int, bob_dead: bool) -> dict:
        payload = post(1, player(0.0, kills=a_kills), player(1.0, team="CT"))
        if bob_dead:
            payload["allplayers"][SID_B] = {**player(1.0, hp=0, deaths=1, team="CT"), "name": "bob"}
        payload["allplayers"][sid_c] = {**player(2.0, kills=c_kills), "name": "carol"}
        return payload

    framer = Framer(delay=0.0)
    # Two T kills counters rose for one CT death: which one killed bob is not certain.
    feed(framer, [(0.0, three(0, 0, False)), (0.2, three(1, 1, True)), (0.4, three(1, 1, True))])
    (kill,) = [k for f in framer.frames(1.0) for k in f["kills"] or ()]
    assert kill["victim"] == "bob" and kill["killer"] == ""
    # One T kills counter rose: alice.
    framer = Framer(delay=0.0)
    feed(framer, [(0.0, three(0, 0, False)), (0.2, three(1, 0, True)), (0.4, three(1, 0, True))])
    (kill,) = [k for f in framer.frames(1.0) for k in f["kills"] or ()]
    assert kill["victim"] == "bob" and kill["killer"] == "alice"


def test_stall_emits_nothing_and_resume_reanchors_without_interpolating():
    framer = Framer()
    feed(framer, [(0.0, post(1, player(0.0))), (0.2, post(1, player(10.0)))])
    before = framer.frames(5.0)
    assert before and before[-1]["round_time"] == pytest.approx(0.1875)  # last grid time <= 0.2
    assert framer.frames(8.0) == []  # posts stopped: nothing new, however late it gets
    assert framer.stale(8.0, heartbeat_s=2.0) and not framer.stale(1.0, heartbeat_s=2.0)
    assert GAP_S < 8.0 - 0.2
    feed(framer, [(8.0, post(9, player(500.0))), (8.2, post(9, player(510.0)))])
    after = framer.frames(8.2 + DELAY_S)
    assert after[0]["tick"] == before[-1]["tick"] + 1  # ticks continue
    assert after[0]["round_time"] == pytest.approx(8.0)  # re-anchored at the new post
    xs = [f["players"][0]["x"] for f in before + after]
    assert all(x <= 10.0 or x >= 500.0 for x in xs)  # nothing drawn across the gap
    assert not framer.stale(8.3, heartbeat_s=2.0)


def test_several_nade_events_of_one_post_go_on_one_frame():
    framer = Framer(delay=0.0)
    smokes = {
        str(i): {"type": "smoke", "position": f"{i}.0, 0, 0", "effecttime": "0.0"} for i in (1, 2)
    }
    popped = {k: {**v, "effecttime": "0.2"} for k, v in smokes.items()}
    feed(
        framer,
        [
            (0.0, post(1, player(0.0), grenades=smokes)),
            (0.5, post(1, player(0.0), grenades=popped)),
            (1.0, post(2, player(0.0), grenades=popped)),
        ],
    )
    frames = framer.frames(1.0)
    (popped_frame,) = [f for f in frames if f["nade_events"]]
    assert [e["x"] for e in popped_frame["nade_events"]] == [1.0, 2.0]
    assert popped_frame["nade_event"] == popped_frame["nade_events"][0]  # the old client's field
    in_flight = [f["nades"] for f in frames if f["round_time"] < 0.5]
    assert all(len(n) == 2 for n in in_flight)
    assert all(f["nades"] is None for f in frames if f["round_time"] >= 0.5)


def test_ended_and_description():
    framer = Framer()
    framer.add(post(1, player(0.0), player(1.0, team="CT")), 0.0)
    assert not framer.ended
    over = post(2, player(0.0))
    over["map"] = {"name": "de_mirage", "phase": "gameover", "team_t": {"name": "Alpha"}}
    framer.add(over, 1.0)
    assert framer.ended
    d = framer.description
    assert d.map_name == "de_mirage" and d.team_names == {"t": "Alpha", "ct": ""}
    framer.add({**over, "provider": {"name": "Counter-Strike 2", "version": 14030}}, 2.0)
    assert d.provider == "Counter-Strike 2 14030"


def test_a_paused_game_posting_only_heartbeats_has_no_holes():
    """Nothing changes: the game posts only its heartbeat, every 2 s. That is a quiet game,
    not a broken feed: the state is held, a frame every 1/64 s, nothing skipped."""
    framer = Framer()
    quiet = post(1, player(5.0))
    feed(framer, [(2.0 * i, quiet) for i in range(6)])  # 0 .. 10 s
    assert GAP_S > HEARTBEAT_S
    frames = framer.frames(10.0 + DELAY_S)
    assert len(frames) == 10 * 64 + 1
    assert [f["tick"] for f in frames] == list(range(len(frames)))
    times = [f["round_time"] for f in frames]
    assert times == pytest.approx([i / 64 for i in range(len(frames))])
    assert {f["players"][0]["x"] for f in frames} == {5.0}


def test_real_capture_frames_follow_the_posts():
    path = require_shared("gsi") / "full_game_gsi.zip"
    payloads = list(read_capture(path, limit=400))
    framer = Framer()
    frames = []
    posts = []
    for i, payload in enumerate(payloads):
        at = i * 0.2173  # the capture's mean pace (8,225 posts in 1,768 s)
        framer.add(payload, at)
        posts.append((at, payload))
        frames += framer.frames(at)
    assert [f["tick"] for f in frames] == list(range(len(frames)))
    expected = int(posts[-1][0] - DELAY_S) * 64
    assert expected - 64 <= len(frames) <= expected + 64
    # Each frame's positions lie on the line between the capture's bracketing positions.
    compared = held_for_round = 0
    j = 0
    for frame in frames:
        t = frame["round_time"]
        while posts[j + 1][0] <= t + 1e-9:
            j += 1
        (ta, pa), (tb, pb) = posts[j], posts[j + 1]
        # The post where a round starts (freeze time begins) teleports players: held before it.
        teleport = (
            pb.get("round", {}).get("phase") == "freezetime" != pa.get("round", {}).get("phase")
        )
        held_for_round += teleport
        for p in frame["players"]:
            raw_a = pa["allplayers"][str(p["sid"])]
            raw_b = pb["allplayers"].get(str(p["sid"]))
            xa = float(raw_a["position"].split(",")[0])
            if raw_b is None or raw_b["state"]["health"] == 0 or teleport:
                assert p["x"] == pytest.approx(xa, abs=1e-9)  # nothing to move towards: held
                continue
            xb = float(raw_b["position"].split(",")[0])
            assert p["x"] == pytest.approx(xa + (xb - xa) * (t - ta) / (tb - ta), abs=1e-3)
            compared += 1
    assert compared > 10000 and held_for_round > 0


def test_a_post_from_the_menu_makes_no_frame():
    framer = Framer(delay=0.0)
    feed(framer, [(0.0, post(1, player(0.0))), (0.5, post(1, player(10.0)))])
    menu = {"provider": {"appid": 730, "timestamp": 3}, "player": {"activity": "menu"}}
    framer.add(menu, 1.0)
    frames = framer.frames(2.0)
    assert frames and frames[-1]["players"]  # still the last post with a match in it
    assert framer.stale(2.0, heartbeat_s=0.9)  # the menu post is no sign of a live match
