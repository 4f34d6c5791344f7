"""The ingest of live matches, in one process on the test's clock: the pure per-match rules, the
store and journal they write, and the real server (HTTP posts, WebSockets, broker) around them:
restarts, journals left behind, several matches, a broker or a disk that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
from pathlib import Path

import aiohttp
import msgpack
import pytest
from conftest import require_shared, until
from redis_server import RedisServer, redis_server_binary
from websockets.asyncio.client import connect

from processing.gsi.capture import read_capture
from processing.gsi.framer import DELAY_S, RATE, Framer
from processing.recording import Recording, write_recording
from processing.source import SourceInfo
from server import journal
from server.app import App
from server.broker import DEFAULT_WINDOW, MemoryBroker
from server.config import ServerConfig
from server.streams.match import MatchInPlay, MatchRules
from server.streams.store import GrowingStore

pytestmark = pytest.mark.timeout(120)

MATCH, TOKEN = "m", "s3cret"
START = 1_760_000_000.0  # the test clock's Unix time at the first post
STEP = 0.2  # seconds between posts: the capture's pace (4.6 posts a second)
ROUND_1 = 116  # the capture's post where the first round starts


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self, now: float = START - STEP) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def payloads() -> list[dict]:
    """The capture's first 900 posts (warmup, rounds 1-3), each with the match's token."""
    path = require_shared("gsi") / "full_game_gsi.zip"
    return [{**p, "auth": {"token": TOKEN}} for p in read_capture(path, limit=900)]


def framed(payloads: list[dict], times: list[float], delay: float = DELAY_S) -> list[dict]:
    """What a framer makes of ``payloads`` posted at ``times``: what the ingest must stream."""
    framer = Framer(delay=delay)
    for payload, at in zip(payloads, times, strict=True):
        framer.add(payload, at)
    frames = framer.frames(times[-1] + 60.0)
    for frame in frames:  # the stream's round time: to 0.1 ms
        frame["round_time"] = round(frame["round_time"], 4)
    return frames


class Server:
    """An in-process server (real HTTP and WebSocket ports on 127.0.0.1) on the test's clock."""

    def __init__(self, folder: Path, clock: Clock) -> None:
        self.folder, self.clock = folder, clock
        self.apps: list[App] = []
        self.session: aiohttp.ClientSession | None = None

    async def start(
        self, window: int = DEFAULT_WINDOW, matches: tuple[str, ...] = (MATCH,), **options
    ) -> App:
        options.setdefault("gsi_finish_after", 300.0)
        config = ServerConfig(
            host="127.0.0.1", port=0, http_port=0, recordings=self.folder, live=["tiny"],
            gsi=[f"{name}={TOKEN}" for name in matches], **options,
        )  # fmt: skip
        broker = options.get("broker")
        app = App(config, self.clock, None if broker else MemoryBroker(window))
        await app.start()
        self.apps.append(app)
        return app

    async def post(self, app: App, payload: dict | bytes, match: str = MATCH) -> tuple[int, dict]:
        """One post at the clock's current time."""
        if self.session is None:
            self.session = aiohttp.ClientSession()
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        url = f"http://127.0.0.1:{app.http_port}/gsi/{match}"
        async with self.session.post(url, data=body) as response:
            return response.status, await response.json()

    async def play(self, app: App, payloads: list[dict], match: str = MATCH) -> list[float]:
        """Post each payload STEP seconds after the one before; returns their times."""
        times = []
        for payload in payloads:
            self.clock.now += STEP
            status, answer = await self.post(app, payload, match)
            assert status == 200, answer
            times.append(self.clock.now)
            await asyncio.sleep(0)
        return times

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        for app in self.apps:
            await app.shutdown()


@pytest.fixture
async def server(tmp_path, write_tiny):
    write_tiny()
    server = Server(tmp_path, Clock())
    yield server
    await server.close()


def store_of(app: App, match: str = MATCH) -> GrowingStore:
    return app.ingest.runs[match].match.store


async def framed_through(app: App, count: int, match: str = MATCH) -> GrowingStore:
    """Wait until the ingest made ``count`` frames and this process's live stream has them."""
    await until(lambda: app.ingest.runs[match].match.store is not None, 10, "the first frame")
    store = store_of(app, match)
    await until(lambda: store.frame_count >= count, 30, f"{count} frames")
    await until(
        lambda: (
            match in app.followers
            and app.followers[match].feed is not None
            and app.followers[match].feed.available() >= count
        ),
        30,
        f"{count} frames on the live stream",
    )
    return store


