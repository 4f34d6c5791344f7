"""The built-in generated match: a full-size, deterministic 10-player game on de_mirage.

It stands in for a real match where none is at hand (size and speed work, demos, tests): the
same seed, rounds and tickrate always give byte-identical frames. ``plan`` schedules the whole
match up front (so the frame count is known before any frame exists), ``render`` turns each
round into frames lazily, ``mirage`` and ``weapons`` hold the map and equipment facts.

Match rules followed: 15 s freeze time, 1:55 rounds, 40 s bomb timer, 3.2 s plant, 10 s defuse
(5 s with a kit), 7 s between rounds, sides switch after ``rounds // 2`` rounds (money and
weapons reset then), all ``rounds`` rounds are played (no early finish at 13 wins).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator

from processing.frames import Frame
from processing.source import MatchData, SourceInfo
from processing.synthetic.plan import CLANS, Person, RoundPlan, plan_match
from processing.synthetic.render import RoundRenderer

MAP_NAME = "de_mirage"


def parameters_string(seed: int, rounds: int, tickrate: int) -> str:
    """What identifies a generated match; its sha256 is the recording's ``source_sha256``."""
    return f"eeict-synthetic-v1 map={MAP_NAME} seed={seed} rounds={rounds} tickrate={tickrate}"


def generate_match(seed: int = 1, rounds: int = 24, tickrate: int = 64) -> MatchData:
    """The generated match for ``seed``: frames are produced lazily, one round at a time."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if tickrate < 1:
        raise ValueError(f"tickrate must be at least 1, got {tickrate}")
    people, plans = plan_match(seed, rounds, tickrate)
    first_t = next(p.clan for p in people if p.first_side == "T")
    info = SourceInfo(
        map_name=MAP_NAME,
        tickrate=float(tickrate),
        source_file=f"synthetic-seed{seed}-rounds{rounds}",
        source_sha256=hashlib.sha256(
            parameters_string(seed, rounds, tickrate).encode()
        ).hexdigest(),
        parser=f"eeict synthetic v1 seed={seed} rounds={rounds}",
        synthetic=True,
        team_names={"t": first_t, "ct": next(c for c in CLANS if c != first_t)},
        settings={
            name: {"seconds": seconds, "from": "generator"}
            for name, seconds in (("freeze_time", 15.0), ("round_time", 115.0), ("bomb_time", 40.0))
        },
    )
    return MatchData(
        info=info,
        frames=_frames(people, plans, seed, tickrate),
        frame_count=sum(p.length for p in plans),
    )


def _frames(
    people: list[Person], plans: list[RoundPlan], seed: int, tickrate: int
) -> Iterator[Frame]:
    ids = itertools.count(1)
    sides: list[str] | None = None
    for plan in plans:
        frames = iter(RoundRenderer(plan, people, float(tickrate), seed, ids).frames())
        first = next(frames, None)
        if first is not None:
            first["switch"] = sides is not None and plan.sides != sides
            yield first
        sides = plan.sides
        yield from frames


__all__ = ["generate_match", "parameters_string"]
