"""The server's side of the broker, in process: readiness and health while Redis is away, the
followers' supervision, a new incarnation's meta, the checks of --broker and --role, and the
Redis password kept out of everything the server shows."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request

import msgpack
import pytest
from broker_engines import require_redis_server
from conftest import tiny_frames, until
from redis_server import redis_server

from server.broker import redact_url
from server.config import ConfigError, ServerConfig, validate
from server.follower import Follower, pack_frame

META = {"map": "de_mirage", "tickrate": 64.0, "teams": {"t": "T", "ct": "CT"},
        "source_file": "gsi:m", "started": 1_700_000_000.0}  # fmt: skip


def get(app, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.http_port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def readyz(app) -> tuple[int, dict]:
    status, body = await asyncio.to_thread(get, app, "/readyz")
    return status, json.loads(body)


async def broker_up_gauge(app) -> float:
    _, body = await asyncio.to_thread(get, app, "/metrics")
    [line] = [line for line in body.decode().splitlines() if line.startswith("eeict_broker_up ")]
    return float(line.split()[1])


async def publish_match(app, name: str = "m", count: int = 64, meta: dict = META) -> str:
    """A live match straight into the app's broker, as an ingest would put it there."""
    epoch = await app.broker.start_stream(name, meta)
    frames = [(seq, pack_frame(msgpack.packb(frame), 0.0))
              for seq, frame in enumerate(tiny_frames(count))]  # fmt: skip
    await app.broker.publish_many(name, epoch, frames)
    return epoch


async def test_a_redis_outage_is_reported_but_keeps_the_server_ready(start_app):
    """Readiness does not follow the broker: an ingest with no match in play (nothing else
    would ask Redis) still reports the outage in /readyz, /streams and eeict_broker_up."""
    require_redis_server()
    with redis_server() as redis:
        app = await start_app(role="ingest", broker=redis.url, builtin_rounds=2)
        assert await readyz(app) == (200, {"status": "ready", "broker": "ok"})
        assert await broker_up_gauge(app) == 1
        redis.stop()
        await until(lambda: not app.broker.healthy, 15, "the health check noticing")
        assert await readyz(app) == (200, {"status": "ready", "broker": "down"})
        assert await broker_up_gauge(app) == 0
        _, body = await asyncio.to_thread(get, app, "/streams")
        assert json.loads(body)["broker"] == {"engine": "redis", "up": False}
        redis.start()
        await until(lambda: app.broker.healthy, 15, "the broker back")
        assert await readyz(app) == (200, {"status": "ready", "broker": "ok"})
        assert await broker_up_gauge(app) == 1


async def test_a_follower_that_fails_is_started_again_and_the_server_stays_ready(
    start_app, monkeypatch, caplog
):
    # A fault injected into the follower itself: whatever made it fail (a bug), the replica
    # must go on serving it rather than lose the stream and readiness for good.
    original, calls = Follower.run, []

    async def fails_first(self: Follower) -> None:
        calls.append(self)
        if len(calls) == 1:
            raise RuntimeError("injected follower failure")
        await original(self)

    monkeypatch.setattr(Follower, "run", fails_first)
    app = await start_app(builtin_rounds=2)
    with caplog.at_level(logging.INFO):
        await publish_match(app)
        await until(lambda: "m" in app.drivers, 15, "the match served after the restart")
    assert len(calls) == 2 and app.followers["m"] is calls[1]
    assert await readyz(app) == (200, {"status": "ready", "broker": "ok"})
    failures = [r for r in caplog.records if "following live match m failed" in r.getMessage()]
    assert len(failures) == 1 and "1 in a row" in failures[0].getMessage()
    assert failures[0].exc_info[1].args == ("injected follower failure",)


async def test_a_task_nothing_restarts_makes_the_server_unready_and_is_logged_once(
    start_app, caplog
):
    app = await start_app(builtin_rounds=2)

    async def broken() -> None:
        raise RuntimeError("broken for good")

    with caplog.at_level(logging.ERROR):
        task = app.start_task(broken(), "catalog rescan (test)")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback runs
    status, body = await readyz(app)
    assert (status, body["reason"]) == (503, "catalog rescan (test) failed")
    errors = [r.getMessage().split(";")[0] for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["catalog rescan (test) failed and will not be started again"]


async def test_a_new_incarnation_is_served_with_its_own_meta(start_app):
    app = await start_app(builtin_rounds=2)
    await publish_match(app)
    await until(lambda: "m" in app.drivers, 15, "the first incarnation served")
    await publish_match(app, meta={**META, "map": "de_inferno"})  # the ingest restarted
    await until(
        lambda: (
            "m" in app.drivers and app.drivers["m"].stream.feed.store.meta["map"] == "de_inferno"
        ),
        15,
        "the new incarnation served",
    )


@pytest.mark.parametrize("role", ["serve", "ingest"])
def test_a_role_that_shares_matches_needs_a_broker(role):
    with pytest.raises(ConfigError, match="--broker redis://HOST:PORT/DB"):
        validate(ServerConfig(role=role))
    validate(ServerConfig(role=role, broker="redis://127.0.0.1:6379/0"))
    validate(ServerConfig(role="all"))


def test_a_broker_url_that_is_not_redis_is_refused_without_showing_its_password():
    with pytest.raises(ConfigError) as refused:
        validate(ServerConfig(broker="redis//:hunter2@host:6379"))
    assert "hunter2" not in str(refused.value) and "redis://HOST:PORT/DB" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://eeict:hunter2@redis:6380/1", "rediss://eeict:***@redis:6380/1"),
        ("redis://:pa/ss@w:rd@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "unix:///run/redis.sock?db=0&password=hunter2",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("redis://eeict@redis:6379/0", "redis://eeict@redis:6379/0"),
        ("redis//:hunter2@redis:6379", ":***@redis:6379"),
        ("memory", "memory"),
    ],
)
def test_redact_url_hides_only_the_password(url, shown):
    assert redact_url(url) == shown


def test_help_shows_the_broker_default_without_its_password():
    env = {**os.environ, "EEICT_BROKER": "redis://:hunter2@redis:6379/0",
           "EEICT_TOKEN": "tok3n", "EEICT_GSI": "final=gs1tok"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--help"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "(default redis://:***@redis:6379/0)" in text and "final=***" in text
    for secret in ("hunter2", "tok3n", "gs1tok"):
        assert secret not in result.stdout


async def test_the_start_up_log_shows_the_broker_without_its_password(start_app, caplog):
    require_redis_server()
    with redis_server(password="hunter2") as redis:
        with caplog.at_level(logging.INFO):
            app = await start_app(broker=redis.url, builtin_rounds=2)
        assert app.broker.healthy
        [ready] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready")]
        assert f"broker redis://:***@127.0.0.1:{redis.port}/0" in ready
        assert "hunter2" not in caplog.text
