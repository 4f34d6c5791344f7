"""The Redis engine under faults, with a real redis-server of the test's own: restarted without
its data, frozen (unreachable) for a while, refusing writes (maxmemory), two replicas reading,
two ingests competing; what an ended stream leaves behind; the password kept out of logs."""

from __future__ import annotations

import asyncio
import logging
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

from server.broker import BrokerUnavailable, EpochMismatch, ReadResult, UnknownStream
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
    with pytest.raises(BrokerUnavailable, match="unreachable"):  # at once, not after a timeout
        await asyncio.wait_for(replica.streams(), OP_TIMEOUT_S)
    assert not await replica.ping()
    # The writing side never fails for the outage: a match that starts now waits here too.
    other = await asyncio.wait_for(ingest.start_stream("other", META), OP_TIMEOUT_S)
    await ingest.publish_many("other", other, frames(0, 5))
    await ingest.publish_many("m", epoch, frames(50, 10))  # still down: kept, never raises

    own_redis.resume()
    await wait_for(lambda: ingest.healthy and replica.healthy, "both healthy again")
    results = await read_until(replica, 9, epoch, 59)
    got = [seq for result in results for seq, _ in result.frames]
    assert got == list(range(10, 60))  # everything published meanwhile, once, in order
    assert sum(result.lost for result in results) == 0
    assert (await replica.read("m", 59, epoch)).state == {"stale": True}
    assert (await replica.streams())["other"].epoch == other
    assert (await replica.read("other", -1, other)).frames == frames(0, 5)


async def test_recovery_retries_until_redis_takes_what_waited(own_redis, brokers):
    """Redis back but refusing the writes that waited (maxmemory reached): the recovery keeps
    trying, keeps every frame and mark, and the broker stays unhealthy until it succeeds."""
    ingest, replica = brokers(), brokers()
    epoch = await ingest.start_stream("m", META)
    await ingest.publish_many("m", epoch, frames(0, 10))
    await read_until(replica, -1, epoch, 9)
    assert own_redis.command(b"CONFIG", b"SET", b"maxmemory", b"1") == b"+OK"  # reads only
    refused_before = oom_errors(own_redis)
    own_redis.pause()
    await ingest.publish_many("m", epoch, frames(10, 40))  # times out: kept for later
    await ingest.mark("m", epoch, stale=True)
    assert not ingest.healthy
    own_redis.resume()

    await wait_for(lambda: oom_errors(own_redis) >= refused_before + 3, "the recovery retrying")
    assert not ingest.healthy and not await ingest.ping()  # Redis answers; the writes do not
    assert (await replica.read("m", 9, epoch)).frames == []  # nothing half-written meanwhile
    await ingest.publish_many("m", epoch, frames(50, 10))  # still refused: kept, never raises

    assert own_redis.command(b"CONFIG", b"SET", b"maxmemory", b"0") == b"+OK"
    await wait_for(lambda: ingest.healthy, "healthy once redis takes the writes")
    results = await read_until(replica, 9, epoch, 59)
    got = [seq for result in results for seq, _ in result.frames]
    assert got == list(range(10, 60)) and sum(result.lost for result in results) == 0
    assert (await replica.read("m", 59, epoch)).state == {"stale": True}
    assert ingest.dropped_frames == 0


def oom_errors(server) -> int:
    """Commands Redis refused for want of memory since it started."""
    try:
        return int(info_field(server, "errorstats", "errorstat_OOM").split("=")[1].split(",")[0])
    except KeyError:
        return 0


async def test_an_ended_stream_expires_from_redis_and_leaves_the_index(own_redis, brokers):
    """What an ended match leaves in Redis: nothing after its keep time, so matches can come
    and go under maxmemory; an end marked during an outage follows the last frames."""
    ingest = RedisBroker(own_redis.url, 1000, op_timeout_s=OP_TIMEOUT_S, ended_keep_s=30)
    replica = brokers()
    try:
        epoch = await ingest.start_stream("m", META)
        await ingest.publish_many("m", epoch, frames(0, 10))
        own_redis.stop()
        await ingest.publish_many("m", epoch, frames(10, 10))  # refused connection: kept
        await ingest.mark("m", epoch, ended=True)
        own_redis.start()  # empty: the ingest restores the stream, then frames, then the end
        await wait_for(lambda: ingest.healthy, "healthy again")
        results = await read_until(replica, -1, epoch, 19)
        assert [seq for result in results for seq, _ in result.frames] == list(range(10, 20))
        assert (await replica.read("m", 19, epoch)).state == {"ended": True}
        assert await replica.streams() == {}
        keys = [f"eeict:{{m}}:{part}".encode() for part in ("info", "state", "frames", "control")]
        for key in keys:
            ttl_ms = int(own_redis.command(b"PTTL", key)[1:])
            assert 20_000 < ttl_ms <= 30_000, (key, ttl_ms)
        assert own_redis.command(b"SCARD", b"eeict:streams") == b":0"
        with pytest.raises(UnknownStream):  # done: nothing of it is kept in the ingest either
            await ingest.publish("m", epoch, 20, b"late")

        again = await ingest.start_stream("m", META)  # the same name, a new match: kept
        await ingest.publish("m", again, 0, b"new")
        for key in (keys[0], keys[2], keys[3]):
            assert own_redis.command(b"PTTL", key) == b":-1", key
        assert set(await replica.streams()) == {"m"}
    finally:
        await ingest.close()


async def test_logs_and_errors_never_show_the_redis_password(caplog):
    require_redis_server()
    secret = "pw-never-shown-4711"
    with redis_server(password=secret) as server:
        broker = RedisBroker(server.url, 100, op_timeout_s=OP_TIMEOUT_S, retry_min_s=0.02)
        try:
            epoch = await broker.start_stream("m", META)
            await broker.publish("m", epoch, 0, b"x")
            assert broker.healthy  # the password works
            server.stop()
            with caplog.at_level(logging.DEBUG):
                with pytest.raises(BrokerUnavailable) as refused:
                    await broker.read("m", 0, epoch)
                await broker.publish("m", epoch, 1, b"y")
                server.start()
                await wait_for(lambda: broker.healthy, "healthy again")
        finally:
            await broker.close()
    shown = caplog.text + str(refused.value) + repr(refused.value)
    assert "redis at redis://:***@127.0.0.1:" in shown and "unreachable" in shown
    assert secret not in shown


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


async def test_frames_redis_refuses_wait_and_go_out_once_it_takes_them(own_redis, brokers):
    ingest, replica = brokers(), brokers()
    epoch = await ingest.start_stream("m", META)
    await ingest.publish("m", epoch, 0, b"small")
    used = int(info_field(own_redis, "memory", "used_memory"))
    assert own_redis.command(b"CONFIG", b"SET", b"maxmemory", str(used + 200_000).encode())
    big = b"x" * 50_000
    for seq in range(1, 20):  # 1 MB: over the bound on the way; the publisher is not failed
        await ingest.publish("m", epoch, seq, big)
    assert not ingest.healthy  # what /readyz, /streams and eeict_broker_up report
    assert own_redis.command(b"CONFIG", b"SET", b"maxmemory", b"0") == b"+OK"
    results = await read_until(replica, -1, epoch, 19)  # no further publish needed
    got = [seq for result in results for seq, _ in result.frames]
    assert got == list(range(20))  # the refused frames waited, none was dropped
    assert sum(result.lost for result in results) == 0
    await wait_for(lambda: ingest.healthy, "healthy again")
