"""What the server benchmarks share: the recording, the server subprocess, /proc readings, a
lean WebSocket client, and the result table.

The client is a few dozen lines of asyncio.Protocol rather than the websockets library because
thousands of them share the machine's two cores with the server: the cheaper the client, the
less it distorts the server's numbers. It reads only the envelope of ``ticks`` messages (type,
seq, gen, frame count), never the frames.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import functools
import json
import math
import os
import queue
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgpack

ROOT = Path(__file__).resolve().parents[1]
EEICT = [sys.executable, "-m", "server"]
STREAM_ID = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")
TICKS = b"\xa4type\xa5ticks"  # how a ``ticks`` message starts: its first key and value
HEAD = 1024  # bytes of a ticks message read for its envelope (room for long stream ids)

# -- the recording -----------------------------------------------------------------------------


def add_recording_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recording", type=Path,
        help="an .eeict recording to use (default: the generated match, seed 1, 24 rounds)",
    )  # fmt: skip
    parser.add_argument(
        "--fake-frames", type=int, default=0, metavar="N",
        help="use N made-up 10-player frames instead (until the generated match is available)",
    )  # fmt: skip


def resolve_recording(args: argparse.Namespace) -> Path:
    """The recording file a benchmark runs on, generated (and cached) when needed."""
    if args.recording is not None:
        return args.recording.resolve()
    if args.fake_frames:
        return fake_recording(args.fake_frames)
    try:
        from server.builtin import load_builtin

        return Path(load_builtin(24).name)
    except ImportError as exc:
        raise SystemExit(
            f"the generated match is not available ({exc}); pass --recording or --fake-frames"
        ) from exc


def fake_recording(count: int) -> Path:
    """A recording of ``count`` made-up frames: 10 players with every field, 64 tick/s."""
    from processing.recording import write_recording
    from processing.source import SourceInfo

    path = Path(tempfile.gettempdir()) / f"eeict-bench-fake-{count}.eeict"
    if path.exists():
        return path
    info = SourceInfo(
        "de_mirage", 64, "fake", f"fake-{count}", "bench fake frames", True, {"t": "A", "ct": "B"}
    )
    write_recording(path, info, _fake_frames(count))
    return path


def _fake_frames(count: int):
    rng = random.Random(1)
    for i in range(count):
        players = []
        for p in range(10):
            angle = i / 300 + p
            players.append(
                {
                    "sid": 76561190000000000 + p, "name": f"player{p}",
                    "clan": "A" if p < 5 else "B", "team": "T" if p < 5 else "CT",
                    "hp": 100 - (i + p) % 100, "money": 800 + 50 * p,
                    "x": 1000 * math.cos(angle), "y": 1000 * math.sin(angle),
                    "z": -160.0 + p, "view_x": (i * 1.7 + p) % 360, "view_y": rng.uniform(-10, 10),
                    "actv_itm": "ak47", "items": ["ak47", "glock", "knife", "flashbang"],
                    "helmet": True, "armor": 100, "kit": p % 2 == 0, "is_ducking": False,
                    "is_walking": False, "is_standing": True, "is_air": False, "is_rld": False,
                    "kills": p, "deaths": p // 2, "assists": 1, "dmg": 100 * p, "adr": 71.5,
                    "is_planting": False, "is_defusing": False,
                }
            )  # fmt: skip
        yield {
            "tick": 1000 + i, "round_time": i / 64, "round_start": i % 7000 == 0,
            "is_freeze": False, "t": "A", "ct": "B", "t_wins": i // 7000, "ct_wins": 0,
            "players": players, "shooting": [players[0]["sid"]] if i % 10 == 0 else None,
            "kills": None, "nades": None, "infernos": None, "nade_event": None, "bomb": None,
        }  # fmt: skip


def recordings_dir(recording: Path) -> Path:
    """A temporary folder holding only ``bench.eeict``, a copy of the recording.

    A copy, not a link: the generated match's cache file may be rewritten while a benchmark runs.
    """
    folder = Path(tempfile.mkdtemp(prefix="eeict-bench-"))
    shutil.copyfile(recording, folder / f"{STREAM_ID}.eeict")
    return folder


# -- processes ---------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None)  # loaded now: die_with_parent also runs before exec
PR_SET_PDEATHSIG = 1


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally:`` blocks stop servers and client processes.

    run_all.py ends a benchmark that runs past its timeout with SIGTERM to its process group.
    Inside an event loop, run_async() takes over.
    """

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def die_with_parent(parent: int) -> None:
    """Have Linux SIGTERM this process when ``parent`` (the process that started it) dies.

    Servers and client processes must never outlive a benchmark that was killed: they would
    spin, or load the machine under every later benchmark.
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def collect(results: Any, workers: list, timeout: float) -> list:
    """One item from ``results`` (a multiprocessing queue) per worker process.

    Polls briefly so a worker that crashed fails the run at once instead of after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    items: list = []
    while len(items) < len(workers):
        try:
            items.append(results.get(timeout=0.5))
        except queue.Empty:
            crashed = [w for w in workers if w.exitcode not in (None, 0)]
            if crashed:
                codes = ", ".join(f"pid {w.pid} exit {w.exitcode}" for w in crashed)
                raise RuntimeError(f"client process failed ({codes}); its error is above") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"client processes silent for {timeout:.0f} s") from None
    return items


