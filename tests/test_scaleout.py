"""Scale-out: one ingest process, several server replicas, one real Redis between them.

The shared GSI capture is posted by ``eeict gsi-replay`` into the ingest (``--role ingest``);
replicas (``--role serve``) only read the broker. Subscribers on every replica get the same
frames under the same seq and epoch; a client whose replica dies resumes on another with
nothing missing or twice; Redis paused or restarted empty stalls live matches (``stale``),
never recorded ones, and what Redis lost arrives as a counted ``skip``, while every process
stays ready and reports the broker down; an ingest restart is a new epoch (1012, then a new
``hello``); one ``--role all`` process with Redis serves beside a replica through a Redis
restart.

The poster runs in the background for as long as a test waits (``replaying``): its limit is
the whole capture, more than any wait, and it is stopped when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import msgpack
import pytest
import redis as redis_client
from broker_engines import require_redis_server
from conftest import require_shared, until
from redis_server import RedisServer, redis_server
from server_process import ServerProcess
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(240)

MATCH, TOKEN = "m", "s3cret"
BUILTIN = "generated"  # the generated match every replica plays as a recorded live stream
WHOLE_CAPTURE = 8225  # posts in the shared capture: at 8x, posting outlasts every wait below


@pytest.fixture(scope="module")
def capture() -> Path:
    require_redis_server()
    return require_shared("gsi") / "full_game_gsi.zip"


def ingest_process(redis: RedisServer, folder: Path, role: str = "ingest") -> ServerProcess:
    """The process that takes the posts: ``--role ingest``, or ``all`` (it serves them too)."""
    folder.mkdir(exist_ok=True)
    args = ("--role", role, "--broker", redis.url, "--recordings", str(folder))
    return ServerProcess((*args, "--gsi", f"{MATCH}={TOKEN}", "--gsi-finish-after", "120",
                          "--builtin-rounds", "2"))  # fmt: skip


def replica_process(redis: RedisServer) -> ServerProcess:
    return ServerProcess(("--role", "serve", "--broker", redis.url, "--builtin-rounds", "2"))


@contextlib.contextmanager
def cluster(
    redis: RedisServer, folder: Path, replicas: int, ingest_role: str = "ingest"
) -> Iterator[list[ServerProcess]]:
    """The ingest first, then the replicas; all stopped afterwards."""
    processes = [ingest_process(redis, folder / "ingest", ingest_role)]
    processes += [replica_process(redis) for _ in range(replicas)]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()
            if process.log_path is not None:
                print(*process.args[:2], process.log()[-3000:])  # shown if the test fails
                process.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def replaying(ingest: ServerProcess, capture: Path, limit: int, speed: float) -> Iterator[None]:
    """``eeict gsi-replay`` posting in the background for the block, stopped at its end."""
    command = [sys.executable, "-m", "server", "gsi-replay", str(capture), "--url",
               f"{ingest.http_url}/gsi/{MATCH}", "--token", TOKEN, "--limit", str(limit),
               "--speed", str(speed)]  # fmt: skip
    poster = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
        assert poster.poll() is None, f"gsi-replay ended early: {poster.stderr.read()[-2000:]}"
    finally:
        poster.kill()
        poster.wait(10)


def kill(process: ServerProcess) -> None:
    """SIGKILL the process group: no shutdown, what a crashed pod leaves."""
    os.killpg(process.proc.pid, signal.SIGKILL)
    process.proc.wait(10)
    process.proc = None


def newest_seq(redis: RedisServer) -> int:
    """The seq of the newest frame of the match in Redis (-1: none)."""
    client = redis_client.Redis.from_url(redis.url)
    try:
        newest = client.xrevrange(f"eeict:{{{MATCH}}}:frames", count=1)
    finally:
        client.close()
    return int(newest[0][0].split(b"-")[0]) - 1 if newest else -1


def get(process: ServerProcess, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{process.http_url}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def readiness(process: ServerProcess) -> tuple[int, dict]:
    status, body = get(process, "/readyz")
    return status, json.loads(body)


def broker_down_everywhere_it_shows(process: ServerProcess, live_match: bool) -> bool:
    """Ready, with the broker reported down in /readyz, eeict_broker_up and /streams (and
    the live match marked stale, where this process serves one)."""
    if readiness(process) != (200, {"status": "ready", "broker": "down"}):
        return False
    if "eeict_broker_up 0.0" not in get(process, "/metrics")[1].decode():
        return False
    streams = json.loads(get(process, "/streams")[1])
    stale = {s["id"]: s.get("stale") for s in streams["streams"]}
    return streams["broker"]["up"] is False and (not live_match or stale.get(MATCH) is True)


async def eventually(check, seconds: float, what: str) -> None:
    """Until the blocking ``check()`` (HTTP to a process) is true, run off the event loop so
    the watchers keep reading meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await asyncio.to_thread(check):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class Watcher:
    """A subscriber of one live stream: frames by seq, notices, hellos and close codes; it can
    be moved to another replica and resume there."""

    def __init__(self, server: ServerProcess, stream: str = MATCH) -> None:
        self.stream = stream
        self.move_to(server)
        self.frames: dict[int, dict] = {}
        self.seqs: list[int] = []
        self.notices: list[dict] = []
        self.hellos: list[dict] = []
        self.closes: list[int | None] = []

    def move_to(self, server: ServerProcess) -> None:
        self.url = f"{server.ws_url}/live/{self.stream}"

    async def run(self, resume: bool = False) -> None:
        """One connection, until it closes; waits for the stream to appear on the replica.
        ``resume``: ask to continue after the last frame seen, in the epoch it came from."""
        for _ in range(600):
            try:
                async with connect(self.url) as ws:
                    hello = msgpack.unpackb(await ws.recv())
                    if hello["type"] == "error":  # the replica does not serve it yet
                        raise OSError(hello["message"])
                    epoch = self.hellos[-1]["stream"]["epoch"] if self.hellos else None
                    self.hellos.append(hello)
                    request = {"type": "subscribe", "buffer": 64}
                    if resume and self.seqs:
                        request |= {"resume_seq": self.seqs[-1] + 1, "epoch": epoch}
                    await ws.send(msgpack.packb(request))
                    try:
                        async for data in ws:
                            self._take(msgpack.unpackb(data))
                    finally:
                        self.closes.append(ws.close_code)
                return
            except (OSError, InvalidStatus):
                await asyncio.sleep(0.05)
            except ConnectionClosed:
                return
        raise AssertionError(f"{self.url} never streamed")

    def _take(self, message: dict) -> None:
        if message["type"] == "ticks":
            for i, frame in enumerate(message["frames"]):
                self.seqs.append(message["seq"] + i)
                self.frames[message["seq"] + i] = frame
        elif message["type"] != "subscribed":
            self.notices.append(message)

    def kinds(self, kind: str) -> list[dict]:
        return [m for m in self.notices if m["type"] == kind]


