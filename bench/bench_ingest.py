"""Live-match ingest: the shared GSI capture posted into a server while subscribers watch it.

Two runs, each against its own ``eeict serve --gsi bench=TOKEN`` on 127.0.0.1:

- load: the capture posted at ``--speed`` (default 50x) while ``--clients`` lean subscribers
  (client processes, envelope only) watch ``/live/bench``; posts handled per second and the
  post answer latency, server CPU and RSS, frames delivered and missing per subscriber.
- coach: default server settings, the capture at 1x for ``--coach-seconds``: the delay a
  coach sees, broken down.

The poster is its own process and posts like ``eeict gsi-replay`` (the same pacing and
request pattern, one request at a time, the next after the answer), recording when each
post went out and how long its answer took.

End-to-end delay at the subscriber: a few instrumented subscribers decode every frame. A
frame shows the world at time t = (first post received) + ``round_time`` (the framer's clock
starts at the first post and every frame's round_time is t minus that). The poster records
the wall time just before it sends the first post (same host clock, loopback), so the delay of
a frame = its arrival time - (first post sent + round_time); the first post's transit (under
a millisecond here) makes it at most that much too high. The server's own histogram
(``eeict_delivery_delay_seconds``, per burst, its last frame) is read from /metrics too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import _support as sup
import msgpack

from server.config import ServerConfig

MATCH, TOKEN = "bench", "bench-token"
PATH = f"/live/{MATCH}"
CAPTURE = sup.ROOT.parent / "shared" / "gsi" / "full_game_gsi.zip"
RATE = 64.0
GSI_DELAY = ServerConfig.__dataclass_fields__["gsi_delay"].default  # both runs use it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", type=Path, default=CAPTURE, help="GSI capture .zip/.txt")
    parser.add_argument("--speed", type=float, default=50.0, help="load run: capture speed")
    parser.add_argument("--clients", type=int, default=1000, help="load run: lean subscribers")
    parser.add_argument("--watchers", type=int, default=3, help="instrumented subscribers")
    parser.add_argument("--per-process", type=int, default=500, help="lean clients per process")
    parser.add_argument("--limit", type=int, help="load run: post only the first N payloads")
    parser.add_argument(
        "--coach-seconds", type=float, default=40.0,
        help="coach run: seconds of the capture at 1x with default settings (0: skip)",
    )  # fmt: skip
    parser.add_argument("--skip-load", action="store_true", help="only the coach run")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


# -- the server --------------------------------------------------------------------------------


def start_server(extra: list[str] = ()) -> sup.ServerProcess:
    import tempfile

    port, http_port = sup.free_port(), sup.free_port()
    folder = Path(tempfile.mkdtemp(prefix="eeict-bench-ingest-"))
    argv = [*sup.EEICT, "serve", "--port", str(port), "--http-port", str(http_port),
            "--recordings", str(folder), "--gsi", f"{MATCH}={TOKEN}",
            "--log-level", "WARNING", *extra]  # fmt: skip
    server = sup.ServerProcess(argv, port, "eeict", folder, http_port)
    server.wait_ready()
    return server


def delivery_histogram(server: sup.ServerProcess) -> dict[str, float]:
    """p50/p99 (bucket upper bounds) of the server's eeict_delivery_delay_seconds."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=5) as answer:
        text = answer.read().decode()
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("eeict_delivery_delay_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    if not buckets or buckets[-1][1] == 0:
        return {"server_delay_p50_le_s": float("nan"), "server_delay_p99_le_s": float("nan")}
    total = buckets[-1][1]

    def bound(q: float) -> float:
        return next(le for le, count in buckets if count >= q * total)

    return {"server_delay_p50_le_s": bound(0.5), "server_delay_p99_le_s": bound(0.99)}


# -- the poster (its own process, like eeict gsi-replay) ----------------------------------------


def poster(url: str, capture: Path, speed: float, limit: int | None, stop_s: float, out) -> None:
    sup.die_with_parent(mp.parent_process().pid)
    out.put(asyncio.run(_post(url, capture, speed, limit, stop_s)))


async def _post(url: str, capture: Path, speed: float, limit: int | None, stop_s: float) -> dict:
    import aiohttp

    from processing.gsi.capture import read_capture
    from processing.gsi.replay import paced, with_token

    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    positions: list[tuple[float, dict[int, tuple[float, float]]]] = []
    first_sent = start = first_time = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for capture_time, payload in paced(read_capture(capture, limit)):
            if not latencies:
                start, first_time = loop.time(), capture_time
            elif loop.time() - start > stop_s:
                break
            wait = start + (capture_time - first_time) / speed - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            body = json.dumps(with_token(payload, TOKEN), separators=(",", ":")).encode()
            sent, sent_wall = loop.time(), time.time()
            if not first_sent and "map" in payload:  # the framer starts at the first match post
                first_sent = sent_wall
            if speed <= 1.0:  # kept for the position cross-check (few posts at 1x)
                positions.append((sent_wall, post_positions(payload)))
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"post {len(latencies) + 1}: HTTP {response.status}")
            latencies.append(loop.time() - sent)
    seconds = loop.time() - start
    behind = max(0.0, seconds - (capture_time - first_time) / speed)
    return {"posted": len(latencies), "seconds": seconds, "first_sent": first_sent,
            "latencies": latencies, "positions": positions, "behind_s": behind}  # fmt: skip


