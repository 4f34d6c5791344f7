"""The Redis engine under faults, with a real redis-server of the test's own: restarted without
its data, frozen (unreachable) for a while, two replicas reading, two ingests competing."""

from __future__ import annotations

import asyncio
import time

import pytest
from broker_engines import (  # noqa: F401 (fixtures)
    WAIT_S,
    info_field,
    own_redis_fixture,
    require_redis_server,
    wait_for,
)
from redis_server import redis_server

from server.broker import BrokerError, BrokerUnavailable, EpochMismatch, ReadResult
from server.broker.redis_streams import RedisBroker

META = {"map": "de_mirage", "tickrate": 64}
OP_TIMEOUT_S = 0.3  # short, so a frozen Redis is noticed quickly


def frames(first: int, count: int) -> list[tuple[int, bytes]]:
    return [(seq, b"frame-%d" % seq) for seq in range(first, first + count)]


@pytest.fixture
async def brokers(own_redis):
    """Factory: RedisBrokers on the test's own Redis (each one as a separate process would
    be: its own connections); all closed after."""
    made: list[RedisBroker] = []

    def make(window: int = 1000) -> RedisBroker:
        broker = RedisBroker(
            own_redis.url, window, op_timeout_s=OP_TIMEOUT_S, retry_min_s=0.02, retry_max_s=0.2
        )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


async def read_until(broker: RedisBroker, after: int, epoch: str, last: int) -> list[ReadResult]:
    """Read (riding out outages, as the server's reader does) until frame ``last`` arrived."""
    results: list[ReadResult] = []
    deadline = time.monotonic() + WAIT_S
    while after < last:
        if time.monotonic() > deadline:
            pytest.fail(f"frame {last} never arrived (reader at {after})")
        try:
            result = await broker.read("m", after, epoch, block_s=0.5)
        except BrokerUnavailable:
            continue
        assert not result.reset, "the same incarnation must never look like a reset"
        if result.frames:
            results.append(result)
            after = result.frames[-1][0]
    return results


async def test_redis_restarted_without_its_data_reports_the_lost_frames_as_a_gap(
    own_redis, brokers
):
    ingest, replica = brokers(), brokers()
    epoch = await ingest.start_stream("m", META)
    await ingest.publish_many("m", epoch, frames(0, 100))
    assert len(await read_until(replica, -1, epoch, 99)) >= 1
    await ingest.publish_many("m", epoch, frames(100, 20))  # the replica never reads these
    own_redis.restart(keep_data=False)

    await ingest.publish_many("m", epoch, frames(120, 30))  # the ingest goes on
    results = await read_until(replica, 99, epoch, 149)
    got = [seq for result in results for seq, _ in result.frames]
    assert got == list(range(120, 150))
    assert results[0].lost == 20  # the frames Redis lost, counted, not skipped silently
    assert sum(result.lost for result in results) == 20
    listed = await replica.streams()
    assert (listed["m"].epoch, listed["m"].meta) == (epoch, META)  # restored, same incarnation
    await wait_for(lambda: ingest.healthy and replica.healthy, "both healthy again")


async def test_redis_unreachable_for_a_while_is_unhealthy_then_reading_continues(
    own_redis, brokers
):
    ingest, replica = brokers(), brokers()
    epoch = await ingest.start_stream("m", META)
    await ingest.publish_many("m", epoch, frames(0, 10))
    await read_until(replica, -1, epoch, 9)

    own_redis.pause()
    await ingest.publish_many("m", epoch, frames(10, 40))  # times out: kept for later
    await ingest.mark("m", epoch, stale=True)
    with pytest.raises(BrokerUnavailable):
        await replica.read("m", 9, epoch, block_s=0.2)
    assert not ingest.healthy and not replica.healthy
    for refused in (
        replica.streams(),
        replica.history("m", 0, 10, epoch),
        ingest.start_stream("other", META),
    ):
        with pytest.raises(BrokerUnavailable):  # at once, not after a timeout each
            await asyncio.wait_for(refused, OP_TIMEOUT_S)
    assert not await replica.ping()
    await ingest.publish_many("m", epoch, frames(50, 10))  # still down: kept, never raises

    own_redis.resume()
    await wait_for(lambda: ingest.healthy and replica.healthy, "both healthy again")
    results = await read_until(replica, 9, epoch, 59)
    got = [seq for result in results for seq, _ in result.frames]
    assert got == list(range(10, 60))  # everything published meanwhile, once, in order
    assert sum(result.lost for result in results) == 0
    assert (await replica.read("m", 59, epoch)).state == {"stale": True}