# -- the per-match rules, pure -------------------------------------------------------------


def test_a_match_in_play_makes_frames_marks_stale_and_finishes(payloads):
    rules = MatchRules(delay_s=DELAY_S, stale_after_s=2.5, finish_after_s=10.0)
    match = MatchInPlay(MATCH, rules)
    assert not match.has_map and match.step(START).frames == 0  # nothing to show yet
    times = [START + i * STEP for i in range(300)]
    for payload, at in zip(payloads[:300], times, strict=True):
        match.add(payload, at)
    store = GrowingStore(MATCH, match.description())
    assert match.has_map and store.meta["map"] == "de_mirage"
    match.open(store, times[-1])
    step = match.step(times[-1] + 1.0)  # every post's frames are due
    expected = framed(payloads[:300], times)
    assert step.frames == store.frame_count == len(expected)
    assert store.frames(0, store.frame_count) == expected
    assert step.marks == {} and step.finished is None
    # Quiet: stale once the silence is longer than the bound, then over after finish_after.
    assert match.step(times[-1] + 2.4).marks == {}
    assert match.step(times[-1] + 2.6).marks == {"stale": True}
    assert match.stale_since == times[-1] + 2.6
    gone = match.step(times[-1] + 2.6 + 10.1)
    assert gone.finished == "feed gone" and gone.marks == {"ended": True} and store.complete
    assert match.step(times[-1] + 30.0) == type(gone)()  # over: nothing more, once


def test_a_match_resumed_from_its_frames_continues_their_ticks_and_time(payloads):
    rules = MatchRules(delay_s=DELAY_S, stale_after_s=2.5, finish_after_s=300.0)
    first = MatchInPlay(MATCH, rules)
    times = [START + i * STEP for i in range(200)]
    for payload, at in zip(payloads[:200], times, strict=True):
        first.add(payload, at)
    before = GrowingStore(MATCH, first.description())
    first.open(before, START)
    first.step(times[-1] + 1.0)
    again = MatchInPlay(MATCH, rules)  # the restarted server's: the game posts on
    later = [times[-1] + 30.0 + i * STEP for i in range(100)]
    for payload, at in zip(payloads[200:300], later, strict=True):
        again.add(payload, at)
    resumed = before.head(before.frame_count)
    again.open(resumed, later[0])
    again.step(later[-1] + 1.0)
    ticks = resumed.ticks.tolist()
    assert ticks == list(range(len(ticks))) and len(ticks) > before.frame_count
    assert resumed.frame(before.frame_count)["round_time"] == pytest.approx(
        before.frame(before.frame_count - 1)["round_time"] + 1 / RATE
    )
    assert again.depicted_time(0) < again.depicted_time(before.frame_count)


def test_a_game_over_finishes_once_its_last_posts_are_frames(payloads):
    rules = MatchRules(delay_s=DELAY_S, stale_after_s=2.5, finish_after_s=300.0)
    match = MatchInPlay(MATCH, rules)
    over = json.loads(json.dumps(payloads[400]))
    over["map"]["phase"] = "gameover"
    match.add(payloads[399], START)
    match.add(over, START + STEP)
    match.open(GrowingStore(MATCH, match.description()), START)
    assert match.step(START + STEP + DELAY_S - 0.01).finished is None  # its frame is not out
    step = match.step(START + STEP + DELAY_S + 0.05)
    assert step.finished == "game over" and step.marks == {"ended": True}


# -- the store: events, its head, its chunks -------------------------------------------------


