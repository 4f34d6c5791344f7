"""The broker: frames per second through each engine, read latency and Redis CPU.

For each engine (in-memory, Redis Streams on a redis-server started here on a free loopback
port, or ``--redis-url``) and each number of readers:

- throughput: one publisher sends ``--frames`` frames of a 10-player match (3.3 KB of msgpack
  each) in bursts of ``--burst`` as fast as the slowest reader follows (never more than half
  the window ahead of it); frames/s = frames / time until every reader has the last one;
- latency: one frame per publish at each ``--rates`` frames/s for ``--duration`` s; latency =
  time a reader got the frame - time it was published (the same host clock; each frame
  carries its publish time in its first 8 bytes).

Redis readers run in processes of their own, as server replicas would; in-memory readers are
tasks beside the publisher (that engine is one process by definition). Redis CPU is the delta
of ``INFO cpu`` (user + sys) over each run, in % of one core; publisher CPU likewise from
getrusage.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import struct
import sys
import time
from pathlib import Path
from typing import Any

import _support as sup
import msgpack
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from server.broker import Broker, BrokerUnavailable, make_broker  # noqa: E402

STAMP = struct.Struct("<d")  # publish time at the front of every frame
READ_BLOCK_S = 1.0
RUN_TIMEOUT_S = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", nargs="+", choices=["memory", "redis"],
                        default=["memory", "redis"])  # fmt: skip
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--frames", type=int, default=20000, help="frames per throughput run")
    parser.add_argument("--burst", type=int, default=8, help="frames per publish (throughput)")
    parser.add_argument("--rates", type=float, nargs="+", default=[64.0, 640.0],
                        help="frames/s of the latency runs (64 = one live match)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per latency run")
    parser.add_argument("--window", type=int, default=4096, help="frames kept per stream")
    parser.add_argument("--redis-url", help="use this Redis instead of starting redis-server")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def match_frame() -> bytes:
    """One frame of a 10-player match with every field, as the ingest would publish it."""
    return msgpack.packb(next(sup._fake_frames(1)))


def stamped(payload: bytes) -> bytes:
    return STAMP.pack(time.time()) + payload


# -- readers -----------------------------------------------------------------------------------


async def read_stream(
    broker: Broker, stream: str, last_seq: int, progress: Any, index: int
) -> dict[str, Any]:
    """Read ``stream`` until ``last_seq``; latencies of every frame, and when the last came.
    ``progress[index]`` tells the publisher how far this reader got."""
    latencies: list[float] = []
    after, epoch, lost = -1, None, 0
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while after < last_seq:
        if time.monotonic() > deadline:
            raise RuntimeError(f"reader stuck at seq {after} of {last_seq}")
        try:
            result = await broker.read(stream, after, epoch, block_s=READ_BLOCK_S)
        except BrokerUnavailable:
            continue
        now = time.time()
        if result.epoch is None:
            continue
        epoch = result.epoch
        lost += result.lost
        for _, data in result.frames:
            latencies.append(now - STAMP.unpack_from(data)[0])
        if result.frames:
            after = result.frames[-1][0]
            progress[index] = after
    return {"latencies": latencies, "done": time.time(), "lost": lost}


def reader_process(
    url: str, window: int, stream: str, last_seq: int, progress: Any, index: int, results: Any
) -> None:
    """One replica: its own process, its own connections."""
    sup.die_with_parent(os.getppid())

    async def main() -> dict[str, Any]:
        broker = make_broker(url, window)
        try:
            return await read_stream(broker, stream, last_seq, progress, index)
        finally:
            await broker.close()

    results.put(sup.run_async(main()))


# -- runs --------------------------------------------------------------------------------------


async def redis_cpu(url: str | None) -> float:
    if url is None:
        return 0.0
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_run(
    engine: str,
    url: str | None,
    args: argparse.Namespace,
    readers: int,
    stream: str,
    publish: Any,
    last_seq: int,
) -> dict[str, Any]:
    """Start readers, run ``publish(broker, epoch)``, collect what the readers saw."""
    broker = make_broker(url, args.window)
    workers: list[Any] = []
    tasks: list[asyncio.Task[dict[str, Any]]] = []
    context = mp.get_context("spawn")
    progress = context.Array("q", [-1] * readers, lock=False)  # each reader's last seq
    try:
        epoch = await broker.start_stream(stream, {"map": "de_mirage", "tickrate": 64})
        if engine == "memory":
            tasks = [
                asyncio.create_task(read_stream(broker, stream, last_seq, progress, i))
                for i in range(readers)
            ]
        else:
            queue = context.Queue()
            workers = [
                context.Process(
                    target=reader_process,
                    args=(url, args.window, stream, last_seq, progress, i, queue),
                )
                for i in range(readers)
            ]
            for worker in workers:
                worker.start()
            await wait_readers_blocked(url, readers)
        cpu0, redis0, start = own_cpu(), await redis_cpu(url), time.time()
        await publish(broker, epoch, progress)
        if tasks:
            seen = await asyncio.wait_for(asyncio.gather(*tasks), RUN_TIMEOUT_S)
        else:
            seen = await asyncio.to_thread(sup.collect, queue, workers, RUN_TIMEOUT_S)
        end = max(item["done"] for item in seen)
        cpu1, redis1 = own_cpu(), await redis_cpu(url)
    finally:
        for task in tasks:
            task.cancel()
        sup.stop_workers(workers, 5)
        await broker.close()
    wall = end - start
    latencies = [value for item in seen for value in item["latencies"]]
    return {
        "wall_s": wall,
        "frames_per_s": (last_seq + 1) / wall,
        "lost": sum(item["lost"] for item in seen),
        "p50_ms": 1000 * sup.percentile(latencies, 50),
        "p99_ms": 1000 * sup.percentile(latencies, 99),
        "publisher_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "redis_cpu_pct": 100 * (redis1 - redis0) / wall,
    }


async def wait_readers_blocked(url: str | None, readers: int) -> None:
    """Until every reader process is connected and waiting, so none starts late."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 60
        while (await client.info("clients"))["blocked_clients"] < readers:
            if time.monotonic() > deadline:
                raise RuntimeError("reader processes did not start within 60 s")
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def throughput_publisher(stream: str, frames: int, burst: int, payload: bytes, ahead: int):
    """As fast as the slowest reader follows: never more than ``ahead`` frames in front of it
    (so nothing falls out of the window and frames/s is a rate the readers sustain)."""

    async def publish(broker: Broker, epoch: str, progress: Any) -> None:
        for first in range(0, frames, burst):
            # progress is shared memory written by other processes: polled, no event to wait on
            while first - min(progress) > ahead:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)
            frames_ = [(seq, stamped(payload)) for seq in range(first, first + burst)]
            await broker.publish_many(stream, epoch, frames_)
            await asyncio.sleep(0)  # in-process readers run too

    return publish