def post_positions(payload: dict) -> dict[int, tuple[float, float]]:
    """Each player's (x, y) in a post, by steam id."""
    out = {}
    for sid, player in (payload.get("allplayers") or {}).items():
        x, y, _ = (float(v) for v in player["position"].split(","))
        out[int(sid)] = (x, y)
    return out


def position_check(arrivals: list, first_sent: float, posts: list) -> dict[str, float]:
    """How far the frame times this benchmark uses (first post sent + round_time) are from
    the times the frames' positions say: each sampled frame is matched to the pair of posted
    payloads its player positions lie between, and its time is interpolated between the
    moments those two posts were sent."""
    errors = []
    for _, _, rt, _, players in arrivals[::8]:
        t_pos = _matched_time(players, posts)
        if t_pos is not None:
            errors.append(abs(t_pos - (first_sent + rt)))
    return {"position_check_frames": len(errors),
            "position_check_p50_ms": 1000 * sup.percentile(errors, 50),
            "position_check_p99_ms": 1000 * sup.percentile(errors, 99)}  # fmt: skip


def _matched_time(players: dict, posts: list) -> float | None:
    """The send time the frame's positions interpolate to; None unless exactly one pair of
    posts fits (players standing still, e.g. in freeze time, fit many)."""
    found = []
    for (ta, a), (tb, b) in itertools.pairwise(posts):
        fs = []
        for sid, (x, y) in players.items():
            if sid not in a or sid not in b:
                break
            (xa, ya), (xb, yb) = a[sid], b[sid]
            dx, dy = xb - xa, yb - ya
            if max(abs(dx), abs(dy)) < 1.0:  # not moving: must sit still
                if abs(x - xa) > 0.05 or abs(y - ya) > 0.05:
                    break
                continue
            f = (x - xa) / dx if abs(dx) >= abs(dy) else (y - ya) / dy
            if not -0.001 <= f <= 1.001 or abs(xa + f * dx - x) + abs(ya + f * dy - y) > 0.1:
                break
            fs.append(f)
        else:
            # Strictly inside: a post's own positions may be held for seconds (nothing to
            # interpolate towards, e.g. before a round start), so they do not date a frame.
            if fs and max(fs) - min(fs) < 0.01 and 0.02 < fs[0] < 0.98:
                found.append(ta + sum(fs) / len(fs) * (tb - ta))
    return found[0] if len(found) == 1 else None


# -- lean subscribers (client processes) --------------------------------------------------------


def lean_worker(port: int, count: int, ready_q, result_q) -> None:
    sup.die_with_parent(mp.parent_process().pid)
    sup.raise_nofile(20000)
    result_q.put(sup.run_async(_lean(port, count, ready_q)))


