"""Scale-out: one ingest, 1 or N server replicas, one Redis; what a live match costs end to end.

For each replica count: a redis-server on a free loopback port, an ingest process (``--role
ingest``) and the replicas (``--role serve``), all on this machine; the shared GSI capture is
posted into the ingest by ``eeict gsi-replay`` at ``--speed``; ``--subscribers`` lean WebSocket
clients per replica watch the match for ``--duration`` seconds after a warm-up.

- delay: for the newest frame of every message a subscriber gets, receive time minus the
  moment the ingest made that frame. That moment is exact, not estimated: every frame in Redis
  starts with the time it depicts (the ingest's clock, ``made - --gsi-delay``), read back here
  with XRANGE; all processes share the host clock. "frame made -> subscriber" is the pipeline
  (framing step, Redis, the replica's read, burst wait, send); "post -> subscriber" adds the
  ``--gsi-delay`` the ingest keeps on purpose to interpolate between posts. The server's own
  ``eeict_delivery_delay_seconds`` histogram (coarse buckets) is printed beside it.
- Redis CPU: ``INFO cpu`` (user + sys) delta over the measured window, in % of one core.
- frames/s through the broker: entries Redis added to the match's stream per second (in), and
  frames the replicas read from it (out: each replica's ``eeict_broker_frames_read``, summed),
  both measured over the window; and frames/s delivered to the subscribers.
- completeness, per subscriber from its first frame to the end: frames that came twice, frames
  a ``skip`` notice announced (counted, e.g. a slow consumer moved to the live edge) and frames
  missing with no notice (silent gaps: must be 0); and connections a replica closed.
- each replica's CPU (/proc) and the bytes per second its subscribers received; the ingest's.
- Redis memory: ``MEMORY USAGE`` of the match's frames key per frame held, and what the
  4,096-frame window would take at that size.

``--redis-memory`` instead frames the whole capture as the ingest does (no servers, no
clients) and reports the frame sizes and what Redis takes for 4,096 of them, for a typical and
for the busiest stretch of the match: the sizing figure in docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import _support as sup
import redis
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from redis_server import redis_server  # noqa: E402
from server_process import ServerProcess  # noqa: E402

from server.broker.base import DEFAULT_WINDOW as WINDOW  # noqa: E402  frames Redis keeps a match

MATCH, TOKEN = "bench", "bench-token"
CAPTURE = ROOT.parent / "shared" / "gsi" / "full_game_gsi.zip"
DEPICTS = struct.Struct("<d")  # the first 8 bytes of a frame in the broker (server/follower.py)
GSI_DELAY_S = 0.75


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--subscribers", type=int, default=200, help="per replica")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--speed", type=float, default=1.0, help="gsi-replay speed")
    parser.add_argument("--capture", type=Path, default=CAPTURE)
    parser.add_argument(
        "--redis-memory", action="store_true",
        help="measure what Redis holds per match from the whole capture's frames, then exit",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


class Subscriber:
    """Receive times of the newest frame of each ticks message, bytes and frames received
    while measuring; and, over the whole connection, every seq accounted for."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, float]] = []
        self.bytes = 0
        self.frames = 0
        self.measuring = False
        self.next_seq: int | None = None  # the seq the next frame should have
        self.duplicates = 0  # frames that came again
        self.announced = 0  # frames a skip notice said were skipped
        self.silent = 0  # frames that never came and no notice counted

    def on_message(self, client: sup.LeanClient, fields: dict, size: int, now: float) -> None:
        kind = fields.get("type")
        if kind == "hello":
            client.send({"type": "subscribe", "buffer": 64})
        elif kind == "skip" and self.next_seq is not None:
            self.announced += fields["skipped"] or 0
            self.next_seq = fields["to_seq"]
        elif kind == "ticks" and fields["count"]:
            seq, count = fields["seq"], fields["count"]
            if self.next_seq is not None and seq > self.next_seq:
                self.silent += seq - self.next_seq
            elif self.next_seq is not None and seq < self.next_seq:
                self.duplicates += min(count, self.next_seq - seq)
            self.next_seq = max(self.next_seq or 0, seq + count)
            if self.measuring:
                self.arrivals.append((seq + count - 1, now))
                self.bytes += size
                self.frames += count


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def entries_added(client: redis.Redis) -> int:
    key = f"eeict:{{{MATCH}}}:frames"
    return int(client.xinfo_stream(key)["entries-added"]) if client.exists(key) else 0


def depicted_times(client: redis.Redis, first: int, last: int) -> dict[int, float]:
    """seq -> the moment the frame depicts, from the frames Redis still holds."""
    key = f"eeict:{{{MATCH}}}:frames"
    entries = client.xrange(key, f"{first + 1}-0", f"{last + 1}-0")
    return {int(eid.split(b"-")[0]) - 1: DEPICTS.unpack_from(f[b"d"])[0] for eid, f in entries}


