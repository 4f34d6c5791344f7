"""GSI captures and payloads -> game state and frame content, on the real capture."""

from __future__ import annotations

import ast
import copy
import io
import itertools
import json
import math
import zipfile

import pytest
from conftest import require_shared

from processing.frames import PLAYER_FIELDS
from processing.gsi.capture import CaptureError, count_payloads, parse_line, read_capture
from processing.gsi.payload import GsiPayloadError, auth_token, decode_payload
from processing.gsi.state import read_state, yaw_pitch
from processing.gsi.tracker import StateTracker
from processing.vocabulary import CLIENT_NAMES, client_name

SLICE = 600  # payloads: warmup, the first round's start, kills, grenades


@pytest.fixture(scope="module")
def capture_zip():
    return require_shared("gsi") / "full_game_gsi.zip"


@pytest.fixture(scope="module")
def raw_lines(capture_zip) -> list[str]:
    with zipfile.ZipFile(capture_zip) as z, z.open("full_game.txt") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8")
        return list(itertools.islice(text, SLICE * 2 + 10))


@pytest.fixture(scope="module")
def payloads(capture_zip) -> list[dict]:
    return list(read_capture(capture_zip, limit=SLICE))


@pytest.fixture(scope="session")
def whole_match():
    """Every payload's scores/round/phase and its tracked sample (the one full pass)."""
    path = require_shared("gsi") / "full_game_gsi.zip"
    tracker = StateTracker()
    rows = []
    for payload in read_capture(path):
        game_map = payload.get("map", {})
        teams = {sid: p.get("team") for sid, p in payload.get("allplayers", {}).items()}
        fires = {
            int(gid): teams.get(g.get("owner"))
            for gid, g in payload.get("grenades", {}).items()
            if g.get("type") == "firebomb"
        }
        raw = (
            game_map.get("round"),
            game_map.get("phase"),
            game_map.get("team_t", {}).get("score"),
            game_map.get("team_ct", {}).get("score"),
            fires,  # firebomb id -> its thrower's team
        )
        rows.append((raw, tracker.step(read_state(payload))))
    return rows


def test_fast_line_reader_equals_literal_eval(raw_lines):
    lines = [line for line in raw_lines if line.startswith("{")][:150]
    assert len(lines) == 150
    for line in lines:
        assert parse_line(line) == ast.literal_eval(line)
    # Escapes, double quotes and the words True/None inside strings take the careful path.
    tricky = repr({"name": 'it\'s "True" None', "x": "a\\b\u00e9", "ok": True, "n": None})
    assert parse_line(tricky) == ast.literal_eval(tricky)


def test_capture_skips_log_lines_and_reads_txt(tmp_path, raw_lines):
    path = tmp_path / "slice.txt"
    path.write_text("".join(raw_lines[:12]), encoding="utf-8")
    expected = [ast.literal_eval(line) for line in raw_lines[:12] if line.startswith("{")]
    assert expected and not raw_lines[0].startswith("{")
    assert list(read_capture(path)) == expected
    assert count_payloads(path) == len(expected)
    assert list(read_capture(path, limit=2)) == expected[:2]


def test_capture_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("log line\n{'provider': {}}\n{'broken': \n", encoding="utf-8")
    with pytest.raises(CaptureError, match=r"bad.txt:3"):
        list(read_capture(bad))
    with pytest.raises(CaptureError, match="no such file"):
        list(read_capture(tmp_path / "missing.zip"))