async def _lean(port: int, count: int, ready_q) -> dict:
    done = asyncio.get_running_loop().create_future()
    stats = [{"frames": 0, "gaps": 0, "missing": 0, "next": None, "ended": False}
             for _ in range(count)]  # fmt: skip
    remaining = [count]

    def handler(s: dict):
        def on_message(client, msg: dict, size: int, now: float) -> None:
            kind = msg.get("type")
            if kind == "hello":
                client.send({"type": "subscribe", "buffer": 64})
            elif kind == "ticks":
                if s["next"] is not None and msg["seq"] != s["next"]:
                    s["gaps"] += 1
                    s["missing"] += max(0, msg["seq"] - s["next"])
                s["frames"] += msg["count"]
                s["next"] = msg["seq"] + msg["count"]
            elif kind == "end" and not s["ended"]:
                s["ended"] = True
                remaining[0] -= 1
                if remaining[0] == 0 and not done.done():
                    done.set_result(None)

        return on_message

    clients = []
    for s in stats:
        clients.append(await sup.open_lean(port, PATH, handler(s)))
    ready_q.put(count)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, 600)
    for c in clients:
        c.transport.close()
    return {"clients": count, "ended": sum(s["ended"] for s in stats),
            "frames": [s["frames"] for s in stats], "gaps": sum(s["gaps"] for s in stats),
            "missing": sum(s["missing"] for s in stats),
            "lost": sum(c.lost and not s["ended"]
                        for c, s in zip(clients, stats, strict=True))}  # fmt: skip


# -- instrumented subscribers (this process) ---------------------------------------------------


