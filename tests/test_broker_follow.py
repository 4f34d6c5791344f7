"""follow(): a replica's reading loop, on both engines and through a Redis outage."""

from __future__ import annotations

import asyncio

from broker_engines import (  # noqa: F401 (fixtures)
    WAIT_S,
    engine_fixture,
    own_redis_fixture,
    shared_redis_fixture,
)

from server.broker import follow
from server.broker.redis_streams import RedisBroker

META = {"map": "de_mirage", "tickrate": 64}


def frames(first: int, count: int) -> list[tuple[int, bytes]]:
    return [(seq, b"f%d" % seq) for seq in range(first, first + count)]


async def next_update(updates):
    return await asyncio.wait_for(anext(updates), WAIT_S)


async def test_follow_yields_frames_resets_and_state_changes_only(engine):
    broker = engine.broker()
    epoch = await broker.start_stream("m", META)
    updates = follow(broker, "m", block_s=0.5)
    try:
        first = await next_update(updates)  # the stream as found: no frames yet
        assert (first.healthy, first.result.epoch, first.result.frames) == (True, epoch, [])

        await broker.publish_many("m", epoch, frames(0, 5))
        update = await next_update(updates)
        assert update.result.frames == frames(0, 5)

        pending = asyncio.ensure_future(next_update(updates))
        await engine.wait_blocked()
        assert not pending.done()  # nothing new: nothing yielded
        await broker.mark("m", epoch, stale=True)
        update = await pending
        assert (update.result.frames, update.result.state) == ([], {"stale": True})

        new = await broker.start_stream("m", META)
        await broker.publish_many("m", new, frames(0, 2))
        update = await next_update(updates)
        assert (update.result.epoch, update.result.reset) == (new, True)
        got = list(update.result.frames)
        while len(got) < 2:
            got += (await next_update(updates)).result.frames
        assert got == frames(0, 2)  # positions of the new epoch, from its start
        await broker.publish("m", new, 2, b"f2")
        update = await next_update(updates)
        assert (update.result.frames, update.result.reset) == ([(2, b"f2")], False)
    finally:
        await updates.aclose()


async def test_follow_reports_an_outage_once_then_continues_with_a_counted_gap(own_redis):
    ingest = RedisBroker(own_redis.url, 1000, op_timeout_s=0.3, retry_min_s=0.02)
    replica = RedisBroker(own_redis.url, 1000, op_timeout_s=0.3, retry_min_s=0.02)
    updates = follow(replica, "m", block_s=0.3, retry_max_s=0.2)
    try:
        epoch = await ingest.start_stream("m", META)
        await ingest.publish_many("m", epoch, frames(0, 10))
        got = []
        while len(got) < 10:
            got += (await next_update(updates)).result.frames
        assert got == frames(0, 10)

        await ingest.publish_many("m", epoch, frames(10, 5))  # lost with Redis's data
        own_redis.stop()
        down = await next_update(updates)
        assert (down.healthy, down.result) == (False, None)
        own_redis.start()  # same port, empty
        await ingest.publish_many("m", epoch, frames(15, 5))
        got, lost = [], 0
        while len(got) < 5:
            update = await next_update(updates)
            assert update.healthy
            if update.result.epoch is not None:
                assert (update.result.epoch, update.result.reset) == (epoch, False)
            got += update.result.frames
            lost += update.result.lost
        assert (got, lost) == (frames(15, 5), 5)
    finally:
        await updates.aclose()
        await ingest.close()
        await replica.close()