def test_the_store_indexes_events_as_frames_arrive_and_copies_its_head(payloads, tmp_path):
    frames = framed(payloads, [START + i * STEP for i in range(len(payloads))])
    store = GrowingStore(MATCH, {"map": "de_mirage", "tickrate": RATE, "teams": {}})
    events_seen = []
    for frame in frames:
        store.append(frame)
        events_seen.append(len(store.meta["events"]))
    # As a recording of the same frames indexes them, kept current frame by frame.
    info = SourceInfo("de_mirage", RATE, "gsi:m", "", "gsi")
    written = write_recording(tmp_path / "whole.eeict", info, frames)
    assert store.meta["events"] == written["events"] and len(written["events"]) >= 15
    kinds = {e["type"] for e in store.meta["events"]}
    assert {"round_start", "kill", "freeze_end", "round_end"} <= kinds
    assert events_seen == sorted(events_seen) and events_seen[0] < events_seen[-1]
    assert store.meta["round_starts"] == written["round_starts"]
    assert sorted(store.meta["roster"], key=lambda r: (r["team"], r["name"])) == (written["roster"])
    # Its head: the same as a store fed only those frames, and it grows on the same way.
    for count in (1, 64, 640, 2000, 2000 + 37):
        head = store.head(count)
        alone = GrowingStore(MATCH, store.meta)
        for frame in frames[:count]:
            alone.append(frame)
        assert head.frames_bytes(0, count) == alone.frames_bytes(0, count)
        assert head.ticks.tolist() == alone.ticks.tolist()
        for key in ("first_tick", "last_tick", "frame_count", "round_starts", "roster", "events"):
            assert head.meta[key] == alone.meta[key], (count, key)
        for frame in frames[count : count + 1500]:
            head.append(frame)
            alone.append(frame)
        assert head.meta["events"] == alone.meta["events"], count
        assert head.frames_bytes(0, head.frame_count) == alone.frames_bytes(0, alone.frame_count)


def test_sealed_chunks_rebuild_a_store_and_damaged_ones_are_refused(payloads):
    frames = framed(payloads[:200], [START + i * STEP for i in range(200)])
    store = GrowingStore(MATCH, {"map": "de_mirage", "tickrate": RATE, "teams": {}})
    for frame in frames:
        store.append(frame)
    rebuilt = GrowingStore(MATCH, store.meta)
    for index in range(store.sealed_count):
        rebuilt.add_sealed_chunk(store.sealed_chunk(index))
    whole = store.sealed_count * store.frames_per_chunk
    assert rebuilt.frames_bytes(0, whole) == store.frames_bytes(0, whole)
    assert rebuilt.meta["events"] == store.head(whole).meta["events"]
    for bad in (b"not zstd", store.sealed_chunk(0)[:-9], store.sealed_chunk(0)):
        count = rebuilt.frame_count
        with pytest.raises(ValueError):  # damaged, cut short, or ticks going back
            rebuilt.add_sealed_chunk(bad)
        assert rebuilt.frame_count == count


def test_a_journal_survives_a_full_disk(payloads, tmp_path):
    frames = framed(payloads[:200], [START + i * STEP for i in range(200)])
    store = GrowingStore(MATCH, {"map": "de_mirage", "tickrate": RATE, "teams": {}})
    header = {"name": MATCH, "run": "m-1", "started": START, "meta": store.meta | {"events": []}}
    path = journal.journal_path(tmp_path, "m-1")
    path.symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    writer = journal.Journal(path, header)
    for frame in frames[:130]:
        store.append(frame)
    with pytest.raises(OSError):
        writer.write(store, START + 1)
    assert (writer.size, writer.chunks) == (0, 0)
    path.unlink()  # space again: the next write catches up with the store
    for frame in frames[130:]:
        store.append(frame)
    writer.write(store, START + 2)
    writer.close()
    contents = journal.read(path)
    assert (contents.name, contents.run, contents.written_at) == (MATCH, "m-1", START + 2)
    loaded, size = contents.load(store.frames_per_chunk)
    assert size == path.stat().st_size and loaded.frame_count == store.sealed_count * 64
    assert loaded.frames_bytes(0, loaded.frame_count) == store.frames_bytes(0, loaded.frame_count)


# -- the server around them -----------------------------------------------------------------


async def test_bad_posts_are_refused_in_json_and_counted(server, payloads):
    app = await server.start()
    good = payloads[0]
    refusals = [
        (json.dumps({**good, "auth": {"token": "wrong"}}).encode(), 401, "unauthorized"),
        (json.dumps({k: v for k, v in good.items() if k != "auth"}).encode(), 401,
         "unauthorized"),
        (b"not json", 400, "bad_payload"),
        (b"[1, 2]", 400, "bad_payload"),
        (json.dumps({"auth": {"token": TOKEN}}).encode(), 400, "bad_payload"),
        (b'{"provider": {}, "pad": "' + b"x" * 300_000 + b'"}', 413, "too_large"),
    ]  # fmt: skip
    for body, status, code in refusals:
        answer = await server.post(app, body)
        assert answer[0] == status and answer[1]["error"] == code, answer
        assert set(answer[1]) == {"error", "message"} and answer[1]["message"]
    assert (await server.post(app, good, "nope"))[0] == 404
    errors = app.metrics.ingest_errors
    assert (errors["unauthorized"], errors["bad_payload"], errors["too_large"]) == (2, 3, 1)
    assert errors["unknown_match"] == 1 and app.metrics.ingest_posts[MATCH] == 0
    exposition = app.metrics.exposition()[0].decode()
    for code, count in (("unauthorized", 2), ("bad_payload", 3), ("too_large", 1)):
        assert f'eeict_ingest_errors_total{{reason="{code}"}} {count}.0' in exposition
    assert await server.post(app, good) == (200, {"ok": True})  # and the match goes on


