"""processing.recording.EventIndex on synthetic frames (no demos needed): every event type the
radar's timeline, kill feed, score and round clock read, with the ticks they happen on."""

from __future__ import annotations

from typing import Any

from processing.recording import EventIndex

ONCE = ("round_start", "switch", "kills")  # true of one frame only


class Match:
    """Frames one tick apart, each a copy of the running state with the changes asked for."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {
            "round_start": False, "is_freeze": False, "switch": False, "t_wins": 0, "ct_wins": 0,
            "kills": None, "bomb": {"planted": False, "defused": False, "exploded": False,
                                    "planted_by": None, "defused_by": None, "carrier": "Alpha"},
        }  # fmt: skip

    def at(self, tick: int, **changes: Any) -> None:
        """Frames up to ``tick`` hold the state; the frame at ``tick`` has ``changes``."""
        next_tick = self.frames[-1]["tick"] + 1 if self.frames else tick
        for t in range(next_tick, tick):
            self.frames.append({**self.state, "tick": t})
        once = {k: changes.pop(k) for k in ONCE if k in changes}  # this frame's own
        bomb = {**self.state["bomb"], **changes.pop("bomb", {})}
        self.state = {**self.state, **changes, "bomb": bomb}
        self.frames.append({**self.state, **once, "tick": tick})


def kill(killer: str | None, victim: str, weapon: str = "AK-47", hs: bool = False) -> dict:
    return {"killer": killer, "victim": victim, "weapon": weapon, "is_hs": hs, "penetrations": 0}


def index_of(frames: list[dict]) -> list[dict]:
    events = EventIndex()
    for frame in frames:
        events.add(frame)
    return events.entries


UNPLANTED = {"planted": False, "defused": False, "exploded": False, "planted_by": None,
             "defused_by": None, "carrier": "Alpha"}  # fmt: skip


def test_a_half_and_a_side_switch():
    m = Match()
    # Round 1: freeze time, a kill, a plant, the defuse wins it for CT.
    m.at(100, round_start=True, is_freeze=True)
    m.at(164, is_freeze=False)
    m.at(300, kills=[kill("Alpha", "Delta", hs=True)])
    m.at(500, bomb={"planted": True, "planted_by": "Alpha", "carrier": None})
    m.at(700, bomb={"defused": True, "defused_by": "Charlie"}, ct_wins=1)
    # Round 2: a plant, the explosion kills two (no killer) and wins it for T.
    m.at(1000, round_start=True, is_freeze=True, bomb=UNPLANTED)
    m.at(1064, is_freeze=False)
    m.at(1300, bomb={"planted": True, "planted_by": "Bravo", "carrier": None})
    m.at(1500, bomb={"exploded": True}, t_wins=1,
         kills=[kill(None, "Charlie", weapon="C4"), kill(None, "Delta", weapon="C4")])  # fmt: skip
    # Round 3: CT wins by elimination; then halftime: sides switch, the totals swap with them.
    m.at(2000, round_start=True, is_freeze=True, bomb=UNPLANTED)
    m.at(2064, is_freeze=False)
    m.at(2200, kills=[kill("Charlie", "Alpha"), kill("Delta", "Bravo", "AWP", True)], ct_wins=2)
    m.at(3000, round_start=True, is_freeze=True, switch=True, t_wins=2, ct_wins=1)
    m.at(3064, is_freeze=False)
    m.at(3300, t_wins=3)  # the first round of the second half: per-side totals go on from there
    m.at(3400)

    assert index_of(m.frames) == [
        {"tick": 100, "type": "round_start"},
        {"tick": 164, "type": "freeze_end"},
        {"tick": 300, "type": "kill", "killer": "Alpha", "victim": "Delta", "weapon": "AK-47",
         "is_hs": True},
        {"tick": 500, "type": "plant", "player": "Alpha"},
        {"tick": 700, "type": "defuse", "player": "Charlie"},
        {"tick": 700, "type": "round_end", "winner": "CT", "t_wins": 0, "ct_wins": 1},
        {"tick": 1000, "type": "round_start"},
        {"tick": 1064, "type": "freeze_end"},
        {"tick": 1300, "type": "plant", "player": "Bravo"},
        {"tick": 1500, "type": "kill", "killer": None, "victim": "Charlie", "weapon": "C4",
         "is_hs": False},
        {"tick": 1500, "type": "kill", "killer": None, "victim": "Delta", "weapon": "C4",
         "is_hs": False},
        {"tick": 1500, "type": "explode", "player": None},
        {"tick": 1500, "type": "round_end", "winner": "T", "t_wins": 1, "ct_wins": 1},
        {"tick": 2000, "type": "round_start"},
        {"tick": 2064, "type": "freeze_end"},
        {"tick": 2200, "type": "kill", "killer": "Charlie", "victim": "Alpha", "weapon": "AK-47",
         "is_hs": False},
        {"tick": 2200, "type": "kill", "killer": "Delta", "victim": "Bravo", "weapon": "AWP",
         "is_hs": True},
        {"tick": 2200, "type": "round_end", "winner": "CT", "t_wins": 1, "ct_wins": 2},
        # The switch (1:2 becomes 2:1 by side) is no round won.
        {"tick": 3000, "type": "round_start"},
        {"tick": 3064, "type": "freeze_end"},
        {"tick": 3300, "type": "round_end", "winner": "T", "t_wins": 3, "ct_wins": 1},
    ]  # fmt: skip


def test_a_round_won_on_the_switch_frame_is_one_round_end():
    """A pure switch turns 1:2 into 2:1 (the totals follow the teams). 1:1 -> 1:2 on the
    switch frame is the team that was T, now CT, winning one more round: its side when it won
    was T, and the entry's totals are by the sides before the switch."""
    m = Match()
    m.at(10, round_start=True, t_wins=1, ct_wins=1)
    m.at(20, switch=True, t_wins=1, ct_wins=2)
    m.at(30, ct_wins=3)
    entries = index_of(m.frames)
    assert [(e["tick"], e["type"]) for e in entries] == [
        (10, "round_start"), (20, "round_end"), (30, "round_end")
    ]  # fmt: skip
    assert (entries[1]["winner"], entries[1]["t_wins"], entries[1]["ct_wins"]) == ("T", 2, 1)
    assert (entries[2]["winner"], entries[2]["t_wins"], entries[2]["ct_wins"]) == ("CT", 1, 3)


def test_the_first_frame_and_held_states_add_nothing_twice():
    """A recording that starts mid-round (not frozen, bomb already planted) has no freeze end
    or plant at its first frame; a state held over many frames is one event."""
    m = Match()
    m.at(5, bomb={"planted": True, "planted_by": "Alpha", "carrier": None}, t_wins=4)
    m.at(50, is_freeze=True)
    m.at(60, is_freeze=False)
    m.at(90, bomb={"exploded": True})
    m.at(200)
    assert index_of(m.frames) == [
        {"tick": 60, "type": "freeze_end"},
        {"tick": 90, "type": "explode", "player": None},
    ]
