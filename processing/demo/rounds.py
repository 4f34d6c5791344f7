"""Game-wide state per frame: freeze time, halftime, side switches, round starts, teams, wins.

demoparser2 reports game-rules and team props on every player's row rather than once per
tick, so each frame takes the first reported value among its rows and carries it forward.
Round starts are needed apart from the frames too: the bomb's carrier resets with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from processing.demo.players import PlayerRows

_PHASE_HALFTIME = 4  # CCSGameRules.m_gamePhase: 2 first half, 3 second half, 4 halftime, 5 over


@dataclass
class Rounds:
    """One value per frame for each frame-level field."""

    freeze: list[bool]
    round_start: list[bool]
    t_name: list[str]
    ct_name: list[str]
    t_wins: list[int]
    ct_wins: list[int]
    halftime: list[bool]
    switch: list[bool]

    @classmethod
    def from_rows(cls, players: PlayerRows) -> Rounds:
        c = players.cols
        freeze = _per_frame_first(players, c["freeze"]).astype(object)
        # A round starts when the game rules' round start time changes; events replayed at the
        # demo's first tick (signon) describe the round already in progress.
        rst = _per_frame_first(players, c["round_start_time"].astype(float)).to_numpy()
        prev = np.concatenate(([np.nan], rst[:-1]))
        t_name, t_wins, t_seen = _team(players, 2)
        ct_name, ct_wins, ct_seen = _team(players, 3)
        # A side nobody demoparser2 reports plays on (all bots: demoparser2 drops them) has won
        # the rounds played that the other side has not (a drawn round, which CS2 hardly
        # has, would count for it).
        played = _per_frame_first(players, c["rounds"]).fillna(0).to_numpy(np.int64)
        t_wins = np.where(ct_seen & ~t_seen, played - ct_wins, t_wins)
        ct_wins = np.where(t_seen & ~ct_seen, played - t_wins, ct_wins)
        phase = _per_frame_first(players, c["game_phase"].astype(float)).to_numpy()
        return cls(
            freeze=freeze.where(freeze.notna(), False).astype(bool).tolist(),
            round_start=((rst != prev) & ~np.isnan(prev) & ~np.isnan(rst)).tolist(),
            t_name=t_name,
            ct_name=ct_name,
            t_wins=t_wins.tolist(),
            ct_wins=ct_wins.tolist(),
            halftime=(phase == _PHASE_HALFTIME).tolist(),
            switch=_switches(players).tolist(),
        )


def _switches(players: PlayerRows) -> np.ndarray:
    """Frames on which the teams switched sides: every player seen on the frame before and on
    this one who was T or CT went to the other side (at least one player)."""
    n = len(players.ticks)
    team = players.cols["team_num"]
    order = np.lexsort((players.row_frame, players.sid))
    same = players.sid[order][1:] == players.sid[order][:-1]
    before, after = team[order][:-1], team[order][1:]
    frame = players.row_frame[order][1:]
    adjacent = same & (players.row_frame[order][:-1] == frame - 1)
    sided = adjacent & np.isin(before, (2, 3)) & np.isin(after, (2, 3))
    swapped = np.bincount(frame[sided & (before != after)], minlength=n)
    stayed = np.bincount(frame[sided & (before == after)], minlength=n)
    return (swapped > 0) & (stayed == 0)


def _per_frame_first(players: PlayerRows, values: np.ndarray) -> pd.Series:
    """The first non-missing value of a game-wide prop on each frame, carried forward."""
    s = pd.Series(values).groupby(players.row_frame).first()
    return s.reindex(range(len(players.ticks))).ffill()


def _team(players: PlayerRows, team_num: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A side's clan name and round wins on each frame, carried forward ("" and 0 before),
    and whether any player on it was reported on the frame."""
    c, n = players.cols, len(players.ticks)
    on_team = c["team_num"] == team_num
    frames = players.row_frame[on_team]
    names = pd.Series(c["team_clan"][on_team]).groupby(frames).first()
    wins = pd.Series(c["team_wins"][on_team]).groupby(frames).first()
    seen = np.zeros(n, dtype=bool)
    seen[frames] = True
    names = names.reindex(range(n)).ffill().fillna("")
    wins = wins.reindex(range(n)).ffill().fillna(0).astype(np.int64)
    return names.tolist(), wins.to_numpy(), seen


def first_name(names: list[str]) -> str:
    """The first non-empty team name of a match, "" when it never had one."""
    return next((name for name in names if name), "")