async def test_a_restart_with_more_frames_than_the_broker_window_replays_from_round_1(
    server, payloads
):
    window = 256  # 4 s: the match before the restart is 80 s
    first = await server.start(window)
    times = await server.play(first, payloads[:400])
    server.clock.now += 1.0
    expected = framed(payloads[:400], times)
    before = await framed_through(first, len(expected))
    round_1 = before.meta["round_starts"][0]
    frame_at_round_1 = before.frame(before.index_at_or_after(round_1))
    old_epoch = first.followers[MATCH].feed.epoch
    await first.shutdown()  # the journal stays; its unsealed last second is lost
    kept = len(expected) // 64 * 64

    again = await server.start(window)
    await server.play(again, payloads[400:450])
    server.clock.now += 1.0
    after = await framed_through(again, kept + 1)
    assert after.frames_bytes(0, kept) == before.frames_bytes(0, kept)
    await until(lambda: again.followers[MATCH].feed.available() == after.frame_count, 10, "all")
    feed = again.followers[MATCH].feed
    assert feed.oldest() == 0 and feed.available() > window  # more than the broker holds
    assert feed.epoch != old_epoch
    async with connect(f"ws://127.0.0.1:{again.port}/replay/{MATCH}") as ws:
        hello = msgpack.unpackb(await ws.recv())
        assert hello["live"] and hello["rounds"][0] == {"round": 1, "tick": round_1}
        await ws.send(msgpack.packb({"type": "seek", "round": 1}))
        messages = []  # the opening state and frame are generation 1; the seek's, 2
        while not any(m.get("gen") == 2 and m["type"] == "ticks" for m in messages):
            messages.append(msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5)))
    state = next(m for m in messages if m["type"] == "state" and m["gen"] == 2)
    ticks = next(m for m in messages if m["type"] == "ticks" and m["gen"] == 2)
    assert state["tick"] == round_1 and ticks["frames"][0] == frame_at_round_1
    # /live says the same: the stream's frames start at seq 0 under the new epoch.
    async with connect(f"ws://127.0.0.1:{again.port}/live/{MATCH}") as ws:
        live = msgpack.unpackb(await ws.recv())
    assert live["round_starts"][0] == round_1 and live["stream"]["first_tick"] == 0


def recordings_of(app: App, match: str = MATCH) -> list[Recording]:
    return [e.recording for i, e in app.catalog.entries.items() if i.startswith(f"{match}-")]


async def test_a_journal_whose_game_never_posts_again_is_recorded_after_the_bound(server, payloads):
    first = await server.start()
    times = await server.play(first, payloads[:300])
    server.clock.now += 1.0
    made = await framed_through(first, len(framed(payloads[:300], times)))
    count = made.sealed_count * 64  # what the journal has
    frames = made.frames_bytes(0, count)
    await first.shutdown()  # as a crash: no recording, the journal stays
    (left,) = server.folder.glob(".*.journal")

    server.clock.now += 20.0  # down for 20 s; the game never posts again
    again = await server.start(gsi_finish_after=60.0)
    await until(lambda: MATCH in again.ingest.recovered, 10, "the journal found at start-up")
    await asyncio.sleep(2 * 1.0)  # two of the ingest's checks: within the bound, still kept
    assert left.exists() and not recordings_of(again)
    server.clock.now += 41.0  # 61 s after its last frames
    await until(lambda: recordings_of(again), 20, "the recording")
    (recording,) = recordings_of(again)
    assert recording.frame_count == count and recording.frames_bytes(0, count) == frames
    assert recording.meta["round_starts"] == made.head(count).meta["round_starts"]
    assert recording.meta["events"] == made.head(count).meta["events"]
    await until(lambda: not left.exists(), 10, "the journal removed")