async def test_an_outage_longer_than_the_window_loses_only_the_oldest_frames(own_redis, brokers):
    ingest, replica = brokers(window=100), brokers(window=100)
    epoch = await ingest.start_stream("m", META)
    await ingest.publish("m", epoch, 0, b"first")
    await read_until(replica, -1, epoch, 0)
    own_redis.pause()
    await ingest.publish_many("m", epoch, frames(1, 10))  # notices the outage
    for first in range(11, 301, 10):
        await ingest.publish_many("m", epoch, frames(first, 10))  # more than the window waits
    own_redis.resume()
    results = await read_until(replica, 0, epoch, 300)
    got = [seq for result in results for seq, _ in result.frames]
    lost = sum(result.lost for result in results)
    # The frames that waited here beyond the window are gone, the newest window of them
    # arrives; the call that first timed out may still have landed once Redis woke up (its
    # command was already in the socket). Either way each frame is read or counted, once.
    assert got == sorted(set(got))
    assert set(range(201, 301)) <= set(got)
    assert lost == 300 - len(got)
    assert ingest.dropped_frames == 200  # what did not fit the window, as the ingest counted


async def test_two_replicas_read_identical_bytes_for_identical_seqs(brokers):
    ingest, first, second = brokers(), brokers(), brokers()
    epoch = await ingest.start_stream("m", META)

    async def read_all(replica: RedisBroker) -> list[tuple[int, bytes]]:
        results = await read_until(replica, -1, epoch, 503)
        return [item for result in results for item in result.frames]

    readers = asyncio.gather(read_all(first), read_all(second))
    for start in range(0, 504, 8):  # 63 bursts of 8
        await ingest.publish_many(
            "m", epoch, [(seq, bytes([seq % 251]) * 40) for seq in range(start, start + 8)]
        )
    one, two = await asyncio.wait_for(readers, WAIT_S)
    assert one == two
    assert [seq for seq, _ in one] == list(range(504))


async def test_a_second_ingest_of_the_same_stream_fences_off_the_first(brokers):
    old_ingest, new_ingest, replica = brokers(), brokers(), brokers()
    old = await old_ingest.start_stream("m", META)
    await old_ingest.publish_many("m", old, frames(0, 10))
    new = await new_ingest.start_stream("m", META)
    with pytest.raises(EpochMismatch):
        await old_ingest.publish("m", old, 10, b"late")
    await new_ingest.publish("m", new, 0, b"new")
    result = await replica.read("m", 9, old)
    assert (result.epoch, result.reset, result.frames) == (new, True, [(0, b"new")])


async def test_redis_restarted_with_its_data_continues_with_nothing_lost():
    require_redis_server()
    with redis_server(persist=True) as server:
        ingest = RedisBroker(server.url, 1000, op_timeout_s=OP_TIMEOUT_S, retry_min_s=0.02)
        replica = RedisBroker(server.url, 1000, op_timeout_s=OP_TIMEOUT_S, retry_min_s=0.02)
        try:
            epoch = await ingest.start_stream("m", META)
            await ingest.publish_many("m", epoch, frames(0, 30))
            await read_until(replica, -1, epoch, 9)
            server.restart(keep_data=True)  # SIGTERM: Redis writes its snapshot, then reloads it
            await ingest.publish_many("m", epoch, frames(30, 10))
            results = await read_until(replica, 9, epoch, 39)
            got = [seq for result in results for seq, _ in result.frames]
            assert got == list(range(10, 40))
            assert sum(result.lost for result in results) == 0
        finally:
            await ingest.close()
            await replica.close()


async def test_frames_redis_refuses_raise_and_wait_until_it_takes_them(own_redis, brokers):
    ingest, replica = brokers(), brokers()
    epoch = await ingest.start_stream("m", META)
    await ingest.publish("m", epoch, 0, b"small")
    used = int(info_field(own_redis, "memory", "used_memory"))
    assert own_redis.command(b"CONFIG", b"SET", b"maxmemory", str(used + 200_000).encode())
    big = b"x" * 50_000
    with pytest.raises(BrokerError, match="maxmemory"):
        for seq in range(1, 20):  # 1 MB: over the bound on the way
            await ingest.publish("m", epoch, seq, big)
    refused_at = seq
    assert own_redis.command(b"CONFIG", b"SET", b"maxmemory", b"0") == b"+OK"
    await ingest.publish("m", epoch, refused_at + 1, b"after")
    results = await read_until(replica, -1, epoch, refused_at + 1)
    got = [seq for result in results for seq, _ in result.frames]
    assert got == list(range(refused_at + 2))  # the refused frames waited, none was dropped
    assert sum(result.lost for result in results) == 0