def metrics_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        return response.read().decode()


def delivery_histogram(replica: ServerProcess) -> dict[str, float]:
    """The server's eeict_delivery_delay_seconds buckets (cumulative counts), by ``le``."""
    out = {}
    for line in metrics_text(replica).splitlines():
        if line.startswith("eeict_delivery_delay_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def frames_read(replicas: list[ServerProcess]) -> float:
    """Frames of the match the replicas have read from the broker so far, summed."""
    prefix = f'eeict_broker_frames_read_total{{stream="{MATCH}"}} '
    return sum(
        float(line[len(prefix) :])
        for replica in replicas
        for line in metrics_text(replica).splitlines()
        if line.startswith(prefix)
    )


def redis_bytes_per_frame(client: redis.Redis) -> float:
    """What Redis takes per frame of the match it holds now (MEMORY USAGE of the whole key)."""
    key = f"eeict:{{{MATCH}}}:frames"
    held = client.xlen(key)
    return client.memory_usage(key, samples=0) / held if held else float("nan")


def histogram_quantile(buckets: dict[str, float], q: float) -> str:
    """The bucket bound the q-th percentile falls under ("<= 1.0 s")."""
    total = buckets.get("+Inf", 0.0)
    for le, count in sorted(buckets.items(), key=lambda kv: float(kv[0])):
        if total and count >= q / 100 * total:
            return f"<= {le}"
    return "n/a"


def serving(server: ServerProcess, poster: subprocess.Popen, timeout_s: float = 120) -> None:
    """Wait until ``server`` lists the match (the ingest has framed and published it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if poster.poll() is not None:
            sys.exit(f"gsi-replay exited early: {poster.stderr.read().decode()[-2000:]}")
        with urllib.request.urlopen(f"{server.http_url}/streams", timeout=10) as response:
            if any(s["id"] == MATCH for s in json.load(response)["streams"]):
                return
        time.sleep(0.2)
    sys.exit(f"the match never appeared on {server.http_url}")


def run(args: argparse.Namespace, replicas: int) -> dict[str, Any]:
    """Redis, the ingest, the replicas and gsi-replay up; then the subscribers measure."""
    with redis_server() as rs:
        ingest = ServerProcess(("--role", "ingest", "--broker", rs.url, "--gsi",
                                f"{MATCH}={TOKEN}", "--log-level", "WARNING"))  # fmt: skip
        replica = ("--role", "serve", "--broker", rs.url, "--log-level", "WARNING")
        servers = [ServerProcess((*replica, "--builtin-rounds", "2")) for _ in range(replicas)]
        poster = None
        try:
            for process in (ingest, *servers):
                process.start()
            command = [sys.executable, "-m", "server", "gsi-replay", str(args.capture), "--url",
                       f"{ingest.http_url}/gsi/{MATCH}", "--token", TOKEN, "--speed",
                       str(args.speed)]  # fmt: skip
            poster = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for server in servers:
                serving(server, poster)
            result = sup.run_async(measure(args, rs.url, ingest, servers))
        finally:
            if poster is not None:
                poster.kill()
                poster.wait()
            for process in (*servers, ingest):
                process.stop()
    return {"replicas": replicas, **result}


async def measure(
    args: argparse.Namespace, url: str, ingest: ServerProcess, servers: list[ServerProcess]
) -> dict[str, Any]:
    client = redis.Redis.from_url(url)  # a few calls between the measured windows
    subs: list[tuple[int, Subscriber]] = []
    clients = []
    for index, server in enumerate(servers):
        for _ in tqdm(range(args.subscribers), desc=f"replica {index + 1}", leave=False):
            sub = Subscriber()
            clients.append(await sup.open_lean(server.port, f"/live/{MATCH}", sub.on_message))
            subs.append((index, sub))
    await asyncio.sleep(args.warmup)
    pids = [process.proc.pid for process in (ingest, *servers)]
    cpu0 = [sup.cpu_seconds(pid) for pid in pids]
    read0 = await asyncio.to_thread(frames_read, servers)
    redis0, added0, t0 = redis_cpu(client), entries_added(client), time.monotonic()
    for _, sub in subs:
        sub.measuring = True
    await asyncio.sleep(args.duration)
    for _, sub in subs:
        sub.measuring = False
    elapsed = time.monotonic() - t0
    redis1, added1 = redis_cpu(client), entries_added(client)
    read1 = await asyncio.to_thread(frames_read, servers)
    cpu = [(sup.cpu_seconds(pid) - c) / elapsed * 100 for pid, c in zip(pids, cpu0, strict=True)]
    seqs = [seq for _, sub in subs for seq, _ in sub.arrivals]
    depicts = depicted_times(client, min(seqs), max(seqs)) if seqs else {}
    histogram = delivery_histogram(servers[0])
    lost = sum(ws.lost for ws in clients)  # connections a replica closed while measuring
    for ws in clients:
        if ws.transport is not None:
            ws.transport.close()
    delays = [now - depicts[seq] for _, sub in subs for seq, now in sub.arrivals if seq in depicts]
    pipeline = [d - GSI_DELAY_S for d in delays]
    received = [sum(s.bytes for i, s in subs if i == r) / elapsed for r in range(len(servers))]
    per_frame = redis_bytes_per_frame(client)
    return {
        "subscribers": len(subs),
        "samples": len(delays),
        "pipeline_p50_ms": sup.percentile(pipeline, 50) * 1000,
        "pipeline_p99_ms": sup.percentile(pipeline, 99) * 1000,
        "post_to_subscriber_p50_ms": sup.percentile(delays, 50) * 1000,
        "post_to_subscriber_p99_ms": sup.percentile(delays, 99) * 1000,
        "server_histogram_p50_s": histogram_quantile(histogram, 50),
        "server_histogram_p99_s": histogram_quantile(histogram, 99),
        "redis_cpu_pct": (redis1 - redis0) / elapsed * 100,
        "frames_in_per_s": (added1 - added0) / elapsed,
        "frames_out_per_s": (read1 - read0) / elapsed,
        "frames_to_subscribers_per_s": sum(s.frames for _, s in subs) / elapsed,
        "ingest_cpu_pct": cpu[0],
        "replica_cpu_pct": cpu[1:],
        "replica_mbit_s": [b * 8 / 1e6 for b in received],
        "clients_lost": lost,
        "frames_twice": sum(s.duplicates for _, s in subs),
        "frames_skipped_with_notice": sum(s.announced for _, s in subs),
        "frames_missing_silently": sum(s.silent for _, s in subs),
        "redis_bytes_per_frame": per_frame,
        "redis_mb_per_window": per_frame * WINDOW / 1e6,
    }


def redis_memory(capture: Path) -> dict[str, Any]:
    """The capture framed as the ingest frames it (64/s, each frame its 8-byte time then
    msgpack), then 4,096 frames of a typical stretch and of the busiest one put into a Redis
    stream as the broker writes them, and measured with MEMORY USAGE."""
    import msgpack

    from processing.gsi.capture import count_payloads, read_capture
    from processing.gsi.framer import Framer
    from processing.gsi.replay import paced

    framer, data, last = Framer(rate=64.0), [], 0.0
    posts = tqdm(paced(read_capture(capture)), total=count_payloads(capture), desc="framing")
    for last, payload in posts:
        framer.add(payload, last)
        data += [DEPICTS.pack(last) + msgpack.packb(frame) for frame in framer.frames(last)]
    data += [DEPICTS.pack(last) + msgpack.packb(frame) for frame in framer.frames(last + 5)]
    sizes = [len(frame) for frame in data]
    total = sum(sizes[:WINDOW])
    busiest, start = total, 0
    for end in range(WINDOW, len(sizes)):
        total += sizes[end] - sizes[end - WINDOW]
        if total > busiest:
            busiest, start = total, end - WINDOW + 1
    result: dict[str, Any] = {"frames": len(sizes), "mean_frame_bytes": sum(sizes) / len(sizes)}
    with redis_server() as rs:
        client = redis.Redis.from_url(rs.url)
        for label, first in (("typical", len(data) // 2), ("busiest", start)):
            key = f"eeict:{{{label}}}:frames"
            for seq in range(WINDOW):
                client.xadd(key, {"d": data[first + seq]}, id=f"{seq + 1}-0")
            result[f"{label}_window_data_mb"] = sum(sizes[first : first + WINDOW]) / 1e6
            result[f"{label}_window_redis_mb"] = client.memory_usage(key, samples=0) / 1e6
        client.close()
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.capture.exists():
        sys.exit(f"no capture at {args.capture}: pass --capture PATH")
    if args.redis_memory:
        result = redis_memory(args.capture)
        sup.print_table("Redis memory per match", [sup.row(k, v, "") for k, v in result.items()])
        sup.write_json(args.json, {"title": "Redis memory per match", **result})
        return
    results = [run(args, n) for n in args.replicas]
    for result in results:
        title = f"Scale-out: {result['replicas']} replica(s), {result['subscribers']} subscribers"
        rows = [sup.row(key, value if not isinstance(value, list) else
                        " / ".join(sup.format_value(v) for v in value), "")
                for key, value in result.items() if key not in ("replicas",)]  # fmt: skip
        sup.print_table(title, rows)
    sup.write_json(args.json, {"title": "Scale-out", "runs": results})


if __name__ == "__main__":
    main()