async def test_a_new_run_of_a_match_never_touches_the_last_runs_journal(server, payloads):
    app = await server.start(gsi_stale_after=1.0, gsi_finish_after=3.0)
    times = await server.play(app, payloads[:200])
    server.clock.now += 1.0
    first = await framed_through(app, len(framed(payloads[:200], times)))
    first_run = app.ingest.runs[MATCH]
    first_journal = first_run.journal.path
    server.clock.now += 1.5
    await until(lambda: first_run.match.stale, 10, "stale")
    server.clock.now += 3.5  # stale for longer than the bound: over, its recording is written
    await until(lambda: first.complete, 10, "the first run over")
    # The game posts again at once: a new run, its own journal, frames from tick 0.
    again = await server.play(app, payloads[200:400])
    server.clock.now += 1.0
    second_run = app.ingest.runs[MATCH]
    assert second_run is not first_run and second_run.run != first_run.run
    await until(lambda: second_run.match.store is not None, 10, "the second run's frames")
    second = second_run.match.store
    await until(lambda: second.frame_count >= len(framed(payloads[200:400], again)), 10, "all")
    assert second.ticks[0] == 0 and second.frames(0, 64) == framed(payloads[200:400], again)[:64]
    await until(lambda: recordings_of(app), 20, "the first run's recording")
    (recording,) = recordings_of(app)
    assert recording.frame_count == first.frame_count
    assert not first_journal.exists()
    second_journal = journal.read(second_run.journal.path)
    assert second_journal.run == second_run.run and len(second_journal.chunks) > 0
    assert second_journal.chunks[0] == second.sealed_chunk(0)


async def test_of_two_journals_of_a_match_found_at_start_up_the_older_is_recorded(server, payloads):
    first = await server.start()
    times = await server.play(first, payloads[:200])
    server.clock.now += 1.0
    await framed_through(first, len(framed(payloads[:200], times)))
    await first.shutdown()
    server.clock.now += 5.0
    second = await server.start()
    await server.play(
        second, [{**payloads[0], "map": {**payloads[0]["map"], "name": "de_inferno"}}]
    )
    server.clock.now += 1.0  # another map: a new run; the one before the restart is over
    await until(lambda: recordings_of(second), 20, "the run before the restart recorded")
    newest = second.ingest.runs[MATCH]
    await until(lambda: newest.journal is not None and newest.journal.size, 10, "its journal")
    await second.shutdown()
    journals = sorted(server.folder.glob(".*.journal"))
    assert [journal.read(p).run for p in journals] == [newest.run]


@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes beyond ``size`` bytes of any file fail with EFBIG (a full disk, for a while)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_several_matches_at_once_and_a_failing_journal_stops_nothing(
    server, payloads, caplog
):
    app = await server.start(matches=("a", "b"))
    posted: dict[str, list[tuple[float, dict]]] = {"a": [], "b": []}

    async def play(a: list[dict], b: list[dict]) -> None:
        for index in range(max(len(a), len(b))):
            server.clock.now += STEP
            for match, payload in (("a", a[index : index + 1]), ("b", b[index : index + 1])):
                if payload:
                    assert (await server.post(app, payload[0], match))[0] == 200
                    posted[match].append((server.clock.now, payload[0]))
            await asyncio.sleep(0)

    def journal_size(match: str) -> int:
        return app.ingest.runs[match].journal.size

    await play(payloads[:600], payloads[:200])  # a 80 s further into its match than b
    server.clock.now += 1.0
    await until(lambda: journal_size("b") > 0 and app.ingest.runs["a"].journal.chunks > 100, 20,
                "both journals")  # fmt: skip
    a_stuck = journal_size("a")
    assert journal_size("b") * 3 < a_stuck
    caplog.set_level(logging.WARNING, "server.ingest")
    with file_size_limit(a_stuck):  # a's journal cannot grow; b's can, for a while
        await play(payloads[600:700], payloads[200:300])
        server.clock.now += 1.0
        await until(lambda: "cannot write its journal" in caplog.text, 10, "a's journal failing")
        a_store, b_store = store_of(app, "a"), store_of(app, "b")
        await until(lambda: a_store.sealed_count > app.ingest.runs["a"].journal.chunks + 10, 10,
                    "a's frames going on without its journal")  # fmt: skip
        assert journal_size("a") == a_stuck
        await until(lambda: app.ingest.runs["b"].journal.chunks == b_store.sealed_count, 10, "b")
    assert "a step failed" not in caplog.text and app.ready and not app.failed
    await play(payloads[700:750], payloads[300:350])
    server.clock.now += 1.0
    for match in ("a", "b"):
        times, sent = zip(*posted[match], strict=True)
        expected = framed(list(sent), list(times))
        store = await framed_through(app, len(expected), match)
        assert store.frames(0, store.frame_count) == expected, match
        run = app.ingest.runs[match]
        await until(lambda run=run, store=store: run.journal.chunks == store.sealed_count, 10,
                    "the journal caught up")  # fmt: skip
        contents = journal.read(run.journal.path)
        assert contents.chunks == [store.sealed_chunk(i) for i in range(store.sealed_count)]
        assert app.followers[match].feed.frames_bytes(0, store.frame_count) == (
            store.frames_bytes(0, store.frame_count)
        )


