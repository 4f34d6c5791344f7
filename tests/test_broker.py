"""The broker contract, run against both engines: in-memory and a real redis-server."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from broker_engines import (  # noqa: F401 (fixtures)
    engine_fixture,
    shared_redis_fixture,
    wait_for,
)

from server.broker import EpochMismatch, UnknownStream, make_broker
from server.broker.memory import MemoryBroker

META = {"map": "de_mirage", "tickrate": 64, "teams": {"t": "Orange", "ct": "Blue"}}


def frame(seq: int, size: int = 0) -> bytes:
    return msgpack.packb({"tick": 1000 + seq, "players": [], "pad": "x" * size})


def frames(first: int, count: int, size: int = 0) -> list[tuple[int, bytes]]:
    return [(seq, frame(seq, size)) for seq in range(first, first + count)]


async def test_publish_then_read_returns_the_same_bytes_in_order(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    sent = frames(0, 20)
    await broker.publish_many("m", epoch, sent[:10])
    for seq, data in sent[10:]:
        await broker.publish("m", epoch, seq, data)
    result = await broker.read("m", -1, epoch)
    assert result.frames == sent
    assert (result.epoch, result.reset, result.lost, result.last_seq) == (epoch, False, 0, 19)
    later = await broker.read("m", 14, epoch)
    assert later.frames == sent[15:]
    assert (await broker.read("m", 19, epoch)).frames == []


async def test_a_reader_without_an_epoch_reads_the_current_one(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    await broker.publish_many("m", epoch, frames(0, 5))
    result = await broker.read("m", 2, None)
    assert (result.epoch, result.reset) == (epoch, False)
    assert [seq for seq, _ in result.frames] == [3, 4]


async def test_streams_lists_epoch_meta_and_marked_state(engine):
    broker = engine.broker()
    first = await broker.start_stream("a", META)
    second = await broker.start_stream("b", {**META, "map": "de_inferno"})
    await broker.mark("a", first, stale=True, since=1234.5)
    listed = await broker.streams()
    assert set(listed) == {"a", "b"}
    assert (listed["a"].epoch, listed["a"].meta, listed["a"].state) == (
        first,
        META,
        {"stale": True, "since": 1234.5},
    )
    assert (listed["b"].epoch, listed["b"].meta["map"], listed["b"].state) == (
        second,
        "de_inferno",
        {},
    )
    await broker.mark("a", first, stale=False)
    assert (await broker.streams())["a"].state == {"stale": False, "since": 1234.5}
    assert (await broker.read("a", -1, first)).state == {"stale": False, "since": 1234.5}


async def test_a_new_epoch_is_a_reset_never_a_continuation(engine):
    broker = engine.broker()
    old = await broker.start_stream("m", META)
    await broker.publish_many("m", old, frames(0, 50))
    new = await broker.start_stream("m", META)
    assert new != old
    await broker.publish_many("m", new, frames(0, 3))
    result = await broker.read("m", 49, old)  # a reader of the old incarnation at seq 49
    assert (result.epoch, result.reset, result.lost) == (new, True, 0)
    assert [seq for seq, _ in result.frames] == [0, 1, 2]
    with pytest.raises(EpochMismatch):
        await broker.publish("m", old, 50, frame(50))
    with pytest.raises(EpochMismatch):
        await broker.mark("m", old, stale=True)


async def test_frames_beyond_the_window_are_reported_lost_with_their_count(engine):
    window = 200
    broker = engine.broker(window=window)
    epoch = await broker.start_stream("m", META)
    total = 1000
    for first in range(0, total, 50):  # bursts, as the ingest publishes them
        await broker.publish_many("m", epoch, frames(first, 50, size=40))
    got: list[int] = []
    lost = 0
    after = -1
    while True:
        result = await broker.read("m", after, epoch)
        if not result.frames:
            break
        lost += result.lost
        got += [seq for seq, _ in result.frames]
        after = result.frames[-1][0]
    assert window <= len(got) <= window + engine.trim_slack
    assert got == list(range(total - len(got), total))
    assert lost == total - len(got)  # every frame is either read or counted, once


async def test_seqs_the_publisher_skipped_count_as_lost(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    await broker.publish_many("m", epoch, [(0, frame(0)), (1, frame(1)), (5, frame(5))])
    result = await broker.read("m", 1, epoch)
    assert ([seq for seq, _ in result.frames], result.lost) == ([5], 3)


async def test_an_ended_stream_leaves_the_catalog_and_is_forgotten_after_its_keep_time(engine):
    keep_s = 0.5
    broker = engine.broker(ended_keep_s=keep_s)
    epoch = await broker.start_stream("m", META)
    other = await broker.start_stream("other", META)
    await broker.publish_many("m", epoch, frames(0, 10))
    await broker.mark("m", epoch, ended=True)
    assert set(await broker.streams()) == {"other"}  # no replica starts following it again
    result = await broker.read("m", 4, epoch)  # a replica still reading its end gets it
    assert [seq for seq, _ in result.frames] == list(range(5, 10))
    assert result.state == {"ended": True}
    await wait_for(lambda: _is_gone(broker.read("m", 9, epoch)), f"forgotten after {keep_s} s")
    # The stream in play is untouched, and the name can start again, kept as long as it plays.
    assert (await broker.read("other", -1, other)).epoch == other
    again = await broker.start_stream("m", META)
    await broker.publish("m", again, 0, frame(0))
    await asyncio.sleep(keep_s * 2)
    assert (await broker.read("m", -1, again)).frames == [(0, frame(0))]
    assert set(await broker.streams()) == {"m", "other"}


async def _is_gone(reading) -> bool:
    return (await reading).epoch is None


async def test_a_reader_that_did_not_know_the_epoch_is_told_its_meta(engine):
    broker = engine.broker()
    old = await broker.start_stream("m", META)
    assert (await broker.read("m", -1, None)).meta == META  # a reader that just started
    assert (await broker.read("m", -1, old)).meta is None  # nothing new to tell
    new = await broker.start_stream("m", {**META, "map": "de_inferno"})
    result = await broker.read("m", -1, old)
    assert (result.epoch, result.reset, result.meta["map"]) == (new, True, "de_inferno")


async def test_a_blocked_read_wakes_on_publish(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    await broker.publish_many("m", epoch, frames(0, 3))
    reader = asyncio.create_task(broker.read("m", 2, epoch, block_s=30))
    await engine.wait_blocked()
    assert not reader.done()
    await broker.publish("m", epoch, 3, frame(3))
    result = await asyncio.wait_for(reader, 10)
    assert result.frames == [(3, frame(3))]


async def test_a_blocked_read_wakes_on_a_new_epoch_and_on_a_mark(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    reader = asyncio.create_task(broker.read("m", -1, epoch, block_s=30))
    await engine.wait_blocked()
    await broker.mark("m", epoch, stale=True)
    result = await asyncio.wait_for(reader, 10)
    assert (result.frames, result.state, result.reset) == ([], {"stale": True}, False)

    reader = asyncio.create_task(broker.read("m", -1, epoch, block_s=30))
    await engine.wait_blocked()
    new = await broker.start_stream("m", META)
    result = await asyncio.wait_for(reader, 10)
    assert (result.epoch, result.reset, result.frames) == (new, True, [])


async def test_a_blocked_read_on_an_unknown_stream_wakes_when_it_starts(engine):
    broker = engine.broker()
    result = await broker.read("later", -1, None)
    assert (result.epoch, result.frames) == (None, [])
    reader = asyncio.create_task(broker.read("later", -1, None, block_s=30))
    await engine.wait_blocked()
    epoch = await broker.start_stream("later", META)
    result = await asyncio.wait_for(reader, 10)
    assert (result.epoch, result.frames) == (epoch, [])


async def test_a_read_with_nothing_new_returns_empty_after_its_block_time(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    result = await asyncio.wait_for(broker.read("m", -1, epoch, block_s=0.2), 10)
    assert (result.epoch, result.frames, result.lost) == (epoch, [], 0)


async def test_bad_input_is_refused_with_a_clear_error(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    await broker.publish("m", epoch, 5, frame(5))
    with pytest.raises(ValueError, match="above 5"):
        await broker.publish("m", epoch, 5, frame(5))
    with pytest.raises(ValueError, match="above 6"):
        await broker.publish_many("m", epoch, [(6, frame(6)), (6, frame(6))])
    with pytest.raises(TypeError, match="bytes"):
        await broker.publish("m", epoch, 7, "text")  # type: ignore[arg-type]
    with pytest.raises(UnknownStream):
        await broker.publish("nope", epoch, 0, frame(0))
    with pytest.raises(TypeError, match="JSON"):
        await broker.start_stream("x", {"when": object()})
    with pytest.raises(TypeError, match="JSON"):
        await broker.mark("m", epoch, stale={1, 2})
    # nothing of the refused calls reached the stream
    assert (await broker.read("m", -1, epoch)).frames == [(5, frame(5))]


async def test_engines_report_healthy_when_their_backend_answers(engine):
    broker = engine.broker()
    assert await broker.ping()
    assert broker.healthy


async def test_make_broker_picks_the_engine_from_the_url():
    assert isinstance(make_broker(None), MemoryBroker)
    assert make_broker(None, window=10).window == 10
    from server.broker.redis_streams import RedisBroker

    redis_broker = make_broker("redis://127.0.0.1:1/0")
    try:
        assert isinstance(redis_broker, RedisBroker)
    finally:
        await redis_broker.close()
    with pytest.raises(ValueError, match=r"redis://.*'http://:\*\*\*@127.0.0.1:6379'"):
        make_broker("http://:secret@127.0.0.1:6379")