def test_players_positions_and_names_equal_the_capture(payloads):
    checked = 0
    for payload in payloads:
        everyone = payload.get("allplayers", {})
        if len(everyone) != 10:
            continue
        frame = StateTracker().step(read_state(payload)).frame
        by_sid = {p["sid"]: p for p in frame["players"]}
        alive = {sid for sid, p in everyone.items() if p["state"]["health"] > 0}
        assert {str(sid) for sid in by_sid} == alive
        for sid in alive:
            raw, player = everyone[sid], by_sid[int(sid)]
            assert player["name"] == raw["name"] and player["team"] == raw["team"]
            assert [f"{v:.2f}" for v in (player["x"], player["y"], player["z"])] == [
                s.strip() for s in raw["position"].split(",")
            ]
            fx, fy, fz = (float(s) for s in raw["forward"].split(","))
            yaw, pitch = math.radians(player["view_x"]), math.radians(player["view_y"])
            norm = math.hypot(fx, fy, fz)
            assert math.cos(pitch) * math.cos(yaw) == pytest.approx(fx / norm, abs=1e-9)
            assert math.cos(pitch) * math.sin(yaw) == pytest.approx(fy / norm, abs=1e-9)
            assert -math.sin(pitch) == pytest.approx(fz / norm, abs=1e-9)
            assert player["hp"] == raw["state"]["health"]
            assert player["money"] == raw["state"]["money"]
            assert player["kills"] == raw["match_stats"]["kills"]
            assert player["armor"] == raw["state"]["armor"]
            assert player["helmet"] == raw["state"]["helmet"]
            weapons = sorted(raw["weapons"].items(), key=lambda kv: int(kv[0].split("_")[1]))
            assert player["items"] == [client_name(w["name"]) for _, w in weapons]
            active = [w for w in raw["weapons"].values() if w["state"] in ("active", "reloading")]
            assert player["actv_itm"] == (client_name(active[0]["name"]) if active else "")
            assert set(player) == set(PLAYER_FIELDS)
            checked += 1
    assert checked > 500


def test_yaw_pitch_convention():
    assert yaw_pitch((1.0, 0.0, 0.0)) == (0.0, 0.0)
    assert yaw_pitch((0.0, 1.0, 0.0))[0] == pytest.approx(90.0)
    assert yaw_pitch((-1.0, -0.0001, 0.0))[0] == pytest.approx(-180.0, abs=0.01)
    assert yaw_pitch((0.0, 0.0, -1.0))[1] == pytest.approx(90.0)  # looking down: positive


def test_only_client_vocabulary(payloads):
    tracker = StateTracker()
    names, nade_types = set(), set()
    for payload in payloads:
        frame = tracker.step(read_state(payload)).frame
        for p in frame["players"]:
            names.update(p["items"])
            names.update([p["actv_itm"]] if p["actv_itm"] else [])
        nade_types.update(n["type"] for n in frame["nades"] or ())
    assert names and names <= CLIENT_NAMES
    assert {"Knife", "USP-S", "Glock-18"} <= names
    assert nade_types and nade_types <= CLIENT_NAMES


def test_unknown_fields_are_ignored(payloads):
    payload = next(p for p in payloads if len(p.get("allplayers", {})) == 10)
    noisy = copy.deepcopy(payload)
    noisy["future_component"] = {"x": [1, 2]}
    noisy["provider"]["new_field"] = "?"
    for player in noisy["allplayers"].values():
        player["state"]["new_stat"] = 3
        player["extra"] = None
    assert StateTracker().step(read_state(noisy)).frame == (
        StateTracker().step(read_state(payload)).frame
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"map": {}}', "no 'provider'"),
        (b'{"provider": {}, "allplayers": []}', "'allplayers' is a list"),
    ],
)
def test_bad_bodies_refused_with_reasons(body, reason):
    with pytest.raises(GsiPayloadError, match=reason) as info:
        decode_payload(body)
    assert reason in info.value.reason