@pytest.fixture
def redis(tmp_path):
    """A real redis-server on a free loopback port, not started yet (the test starts it)."""
    if redis_server_binary() is None:
        message = "redis-server is missing: run scripts/install-test-deps.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path / "redis"
    folder.mkdir()
    redis = RedisServer(folder)
    yield redis
    redis.stop()


async def test_redis_down_when_a_match_starts_then_refusing_writes_loses_no_frame(
    server, payloads, redis, caplog
):
    """The broker takes the match's start and frames while Redis is away or refuses writes
    and hands them over when it is back; the ingest frames on and stays ready throughout."""
    caplog.set_level(logging.WARNING)
    app = await server.start(broker=redis.url)
    times = await server.play(app, payloads[:150])  # Redis down: the stream waits in the broker
    server.clock.now += 1.0
    run = app.ingest.runs[MATCH]
    await until(lambda: run.match.store is not None and run.match.store.frame_count > 1000, 10,
                "frames while Redis is down")  # fmt: skip
    assert app.ready and not app.failed and not app.broker.healthy
    redis.start()
    times += await server.play(app, payloads[150:300])  # the game posts on
    server.clock.now += 1.0
    await until(lambda: app.broker.healthy, 30, "Redis back")
    await framed_through(app, len(framed(payloads[:300], times)))
    # Redis refuses writes (maxmemory): the broker holds the frames until it takes them.
    assert redis.command(b"CONFIG", b"SET", b"maxmemory", b"1") == b"+OK"
    try:
        times += await server.play(app, payloads[300:400])
        server.clock.now += 1.0
        await until(lambda: not app.broker.healthy, 10, "refused writes")
        assert app.ready and not app.failed
    finally:
        assert redis.command(b"CONFIG", b"SET", b"maxmemory", b"0") == b"+OK"
    times += await server.play(app, payloads[400:450])
    server.clock.now += 1.0
    expected = framed(payloads[:450], times)
    store = await framed_through(app, len(expected))
    assert store.frames(0, store.frame_count) == expected
    await until(lambda: app.broker.healthy, 30, "Redis takes the writes again")
    feed = app.followers[MATCH].feed  # through Redis: every frame, once, in order
    await until(lambda: (feed.available() or 0) >= len(expected), 30, "every frame through Redis")
    assert feed.oldest() == 0 and feed.frames_bytes(0, len(expected)) == (
        store.frames_bytes(0, len(expected))
    )
    assert "a step failed" not in caplog.text and "seq must be" not in caplog.text


async def test_a_stream_another_process_took_over_is_left_to_it(server, payloads, caplog):
    app = await server.start()
    times = await server.play(app, payloads[:100])
    server.clock.now += 1.0
    await framed_through(app, len(framed(payloads[:100], times)))
    run = app.ingest.runs[MATCH]
    # A second ingest of the same match (a misconfiguration) starts its own incarnation.
    theirs = await app.broker.start_stream(MATCH, {"map": "de_mirage", "tickrate": RATE})
    times += await server.play(app, payloads[100:200])
    server.clock.now += 1.0
    await until(lambda: run.fenced, 10, "the run fenced off")
    assert "another process took over" in caplog.text
    times += await server.play(app, payloads[200:250])
    server.clock.now += 1.0
    expected = framed(payloads[:250], times)
    await until(lambda: store_of(app).frame_count == len(expected), 10, "frames go on here")
    assert (await app.broker.streams())[MATCH].epoch == theirs  # not fought for
    assert run.journal.path.exists()  # still journaled, and recorded at the end