def stop_workers(workers: list, grace: float) -> None:
    """Give the started worker processes ``grace`` seconds to exit, then terminate the rest."""
    started = [w for w in workers if w.pid is not None]
    deadline = time.monotonic() + grace
    for worker in started:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in started:
        if worker.is_alive():
            worker.terminate()
    for worker in started:
        worker.join(5)
        if worker.is_alive():
            worker.kill()
            worker.join()


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in its own process on 127.0.0.1, logging to a file, stopped with SIGTERM.

    It runs in its own session (a Ctrl-C or a SIGTERM to the benchmark's process group does not
    reach it: the benchmark stops it in order) and gets SIGTERM if the benchmark dies.
    """

    def __init__(
        self,
        argv: list[str],
        port: int,
        name: str,
        folder: Path | None = None,
        http_port: int | None = None,
    ) -> None:
        self.port = port  # WebSocket
        self.http_port = http_port or port  # the raw-TCP baselines have one port
        self.name = name
        self.folder = folder  # removed on stop
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix=f"eeict-bench-{name}-", suffix=".log"
        )
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str = "/readyz", timeout: float = 120.0) -> None:
        """Wait until ``path`` answers 200."""

        def ready() -> bool:
            with urllib.request.urlopen(self.url(path), timeout=2) as answer:
                return answer.status == 200

        self.wait_until(ready, timeout)

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready()`` (an OSError counts as not ready); stops the server if it never is."""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} server exited:\n{self.log_text()}")
                try:
                    if ready():
                        return
                except OSError:
                    pass
                time.sleep(0.2)
            raise RuntimeError(
                f"{self.name} server not ready after {timeout} s:\n{self.log_text()}"
            )
        except BaseException:
            self.stop()  # after log_text(): stop() deletes the log
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=5) as answer:
            return json.load(answer)

    def log_text(self) -> str:
        """The end of the server's output; only until stop(), which deletes the log."""
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_eeict(
    recording: Path, extra: list[str] = (), command: list[str] | None = None
) -> ServerProcess:
    """``eeict serve`` on a free port with the recording as the looping live stream ``bench``.

    ``command`` replaces ``python -m server`` (e.g. to run the server under a profiler).
    """
    port, http_port, folder = free_port(), free_port(), recordings_dir(recording)
    argv = [
        *(command or EEICT), "serve", "--port", str(port), "--http-port", str(http_port),
        "--recordings", str(folder),
        "--live", STREAM_ID, "--loop", "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    server = ServerProcess(argv, port, "eeict", folder, http_port)
    server.wait_ready()
    return server


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (and its anonymous / file parts) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# -- a lean WebSocket client -------------------------------------------------------------------

_KEY = base64.b64encode(b"eeict-bench-key!").decode()


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked client frame (RFC 6455 requires clients to mask; a zero key is valid)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def envelope(head: bytes) -> dict[str, Any] | None:
    """The fields of a ``ticks`` message before its frames (plus ``count``), from its head.

    None when ``head`` ends before the ``frames`` key: the caller then reads the whole message.
    """
    unpacker = msgpack.Unpacker()
    unpacker.feed(head)
    fields: dict[str, Any] = {}
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "frames":
                fields["count"] = unpacker.read_array_header()
                return fields
            fields[key] = unpacker.unpack()
    except msgpack.OutOfData:
        return None
    raise ValueError("a ticks message without frames")


class LeanClient(asyncio.Protocol):
    """A WebSocket client that answers pings and hands each server message to ``on_message``.

    ``on_message(client, fields, size, now)`` gets the decoded message, except for ``ticks``
    where it gets only the envelope fields (see ``envelope``) and the message size.
    """

    def __init__(self, host: str, port: int, path: str, on_message: Callable) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.discard = 0  # bytes of the current message still to drop unread
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(msgpack.packb(message)))

    def data_received(self, data: bytes) -> None:
        if self.discard:  # the rest of a ticks message whose envelope was already read
            if len(data) <= self.discard:
                self.discard -= len(data)
                return
            data, self.discard = data[self.discard :], 0
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self._fail(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
        now = time.time()
        while len(buf) >= 2:
            opcode, size, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, start = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, start = int.from_bytes(buf[2:10], "big"), 10
            fields = None
            if opcode == 0x2 and len(buf) >= start + min(size, HEAD):
                head = bytes(buf[start : start + min(size, HEAD)])
                if head[1:12] == TICKS:
                    fields = envelope(head)  # None: a longer envelope, read the whole message
            if fields is not None:
                self.on_message(self, fields, size, now)
                if len(buf) < start + size:  # skip the frames instead of buffering them
                    self.discard = start + size - len(buf)
                    buf.clear()
                    return
                del buf[: start + size]
                continue
            if len(buf) < start + size:
                return
            payload = bytes(buf[start : start + size])
            del buf[: start + size]
            if opcode == 0x2:
                message = envelope(payload) if payload[1:12] == TICKS else None
                self.on_message(self, message or msgpack.unpackb(payload), size, now)
            elif opcode == 0x9:  # ping: answer with the same payload
                self.transport.write(client_frame(payload, 0xA))
            elif opcode == 0x8:  # close
                self.close_code = int.from_bytes(payload[:2], "big") if size else 1005
                self.transport.write(client_frame(payload[:2], 0x8))
                self.transport.close()
                return

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionError("connection closed during the handshake"))