def paced_publisher(stream: str, rate: float, count: int, payload: bytes):
    async def publish(broker: Broker, epoch: str, progress: Any) -> None:
        start = time.monotonic()
        for seq in range(count):
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await broker.publish(stream, epoch, seq, stamped(payload))

    return publish


async def measure(args: argparse.Namespace, url: str | None) -> list[dict[str, Any]]:
    payload = match_frame()
    plan = []
    for engine in args.engines:
        for readers in args.readers:
            plan.append((engine, readers, "throughput", None))
            plan += [(engine, readers, "latency", rate) for rate in args.rates]
    results = []
    for n, (engine, readers, kind, rate) in enumerate(tqdm(plan, desc="runs", unit="run")):
        engine_url = url if engine == "redis" else None
        stream = f"bench-{os.getpid()}-{n}"
        if kind == "throughput":
            count = args.frames - args.frames % args.burst
            ahead = args.window // 2
            publish = throughput_publisher(stream, count, args.burst, payload, ahead)
        else:
            count = int(rate * args.duration)
            publish = paced_publisher(stream, rate, count, payload)
        outcome = await one_run(engine, engine_url, args, readers, stream, publish, count - 1)
        outcome.update(engine=engine, readers=readers, kind=kind, rate=rate)
        results.append(outcome)
        tqdm.write(summary(outcome))
    return results


def summary(outcome: dict[str, Any]) -> str:
    what = "as fast as possible" if outcome["kind"] == "throughput" else f"{outcome['rate']:g}/s"
    return (
        f"{outcome['engine']:>6} {outcome['readers']} reader(s) {what:>20}: "
        f"{outcome['frames_per_s']:>9,.0f} frames/s, p50 {outcome['p50_ms']:.2f} ms, "
        f"p99 {outcome['p99_ms']:.2f} ms, lost {outcome['lost']}, "
        f"publisher {outcome['publisher_cpu_pct']:.0f}% CPU, "
        f"redis {outcome['redis_cpu_pct']:.0f}% CPU"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sup.exit_on_sigterm()
    url, server = args.redis_url, None
    if "redis" in args.engines and url is None:
        import tempfile

        from redis_server import RedisServer

        folder = Path(tempfile.mkdtemp(prefix="eeict-bench-redis-"))
        server = RedisServer(folder)
        server.start()
        url = server.url
    try:
        results = sup.run_async(measure(args, url))
    finally:
        if server is not None:
            server.stop()
    rows = []
    for item in results:
        label = f"{item['engine']}, {item['readers']} reader(s), " + (
            f"burst {args.burst}, as fast as readers follow"
            if item["kind"] == "throughput"
            else f"{item['rate']:g}/s"
        )
        rows.append(sup.row(f"{label}: frames/s", item["frames_per_s"], "frames/s"))
        if item["kind"] == "latency":  # unpaced, latency is only the publisher's lead
            rows.append(sup.row(f"{label}: latency p50", item["p50_ms"], "ms"))
            rows.append(sup.row(f"{label}: latency p99", item["p99_ms"], "ms"))
        if item["engine"] == "redis":
            rows.append(sup.row(f"{label}: redis CPU", item["redis_cpu_pct"], "% of a core"))
        rows.append(sup.row(f"{label}: publisher CPU", item["publisher_cpu_pct"], "% of a core"))
        rows.append(
            sup.row(f"{label}: frames lost", item["lost"], "frames", "0", item["lost"] == 0)
        )
    sup.print_table("Broker (frames of a 10-player match, 3.3 KB each)", rows)
    sup.write_json(args.json, {"title": "Broker", "rows": rows, "runs": results})


if __name__ == "__main__":
    main()