async def test_fetch_events_and_rounds_of_a_match_in_play_grow_with_it(server, payloads):
    app = await server.start()
    times = await server.play(app, payloads[:100])  # warmup: no round yet
    server.clock.now += 1.0
    store = await framed_through(app, len(framed(payloads[:100], times)))
    base = f"http://127.0.0.1:{app.http_port}"

    async def events() -> list[dict]:
        async with server.session.get(f"{base}/recordings/{MATCH}/events") as response:
            return (await response.json())["events"]

    async with connect(f"ws://127.0.0.1:{app.port}/replay/{MATCH}") as ws:
        hello = msgpack.unpackb(await ws.recv())
        assert hello["live"] and hello["rounds"] == [] and hello["stream"]["rounds"] == []
        info = SourceInfo("de_mirage", RATE, "gsi:m", "", "gsi")
        written = write_recording(server.folder / "check.eeict", info, store.frames(0, 10**6))
        assert await events() == written["events"]  # warmup kills: no round yet
        newest = int(store.ticks[-1])
        # A range reaching past the newest frame is served as the frames are made.
        await ws.send(msgpack.packb({"type": "fetch", "id": 7, "from_tick": newest - 63,
                                     "to_tick": newest + 2000, "credit": 4000}))  # fmt: skip
        fetched: list[dict] = []

        async def read_fetch() -> dict:
            while True:
                message = msgpack.unpackb(await ws.recv())
                if message["type"] == "ticks" and message.get("fetch") == 7:
                    fetched.extend(message["frames"])
                elif message["type"] == "fetch_end":
                    return message

        reading = asyncio.create_task(read_fetch())
        await until(lambda: len(fetched) == 64, 10, "the frames that exist")
        assert not reading.done()  # waiting for the rest
        times += await server.play(app, payloads[100:300])  # round 1 starts at post 116
        server.clock.now += 1.0
        end = await asyncio.wait_for(reading, 20)
    assert end["count"] == 2064 and [f["tick"] for f in fetched] == list(
        range(newest - 63, newest + 2001)
    )
    assert fetched == store.frames(int(newest - 63), int(newest + 2001))
    # Round starts and the events index grew with the match, as a recording has them.
    expected = framed(payloads[:300], times)
    await framed_through(app, len(expected))
    rounds = store.meta["round_starts"]
    assert len(rounds) == 1
    written = write_recording(server.folder / "check.eeict", info, expected)
    assert (
        await events() == written["events"]
        and {"type": "round_start", "tick": rounds[0]} in (written["events"])
    )
    async with connect(f"ws://127.0.0.1:{app.port}/replay/{MATCH}") as ws:
        again = msgpack.unpackb(await ws.recv())
    assert again["rounds"] == [{"round": 1, "tick": rounds[0]}]
    assert again["stream"]["rounds"] == rounds and again["stream"]["frame_count"] == len(expected)


async def test_demodata_plays_the_match_in_play(server, payloads):
    app = await server.start()
    times = await server.play(app, payloads[:200])
    server.clock.now += 1.0
    store = await framed_through(app, len(framed(payloads[:200], times)))
    received: list[dict] = []
    async with connect(f"ws://127.0.0.1:{app.port}/demodata") as ws:

        async def read() -> None:  # as the old client: 16 ticks, then ask for more
            while True:
                received.append(json.loads(await ws.recv()))
                if len(received) % 16 == 0:
                    await ws.send(json.dumps({"request": "more ticks"}))

        reading = asyncio.create_task(read())
        # It starts at the newest frame: its ticks come as the game posts on.
        for payload in payloads[200:260]:
            times += await server.play(app, [payload])
            await asyncio.sleep(0.03)
            if len(received) >= 64:
                break
        await until(lambda: len(received) >= 64, 10, "64 ticks")
        reading.cancel()
    ticks = [t["tick"] for t in received]
    assert ticks == sorted(set(ticks)) and ticks[0] >= len(framed(payloads[:200], times[:200])) - 1
    for burst in range(0, 64, 16):  # each burst is 16 consecutive ticks
        assert ticks[burst : burst + 16] == list(range(ticks[burst], ticks[burst] + 16))
    assert received[:64] == [store.frame(tick) for tick in ticks[:64]]
    assert {p["name"] for t in received for p in t["players"]} <= {
        p["name"] for p in payloads[259]["allplayers"].values()
    }
