"""Posts arriving irregularly -> frames at a fixed rate, behind a fixed delay (injected time).

A frame at time t shows the latest post received at or before t, with positions and view
(players, grenades in flight, a moving bomb) interpolated linearly towards the next post
(yaw the short way round). Discrete state is held, never interpolated; a post's events land on
the first frame at or after it. Frames are made only up to ``now - delay`` and never past the
latest post, so there is always a later post to interpolate towards; when posts stop, frames
stop. A gap between posts longer than ``gap`` is not interpolated across: the frame clock
re-anchors at the post after the gap and ticks continue consecutively.

The game posts whenever anything changes (at most every ``throttle``, 0.1 s) and at least
every ``heartbeat`` (2 s) when nothing does, so a silence up to the heartbeat is a quiet game,
not a broken feed: ``GAP_S`` is above it, and a paused game's heartbeats make held frames
without holes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from processing.frames import Frame, Player
from processing.gsi.config import HEARTBEAT_S
from processing.gsi.state import GameState, read_state
from processing.gsi.tracker import Sample, StateTracker

RATE = 64.0  # frames per second of a live match, as demos' tick rate: what the clients play
DELAY_S = 0.75  # behind the newest post: 3-7 post intervals at the game's 4-10 posts/s
# A longer silence is a broken feed (no interpolation across it); up to the heartbeat (plus
# half a second for the post's own way) it is a game where nothing changed.
GAP_S = HEARTBEAT_S + 0.5


@dataclass
class MatchDescription:
    """What a recording's metadata needs from the feed, as the posts say it."""

    map_name: str = ""
    team_names: dict[str, str] = field(default_factory=lambda: {"t": "", "ct": ""})
    provider: str = ""  # e.g. "Counter-Strike: Global Offensive 14030" (the game's own name)


class Framer:
    """Feed with ``add(payload, received_at)``; take frames with ``frames(now)``."""

    def __init__(self, rate: float = RATE, delay: float = DELAY_S, gap: float = GAP_S) -> None:
        if rate <= 0 or delay < 0 or gap <= 0:
            raise ValueError("rate and gap must be > 0 and delay >= 0")
        self.rate, self.delay, self.gap = rate, delay, gap
        self.ended = False
        self.description = MatchDescription()
        self.last_received: float | None = None
        self._tracker = StateTracker()
        self._samples: deque[tuple[float, Sample]] = deque()
        self._next_time: float | None = None
        self._anchor = 0.0  # frame k after the anchor is at anchor + k / rate (no drift)
        self._since_anchor = 0
        self._first_time = 0.0  # time of the first frame (set by the first post)
        self._tick = 0
        self._halftime_seen = False  # an intermission passed: the next live post switches sides
        self._unemitted: deque[tuple[float, Sample]] = deque()  # posts whose events are not out

    def add(self, payload: dict, received_at: float) -> None:
        """One post. Raises GsiPayloadError (state unchanged) for a malformed payload.

        A post without a ``map`` block is the game client outside any match (in its menu,
        after leaving): it holds no state to show, so it makes no frame and leaves the feed
        to go stale rather than showing an empty, scoreless map.
        """
        state = read_state(payload)
        if "map" not in payload:
            return
        sample = self._tracker.step(state)
        provider = payload["provider"]
        if isinstance(provider.get("name"), str):
            self.description.provider = f"{provider['name']} {provider.get('version', '')}".strip()
        at = received_at if self.last_received is None else max(received_at, self.last_received)
        self.last_received = at
        self._samples.append((at, sample))
        self._unemitted.append((at, sample))
        if self._next_time is None:
            self._next_time = self._first_time = self._anchor = at
        self.ended = self.ended or sample.ended
        self._describe(state)

    def stale(self, now: float, heartbeat_s: float) -> bool:
        """No post for longer than ``heartbeat_s`` (or none yet)."""
        return self.last_received is None or now - self.last_received > heartbeat_s

    def frames(self, now: float) -> list[Frame]:
        """The frames due by ``now``: times up to now - delay, never past the latest post."""
        out: list[Frame] = []
        if self._next_time is None:
            return out
        limit = min(now - self.delay, self._samples[-1][0])
        while self._next_time <= limit + 1e-9:
            t = self._next_time
            while len(self._samples) > 1 and self._samples[1][0] <= t:
                self._samples.popleft()
            at_a, a = self._samples[0]
            later = self._samples[1] if len(self._samples) > 1 else None
            if later is not None and later[0] - at_a > self.gap and t > at_a:
                # Re-anchor after a gap: no frames inside it.
                self._next_time = self._anchor = later[0]
                self._since_anchor = 0
                continue
            out.append(self._frame(t, a, at_a, later))
            self._tick += 1
            self._since_anchor += 1
            self._next_time = self._anchor + self._since_anchor / self.rate
        return out

    def _frame(self, t: float, a: Sample, at_a: float, later: tuple[float, Sample] | None) -> Frame:
        frame = dict(a.frame)
        frame["tick"] = self._tick
        frame["round_time"] = round(t - self._first_time, 6)
        # A round start teleports players to their spawns: nothing to glide across.
        if later is not None and later[0] > at_a and not later[1].round_start:
            at_b, b = later
            _interpolate(frame, a, b, (t - at_a) / (at_b - at_a))
        # Events of every post at or before t not yet out (normally just post a, once).
        kills, shooting, nades, round_start = [], [], [], False
        switch = False
        while self._unemitted and self._unemitted[0][0] <= t:
            s = self._unemitted.popleft()[1]
            kills += s.kills
            shooting += s.shooting
            nades += s.nade_events
            round_start = round_start or s.round_start
            if s.halftime:
                self._halftime_seen = True
            elif self._halftime_seen and s.live:
                self._halftime_seen, switch = False, True
        frame["round_start"] = round_start
        frame["kills"] = kills or None
        frame["shooting"] = sorted(set(shooting)) or None
        # Every detonation revealed by these posts; the old client reads only the first.
        frame["nade_events"] = nades or None
        frame["nade_event"] = nades[0] if nades else None
        frame["is_halftime"] = a.halftime
        frame["switch"] = switch  # the first frame after halftime: the teams changed sides
        return frame  # type: ignore[return-value]

    def _describe(self, state: GameState) -> None:
        d = self.description
        if state.map_name:
            d.map_name = state.map_name
        if state.t_name or state.ct_name:
            d.team_names = {"t": state.t_name, "ct": state.ct_name}