def contiguous(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def accounted(watcher: Watcher) -> bool:
    """Every seq from the first frame on arrived once, or lies in a skip that counted it."""
    skips = {m["from_seq"]: m for m in watcher.kinds("skip")}
    seqs = watcher.seqs
    for before, after in pairwise(seqs):
        if after == before + 1:
            continue
        skip = skips.get(before + 1)
        if skip is None or skip["to_seq"] != after or skip["skipped"] != after - before - 1:
            return False
    return len(set(seqs)) == len(seqs)


def frames_lost(watcher: Watcher) -> list[dict]:
    return [m for m in watcher.kinds("skip") if m["reason"] == "frames_lost"]


async def stop(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_replicas_agree_and_a_client_of_a_killed_replica_resumes_on_another(
    tmp_path, capture
):
    with redis_server() as redis, cluster(redis, tmp_path, replicas=3) as processes:
        ingest, *replicas = processes
        watchers = [Watcher(replica) for replica in replicas]
        watching = [asyncio.create_task(w.run()) for w in watchers]
        with replaying(ingest, capture, WHOLE_CAPTURE, 8):
            await until(lambda: all(len(w.seqs) >= 192 for w in watchers), 90, "frames")
            moved = watchers[0]
            kill(replicas[0])
            await asyncio.wait_for(watching[0], 10)
            cut = len(moved.seqs)
            moved.move_to(replicas[1])
            watching[0] = asyncio.create_task(moved.run(resume=True))
            await until(lambda: len(moved.seqs) >= cut + 128, 60, "frames after the move")
            await stop(*watching)

    # One epoch everywhere; every watcher's frames in order, once, nothing skipped.
    epochs = {hello["stream"]["epoch"] for w in watchers for hello in w.hellos}
    assert len(epochs) == 1, epochs
    for w in watchers:
        assert contiguous(w.seqs) and not w.kinds("skip"), (w.url, w.kinds("skip"))
    # The moved client: 0 missing, 0 twice across the kill.
    assert len(moved.hellos) == 2 and moved.seqs[cut] == moved.seqs[cut - 1] + 1
    assert len(set(moved.seqs)) == len(moved.seqs)
    # Identical frames for identical seqs on every replica.
    common = set(watchers[0].frames).intersection(*(w.frames for w in watchers[1:]))
    assert len(common) >= 128
    for seq in sorted(common):
        assert watchers[1].frames[seq] == watchers[0].frames[seq] == watchers[2].frames[seq], seq


async def test_redis_paused_or_restarted_empty_stalls_live_matches_only_and_reports_losses(
    tmp_path, capture
):
    with redis_server() as redis, cluster(redis, tmp_path, replicas=1) as processes:
        ingest, replica = processes
        live, recorded = Watcher(replica), Watcher(replica, BUILTIN)
        watching = [asyncio.create_task(w.run()) for w in (live, recorded)]
        with replaying(ingest, capture, WHOLE_CAPTURE, 6):
            await until(lambda: len(live.seqs) >= 128 and recorded.seqs, 90, "frames")

            # Redis frozen: the live match is stale, the recorded stream plays on, and both
            # processes stay ready (the ingest takes every post: the poster would stop on an
            # error), reporting the broker down.
            redis.pause()
            try:
                await until(lambda: live.kinds("stale"), 30, "stale while redis is paused")
                frozen, played = len(live.seqs), len(recorded.seqs)
                for process, serves in ((replica, True), (ingest, False)):
                    await eventually(lambda p=process, s=serves: broker_down_everywhere_it_shows(
                        p, s), 30, "the outage reported")  # fmt: skip
                await until(lambda: len(recorded.seqs) >= played + 128, 30, "recorded frames")
            finally:
                redis.resume()
            await until(lambda: len(live.kinds("stale")) >= 2, 30, "resumed after the pause")
            await until(lambda: len(live.seqs) >= frozen + 128, 30, "live frames after the pause")
            assert [m["stale"] for m in live.kinds("stale")] == [True, False]
            # Nothing lost (the ingest kept what Redis could not take); a subscriber now further
            # behind the live edge than a second may be moved to it, told how far.
            assert {m["reason"] for m in live.kinds("skip")} <= {"slow_consumer"}
            assert accounted(live)

            # Redis restarted empty while the replica is cut off (frozen): the frames Redis held
            # but the replica had not read yet are gone, and arrive as a counted skip.
            recorded_until_freeze = len(recorded.seqs)  # a frozen replica is late for everyone
            os.killpg(replica.proc.pid, signal.SIGSTOP)
            try:
                seen = live.seqs[-1]  # the replica read at most a buffer (64) beyond it
                await until(lambda: newest_seq(redis) > seen + 192, 30, "frames the replica misses")
                redis.restart(keep_data=False)
            finally:
                os.killpg(replica.proc.pid, signal.SIGCONT)
            before = len(live.seqs)
            await until(lambda: frames_lost(live), 60, "a skip for the frames redis lost")
            await until(lambda: len(live.seqs) >= before + 128, 30, "live frames after the restart")
            for process in (replica, ingest):
                await eventually(lambda p=process: readiness(p) == (200, {
                    "status": "ready", "broker": "ok"}), 30, "the broker reported up")  # fmt: skip
            await stop(*watching)

    (skip,) = frames_lost(live)
    assert skip["skipped"] > 0 and accounted(live)
    assert live.hellos[0]["stream"]["epoch"] == live.hellos[-1]["stream"]["epoch"]
    # The recorded stream played on through the Redis outage; after the replica itself was
    # frozen its subscriber may be moved to the live edge, with a counted skip.
    assert len(live.hellos) == 1 and not recorded.kinds("stale")
    assert contiguous(recorded.seqs[:recorded_until_freeze]) and accounted(recorded)
    assert {m["reason"] for m in recorded.kinds("skip")} <= {"slow_consumer"}


async def test_an_ingest_restart_is_a_new_epoch_on_every_replica(tmp_path, capture):
    with redis_server() as redis, cluster(redis, tmp_path, replicas=2) as processes:
        ingest, *replicas = processes
        watchers = [Watcher(replica) for replica in replicas]
        watching = [asyncio.create_task(w.run()) for w in watchers]
        with replaying(ingest, capture, WHOLE_CAPTURE, 20):
            await until(lambda: all(len(w.seqs) >= 64 for w in watchers), 60, "frames everywhere")
        kill(ingest)
        ingest.start()
        with replaying(ingest, capture, WHOLE_CAPTURE, 8):
            await asyncio.wait_for(asyncio.gather(*watching), 60)  # closed by the new epoch
            seen = [len(w.seqs) for w in watchers]
            watching = [asyncio.create_task(w.run(resume=True)) for w in watchers]
            await until(lambda: all(len(w.seqs) > n + 64 for w, n in zip(watchers, seen,
                                                                         strict=True)),
                        60, "frames of the new epoch")  # fmt: skip
            await stop(*watching)

    for w in watchers:
        assert w.closes[0] == 1012, w.closes
        old, new = w.hellos[0]["stream"]["epoch"], w.hellos[-1]["stream"]["epoch"]
        assert old != new
        # A resume into another epoch cannot be honoured: the client is told, not misled.
        assert [m["reason"] for m in w.kinds("skip")] == ["resume_unknown"]
    assert watchers[0].hellos[-1]["stream"]["epoch"] == watchers[1].hellos[-1]["stream"]["epoch"]


async def test_one_process_with_redis_and_a_replica_carry_a_match_through_a_redis_restart(
    tmp_path, capture
):
    """``--role all`` with Redis: the process that takes the posts serves them through Redis
    too, beside a ``--role serve`` replica. Redis restarted empty: both tell their
    subscribers the match is stale and stay ready; then the match continues under the same
    epoch, every frame arrived or counted, the same frames for the same seqs on both."""
    with redis_server() as redis, cluster(redis, tmp_path, 1, ingest_role="all") as processes:
        watchers = [Watcher(process) for process in processes]
        watching = [asyncio.create_task(w.run()) for w in watchers]
        with replaying(processes[0], capture, WHOLE_CAPTURE, 8):
            await until(lambda: all(len(w.seqs) >= 128 for w in watchers), 90, "frames")
            redis.stop()
            try:
                await until(lambda: all(w.kinds("stale") for w in watchers), 30, "stale")
                for process in processes:
                    await eventually(lambda p=process: broker_down_everywhere_it_shows(p, True),
                                     30, "the outage reported")  # fmt: skip
                before = [len(w.seqs) for w in watchers]
            finally:
                redis.start()  # empty: the ingest puts the match back under the same epoch
            await until(lambda: all(len(w.kinds("stale")) >= 2 for w in watchers), 30, "resumed")
            await until(lambda: all(len(w.seqs) >= n + 128 for w, n in zip(watchers, before,
                                                                            strict=True)),
                        30, "frames after the restart")  # fmt: skip
            await stop(*watching)

    for w in watchers:
        assert [m["stale"] for m in w.kinds("stale")] == [True, False], w.url
        assert len(w.hellos) == 1 and accounted(w), (w.url, w.kinds("skip"))
        assert {m["reason"] for m in w.kinds("skip")} <= {"frames_lost", "slow_consumer"}
    assert watchers[0].hellos[0]["stream"]["epoch"] == watchers[1].hellos[0]["stream"]["epoch"]
    common = set(watchers[0].frames) & set(watchers[1].frames)
    assert len(common) >= 128
    assert all(watchers[0].frames[seq] == watchers[1].frames[seq] for seq in common)