async def open_lean(
    port: int, path: str, on_message: Callable, local_host: str | None = None
) -> LeanClient:
    """``local_host`` (another loopback address, 127.0.0.x) gives the client side its own
    28,000 ephemeral ports, for more connections than one address pair allows."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: LeanClient("127.0.0.1", port, path, on_message), "127.0.0.1", port,
        local_addr=(local_host, 0) if local_host else None,
    )  # fmt: skip
    await asyncio.wait_for(client.opened, 30)
    return client


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop; SIGTERM cancels it, so its ``finally:`` blocks still run.

    exit_on_sigterm() is not enough here: uvloop logs and swallows a SystemExit raised in a
    protocol callback, and the process would go on.
    """
    import uvloop

    terminated = False

    async def cancellable() -> T:
        task = asyncio.current_task()

        def terminate() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
        return await main

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        return asyncio.run(cancellable())
    except asyncio.CancelledError:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


# -- results -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def row(metric: str, value: float, unit: str, goal: str = "", ok: bool | None = None) -> dict:
    """One line of the result table; ``ok`` is None when the metric has no goal."""
    return {"metric": metric, "value": value, "unit": unit, "goal": goal, "ok": ok}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    width = max(len(r["metric"]) for r in rows)
    for r in rows:
        verdict = "" if r["ok"] is None else ("  ok" if r["ok"] else "  MISSED")
        goal = f"  (goal {r['goal']})" if r["goal"] else ""
        print(
            f"  {r['metric']:<{width}}  {format_value(r['value']):>12} {r['unit']}{goal}{verdict}"
        )


def write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")