def _lerp(a: float, b: float, f: float) -> float:
    return a + (b - a) * f


def lerp_yaw(a: float, b: float, f: float) -> float:
    """Yaw from a towards b the short way round, in -180..180."""
    delta = (b - a + 180.0) % 360.0 - 180.0
    return (a + delta * f + 180.0) % 360.0 - 180.0


def _interpolate(frame: dict, a: Sample, b: Sample, f: float) -> None:
    after = {p["sid"]: p for p in b.frame["players"]}
    players: list[Player] = []
    for p in a.frame["players"]:
        q = after.get(p["sid"])
        if q is None:
            players.append(p)
            continue
        moved = dict(p)
        moved["x"] = _lerp(p["x"], q["x"], f)
        moved["y"] = _lerp(p["y"], q["y"], f)
        moved["z"] = _lerp(p["z"], q["z"], f)
        moved["view_x"] = lerp_yaw(p["view_x"], q["view_x"], f)
        moved["view_y"] = _lerp(p["view_y"], q["view_y"], f)
        players.append(moved)  # type: ignore[arg-type]
    frame["players"] = players
    if a.frame["nades"] and b.frame["nades"]:
        later = {n["id"]: n for n in b.frame["nades"]}
        nades = []
        for n in a.frame["nades"]:
            m = later.get(n["id"])
            if m is None:
                nades.append(n)
            else:
                nades.append({**n, **{k: _lerp(n[k], m[k], f) for k in ("x", "y", "z")}})
        frame["nades"] = nades
    bomb_a, bomb_b = a.frame["bomb"], b.frame["bomb"]
    if bomb_a and bomb_b and a.bomb_key == b.bomb_key:
        frame["bomb"] = {**bomb_a, **{k: _lerp(bomb_a[k], bomb_b[k], f) for k in ("x", "y", "z")}}