async def watch(port: int, arrivals: list, stop: asyncio.Event) -> None:
    """Every frame's (arrival time, seq, round_time, seq of its burst's last frame)."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}{PATH}", max_size=None) as ws:
        hello = msgpack.unpackb(await ws.recv())
        if hello.get("type") != "hello":
            raise RuntimeError(f"no hello: {hello}")
        await ws.send(msgpack.packb({"type": "subscribe", "buffer": 64}))
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            now = time.time()
            message = msgpack.unpackb(data)
            if message["type"] == "ticks":
                frames, seq = message["frames"], message["seq"]
                last = seq + len(frames) - 1
                for i, frame in enumerate(frames):
                    players = {p["sid"]: (p["x"], p["y"]) for p in frame["players"]}
                    arrivals.append((now, seq + i, frame["round_time"], last, players))
            elif message["type"] == "end":
                return


def delays(arrivals: list, first_sent: float, gsi_delay: float) -> dict[str, float]:
    """Subscriber-side delay (arrival - depicted time) and its parts: the fixed ``gsi_delay``,
    the wait for the rest of the frame's burst ((last seq - seq) / rate) and what is left (the
    ingest's 64 Hz framing step, broker, follower, send and the client's read)."""
    total = [now - (first_sent + rt) for now, _, rt, _, _ in arrivals]
    burst = [(last - seq) / RATE for _, seq, _, last, _ in arrivals]
    rest = [t - gsi_delay - b for t, b in zip(total, burst, strict=True)]
    return {
        "e2e_p50_s": sup.percentile(total, 50), "e2e_p99_s": sup.percentile(total, 99),
        "e2e_max_s": max(total, default=float("nan")),
        "burst_wait_p50_s": sup.percentile(burst, 50),
        "burst_wait_max_s": max(burst, default=float("nan")),
        "rest_p50_s": sup.percentile(rest, 50), "rest_p99_s": sup.percentile(rest, 99),
        "frames_watched": len(arrivals),
    }  # fmt: skip


async def wait_for_stream(server: sup.ServerProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        streams = await asyncio.to_thread(server.get_json, "/streams")
        items = streams if isinstance(streams, list) else streams.get("streams", [])
        if any(s.get("id") == MATCH for s in items):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the live match never appeared in /streams")


# -- the runs -----------------------------------------------------------------------------------


async def run(server, args, speed: float, limit, stop_s: float, clients: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results_q, ready_q, post_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    url = server.url(f"/gsi/{MATCH}")
    cpu0, t0 = sup.cpu_seconds(server.pid), time.monotonic()
    post = ctx.Process(target=poster, args=(url, args.capture, speed, limit, stop_s, post_q))
    post.start()
    workers: list = []
    lean = None
    try:
        await wait_for_stream(server)
        per = max(1, args.per_process)
        for i in range(0, clients, per):
            share = min(per, clients - i)
            w = ctx.Process(target=lean_worker, args=(server.port, share, ready_q, results_q))
            w.start()
            workers.append(w)
        stop = asyncio.Event()
        arrivals: list[list] = [[] for _ in range(args.watchers)]
        watchers = [asyncio.create_task(watch(server.port, a, stop)) for a in arrivals]
        await asyncio.to_thread(sup.collect, ready_q, workers, 120)
        ramped = time.monotonic() - t0
        posted = await asyncio.to_thread(post_q.get, True, min(stop_s, 900) + 120)
        post.join(10)
        cpu = sup.cpu_seconds(server.pid) - cpu0
        elapsed = time.monotonic() - t0
        mem = sup.memory_kb(server.pid)
        # A match cut short never ends by itself: stop the watchers once its frames are out.
        await asyncio.sleep(2.5)
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        if workers:
            lean = await asyncio.to_thread(sup.collect, results_q, workers, 120)
    finally:
        if post.is_alive():
            post.terminate()
        sup.stop_workers(workers, 10)
    lat = posted["latencies"]
    watched = [a for a in arrivals if a]
    result: dict[str, Any] = {
        "posts": posted["posted"], "post_seconds": posted["seconds"],
        "posts_per_s": posted["posted"] / posted["seconds"],
        "game_posts_per_s": 4.6 * speed, "poster_behind_s": posted["behind_s"],
        "answer_p50_ms": 1000 * sup.percentile(lat, 50),
        "answer_p99_ms": 1000 * sup.percentile(lat, 99),
        "ramp_s": ramped, "server_cpu_percent": 100 * cpu / elapsed,
        "server_rss_mib": mem["VmRSS"] / 1024, "server_peak_rss_mib": mem["VmHWM"] / 1024,
        **delays(watched[0] if watched else [], posted["first_sent"], GSI_DELAY),
        **delivery_histogram(server),
    }  # fmt: skip
    if posted["positions"] and watched:
        result |= position_check(watched[0], posted["first_sent"], posted["positions"])
    all_delays = [delays(a, posted["first_sent"], GSI_DELAY) for a in watched]
    result["e2e_p99_worst_watcher_s"] = max((d["e2e_p99_s"] for d in all_delays), default=0)
    if lean is not None:
        frames = [f for r in lean for f in r["frames"]]
        result |= {
            "subscribers": sum(r["clients"] for r in lean),
            "subscribers_ended": sum(r["ended"] for r in lean),
            "frames_min": min(frames), "frames_max": max(frames),
            "gaps": sum(r["gaps"] for r in lean), "missing_frames": sum(r["missing"] for r in lean),
        }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.capture.is_file():
        raise SystemExit(f"no capture at {args.capture}; pass --capture")
    sup.exit_on_sigterm()
    sup.raise_nofile(20000)
    out: dict[str, Any] = {"benchmark": "ingest"}
    rows = []
    if not args.skip_load:
        server = start_server(["--gsi-finish-after", "3"])
        try:
            load = asyncio.run(run(server, args, args.speed, args.limit, 1e9, args.clients))
        finally:
            server.stop()
        out["load"] = load
        sup.print_table(f"load: capture at {args.speed:g}x, {args.clients} subscribers", [
            sup.row(k, v, "") for k, v in load.items()])  # fmt: skip
        rows += [
            sup.row(f"{args.speed:g}x: posts handled/s", load["posts_per_s"], "/s",
                    f">= {4.6 * args.speed:.0f} (the pace)",
                    load["poster_behind_s"] < 1.0),
            sup.row(f"{args.speed:g}x: post answer p50 / p99",
                    f"{load['answer_p50_ms']:.1f} / {load['answer_p99_ms']:.1f}", "ms"),
            sup.row(f"{args.speed:g}x: e2e delay p50 / p99 (subscriber)",
                    f"{load['e2e_p50_s']:.3f} / {load['e2e_p99_s']:.3f}", "s"),
            sup.row(f"{args.speed:g}x: server CPU", load["server_cpu_percent"], "%"),
            sup.row(f"{args.speed:g}x: server peak RSS", load["server_peak_rss_mib"], "MiB"),
            sup.row(f"{args.speed:g}x: missing frames ({load.get('subscribers', 0)} subs)",
                    load.get("missing_frames", -1), "", "0", load.get("missing_frames") == 0),
        ]  # fmt: skip
    if args.coach_seconds > 0:
        server = start_server()
        try:
            coach = asyncio.run(run(server, args, 1.0, None, args.coach_seconds, 0))
        finally:
            server.stop()
        out["coach"] = coach
        sup.print_table(f"coach: 1x, default settings, {args.coach_seconds:g} s", [
            sup.row(k, v, "") for k, v in coach.items()])  # fmt: skip
        delay = f"{coach['e2e_p50_s']:.3f} / {coach['e2e_p99_s']:.3f}"
        rows.append(sup.row("1x default: e2e delay p50 / p99 (subscriber)", delay, "s"))
    out["rows"] = rows
    sup.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
