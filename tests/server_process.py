"""Run a real ``eeict serve`` subprocess on a free 127.0.0.1 port, for end-to-end tests.

A context manager so the server (its whole process group) is always stopped, and a server that
never becomes ready fails the test with its own log instead of a bare timeout.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """One ``eeict serve`` child; ``start()`` again after ``stop()`` reuses the same port."""

    args: tuple[str, ...]
    port: int = field(default_factory=free_port)  # WebSocket
    http_port: int = field(default_factory=free_port)
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def start(self, ready_timeout: float = READY_TIMEOUT_S) -> None:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="eeict-serve-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--http-port", str(self.http_port), *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
                env={**os.environ, **(self.env or {})},
                cwd=Path(__file__).resolve().parents[1],
            )
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"eeict serve exited with {self.proc.returncode} before ready:\n{self.log()}"
                )
            url = f"{self.http_url}/readyz"
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"eeict serve not ready after {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM the process group (a clean shutdown), SIGKILL it if that takes too long."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def server_process(
    *args: str, env: dict[str, str] | None = None, ready_timeout: float = READY_TIMEOUT_S
) -> Iterator[ServerProcess]:
    """``with server_process("--recordings", d, "--live", "x") as srv:`` then use ``srv.ws_url``."""
    server = ServerProcess(tuple(args), env=env)
    try:
        server.start(ready_timeout)
        yield server
    finally:
        server.stop()
        if server.log_path is not None:
            server.log_path.unlink(missing_ok=True)


def match_frames(count: int = 1200, first_tick: int = 1000) -> list[dict]:
    """A small two-round match in schema shape: four players circling on de_mirage, a kill,
    a smoke, a molotov, a carried then planted bomb. Ticks jump by 5 at the second round, so
    "the frame at or before a tick" differs from "the frame of that tick"."""
    half = count // 2
    names = [("Alpha", "T", -300.0, -1900.0), ("Bravo", "T", -1900.0, 300.0)]
    names += [("Charlie", "CT", -700.0, -700.0), ("Delta", "CT", -1600.0, -1900.0)]
    frames = []
    for i in range(count):
        tick = first_tick + i + (5 if i >= half else 0)
        angle = i / 64 * 1.5  # radians: a lap every ~4 s, 200 units from the centre
        players = []
        for n, (name, team, cx, cy) in enumerate(names):
            if name == "Delta" and half // 2 <= i < half:  # dead for the rest of round 1
                continue
            a = angle + n * math.pi / 2
            players.append(
                {
                    "sid": 76561190000000000 + n, "name": name, "clan": "", "team": team,
                    "hp": 100 - n * 10, "money": 800, "x": cx + 200 * math.cos(a),
                    "y": cy + 200 * math.sin(a), "z": 0.0, "view_x": math.degrees(a) % 360,
                    "view_y": 0.0, "actv_itm": "AK-47", "items": ["Knife", "AK-47"],
                    "helmet": True, "armor": 100, "kit": False, "is_ducking": False,
                    "is_walking": False, "is_standing": True, "is_air": False, "is_rld": False,
                    "kills": 0, "deaths": 0, "assists": 0, "dmg": 0, "adr": 0.0,
                    "is_planting": False, "is_defusing": False,
                }
            )  # fmt: skip
        kill = {"killer": "Alpha", "victim": "Delta", "weapon": "AK-47", "is_hs": True}
        planted = i % half >= 300
        carrier = players[0]
        frames.append(
            {
                "tick": tick, "round_time": i / 64, "round_start": i in (0, half),
                "is_freeze": i % half < 64, "t": "Orange", "ct": "Blue",
                "t_wins": int(i >= half), "ct_wins": 0, "players": players, "shooting": None,
                "kills": [{**kill, "penetrations": 0}] if i == half // 2 else None,
                "nades": [{"id": 1, "type": "Smoke Grenade", "x": -500.0 + i, "y": -800.0, "z": 0.0,
                           "team": "T"}] if 80 <= i % half < 100 else None,
                "infernos": [{"id": 2, "fires": [{"x": -1000.0 + 30 * k, "y": -1200.0,
                                                  "z": 0.0} for k in range(5)]}]
                if 150 <= i % half < 400 else None,
                "nade_event": {"type": "Smoke Grenade", "x": -400.0, "y": -800.0, "z": 0.0}
                if i % half == 100 else None,
                "bomb": {"carrier": None if planted else carrier["name"],
                         "x": -350.0 if planted else carrier["x"],
                         "y": -2050.0 if planted else carrier["y"], "z": 0.0,
                         "planted": planted, "defused": False, "exploded": False,
                         "planted_by": "Alpha" if planted else None, "defused_by": None},
            }
        )  # fmt: skip
    return frames


def write_match(folder: Path, name: str = "match", count: int = 1200) -> Path:
    """``match_frames`` as ``folder/<name>.eeict``, for ``eeict serve --recordings folder``."""
    from processing.recording import write_recording
    from processing.source import SourceInfo

    path = folder / f"{name}.eeict"
    info = SourceInfo("de_mirage", 64, f"{name}.dem", "0" * 64, "test")
    write_recording(path, info, match_frames(count))
    return path
