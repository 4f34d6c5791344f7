"""Shared fixtures: where the real inputs live, and how their absence is treated."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The nine demos in ../shared/demos (its README lists what each holds).
DEMOS = [
    "bomb_planting_1", "defuse", "nade", "random_1", "random_2", "random_3", "random_5",
    "run_1", "smoke_1",
]  # fmt: skip


def require_shared(sub: str) -> Path:
    """The ``../shared/<sub>`` folder; missing it skips locally but fails under CI=true, unless
    EEICT_SHARED_OPTIONAL=1 says these inputs are not there (the GitHub workflow's runners)."""
    path = SHARED / sub
    if not path.is_dir():
        message = f"{path} is missing: clone the repo beside the shared/ folder"
        if os.environ.get("CI") == "true" and os.environ.get("EEICT_SHARED_OPTIONAL") != "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_module(name: str, hint: str):
    """``import name``; a missing test dependency skips locally but fails under CI=true (where
    ``make test`` installs every one)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is missing: {hint}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared(".").resolve()


@pytest.fixture(scope="session")
def demos_dir() -> Path:
    return require_shared("demos")


@pytest.fixture(scope="session")
def parsed_demo(demos_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``name`` -> the demo file demoparser2 reads when it is processed: the shared demo, or
    its copy with the string tables restored (processing/demo/stringtables.py). References
    taken from demoparser2 read the same input as the frames."""
    from processing.demo.stringtables import restore_string_tables

    folder = tmp_path_factory.mktemp("restored")

    def get(name: str) -> Path:
        return restore_string_tables(demos_dir / f"{name}.dem", folder)

    return get


async def until(condition, seconds: float = 30.0, what: str = "condition") -> None:
    """Wait for ``condition()`` (polled), failing the test after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def tiny_frames(count: int, first_tick: int = 100, step: int = 1) -> list[dict]:
    """Small schema-shaped frames with a moving player, for tests that need any recording."""
    frames = []
    for i in range(count):
        tick = first_tick + i * step
        player = {"sid": 76561190000000001, "name": "p1", "team": "T", "x": float(i), "y": 0.0}
        frames.append(
            {"tick": tick, "round_time": i / 64, "round_start": i % 500 == 0, "players": [player]}
        )
    return frames


@pytest.fixture
def make_recording(tmp_path):
    """Factory: write ``tiny_frames(count)`` as a recording and open it."""
    from processing.recording import Recording, write_recording
    from processing.source import SourceInfo

    def make(count: int = 1000, name: str = "tiny", **kwargs) -> Recording:
        path = tmp_path / f"{name}.eeict"
        info = SourceInfo("de_mirage", 64, f"{name}.dem", "0" * 64, "test")
        write_recording(path, info, tiny_frames(count, **kwargs))
        return Recording.open(path)

    return make


@pytest.fixture
async def start_app(tmp_path):
    """Factory: start an in-process server on a free 127.0.0.1 port; all are shut down after."""
    from server.app import App
    from server.config import ServerConfig

    apps = []

    async def start(**options) -> App:
        options.setdefault("recordings", tmp_path)
        app = App(ServerConfig(host="127.0.0.1", port=0, http_port=0, **options))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.shutdown()


@pytest.fixture
def write_tiny(tmp_path):
    """Factory: write a tiny recording named ``name`` into tmp_path (the server's folder)."""
    from processing.recording import write_recording
    from processing.source import SourceInfo

    def write(name: str = "tiny", count: int = 3000, players: int = 1, pad: int = 0, **kwargs):
        frames = tiny_frames(count, **kwargs)
        for frame in frames:
            frame["players"] = [
                dict(frame["players"][0], sid=i, name=f"p{i}", pad="x" * pad)
                for i in range(players)
            ]
        info = SourceInfo("de_mirage", 64, f"{name}.dem", "0" * 64, "test")
        write_recording(tmp_path / f"{name}.eeict", info, frames)
        return frames

    return write