def test_bad_fields_refused_before_any_state_changes(payloads):
    payload = next(p for p in payloads if len(p.get("allplayers", {})) == 10)
    sid = next(iter(payload["allplayers"]))
    for change, reason in [
        (lambda p: p["allplayers"][sid].update(position="1, 2"), f"allplayers.{sid}.position"),
        (lambda p: p["allplayers"][sid]["state"].update(health="x"), "state.health"),
        (lambda p: p["map"].update(round=True), "map.round"),
        (lambda p: p["allplayers"].update({"abc": {}}), "allplayers.abc"),
        (lambda p: p.update(bomb={"state": "carried", "position": "nan, 0, 0"}), "bomb.position"),
    ]:
        bad = copy.deepcopy(payload)
        change(bad)
        with pytest.raises(GsiPayloadError, match=reason.replace(".", r"\.")):
            read_state(json.loads(json.dumps(bad)))


def test_auth_token():
    assert auth_token({"provider": {}, "auth": {"token": "s3"}}) == "s3"
    assert auth_token({"provider": {}}) is None
    assert auth_token({"provider": {}, "auth": {"token": 5}}) is None


def test_round_starts_and_scores_follow_the_whole_capture(whole_match):
    starts = [raw for raw, sample in whole_match if sample.round_start]
    final_round = max(raw[0] for raw, _ in whole_match if raw[0] is not None)
    assert final_round == 19
    # One start per round played, at rounds 0, 1, ..., 18 played so far.
    assert [raw[0] for raw in starts] == list(range(final_round))
    for raw, sample in whole_match:
        if raw[2] is not None:
            assert (sample.frame["t_wins"], sample.frame["ct_wins"]) == (raw[2], raw[3])
        if sample.round_start:
            assert raw[2] + raw[3] == raw[0]  # a new round: the scores add up to rounds played
            assert sample.frame["is_freeze"]
    assert [s.ended for _, s in whole_match].index(True) == next(
        i for i, (raw, _) in enumerate(whole_match) if raw[1] == "gameover"
    )


def test_a_firebomb_is_a_molotov_or_an_incendiary_by_its_throwers_team(whole_match):
    """GSI names both ``firebomb``; T can buy only the molotov, CT only the incendiary (the
    rule the demos' one projectile class needs too)."""
    seen = {"T": 0, "CT": 0}
    for raw, sample in whole_match:
        fires = raw[4]
        for nade in sample.frame["nades"] or ():
            if nade["id"] in fires:
                team = fires[nade["id"]]
                assert nade["type"] == {"T": "Molotov", "CT": "Incendiary Grenade"}[team]
                assert nade["team"] == team
                seen[team] += 1
    assert seen["T"] > 0 and seen["CT"] > 0


def test_kills_follow_the_death_counters(whole_match):
    kills = [k for _, s in whole_match for k in s.kills]
    named = [k for k in kills if k["killer"]]
    assert len(kills) > 100 and len(named) > 0.9 * len(kills)
    assert all(k["weapon"] == "" and k["killer"] != k["victim"] for k in kills)
    assert any(k["is_hs"] for k in named) and not all(k["is_hs"] for k in named)


def test_bomb_and_grenade_events_in_the_whole_capture(whole_match):
    bombs = [s.frame["bomb"] for _, s in whole_match if s.frame["bomb"]]
    assert any(b["carrier"] for b in bombs)
    planted = [b for b in bombs if b["planted"]]
    assert planted and any(b["planted_by"] for b in planted)
    assert any(b["defused"] and b["defused_by"] for b in bombs)
    events = {e["type"] for _, s in whole_match for e in s.nade_events}
    assert {"Smoke Grenade", "Flashbang"} <= events <= CLIENT_NAMES
    # Grenades in flight in the demos' names (processing/demo/nades.py), the one vocabulary.
    in_flight = {n["type"] for _, s in whole_match for n in s.frame["nades"] or ()}
    assert in_flight == {
        "Smoke Grenade", "HE Grenade", "Flashbang", "Molotov", "Incendiary Grenade",
        "Decoy Grenade",
    }  # fmt: skip
    assert any(s.frame["infernos"] for _, s in whole_match)
    assert all(f["fires"] for _, s in whole_match for f in s.frame["infernos"] or ())
    assert any(s.shooting for _, s in whole_match)
