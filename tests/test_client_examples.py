"""The client examples against a real ``eeict serve`` subprocess on 127.0.0.1, small and short."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from server_process import ServerProcess, match_frames, server_process, write_match
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from processing.recording import Recording
from server.streams.encoding import ConnectionOptions, encode_ticks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "client_examples"
NODE = EXAMPLES / "node"
STATUS = re.compile(r"^tick\s+(\d+)\s+seq\s+(\d+)\s+buffer\s+(\d+).*reconnects (\d+)$")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recordings")
    write_match(folder, "match", count=1200)
    return folder


@pytest.fixture(scope="module")
def server(recordings) -> Iterator[ServerProcess]:
    with server_process("--recordings", str(recordings), "--live", "match", "--loop") as srv:
        yield srv


def run_example(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def status_lines(output: str) -> list[tuple[int, int, int, int]]:
    """(tick, seq, buffer, reconnects) of each status line subscribe.py printed."""
    found = (STATUS.match(line) for line in output.splitlines())
    return [tuple(int(g) for g in m.groups()) for m in found if m]


@pytest.mark.parametrize("name", ["subscribe.py", "fetch_recording.py", "loadtest.py"])
def test_help_exits_zero(name):
    result = run_example(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_subscribe_prints_advancing_status(server):
    result = run_example(
        "subscribe.py", "--url", server.ws_url, "--stream", "match", "--duration", "3.5"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = status_lines(result.stdout)
    assert len(lines) >= 2, result.stdout
    seqs = [seq for _, seq, _, _ in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), result.stdout
    assert all(buffer > 0 for _, _, buffer, _ in lines[1:]), "the 1 s buffer stayed empty"


@pytest.mark.parametrize("language", ["python", "node"])
def test_subscribe_resumes_after_server_restart(recordings, tmp_path, language):
    # A fixed epoch makes the restarted server continue the same seq numbering.
    args = ("--recordings", str(recordings), "--live", "match", "--loop")
    srv = ServerProcess((*args, "--epoch", str(time.time())), log_path=tmp_path / "server.log")
    if language == "node":
        _require_node()
        command = ["node", str(NODE / "subscribe.mjs")]
    else:
        command = [sys.executable, str(EXAMPLES / "subscribe.py")]
    command += ["--url", srv.ws_url, "--stream", "match", "--duration", "9"]
    lines: list[str] = []
    try:
        srv.start()
        client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        reader = threading.Thread(
            target=lambda: lines.extend(line.decode() for line in client.stdout), daemon=True
        )
        reader.start()
        deadline = time.monotonic() + 30
        while len(status_lines("".join(lines))) < 2:  # it is streaming: now restart the server
            assert time.monotonic() < deadline and client.poll() is None, "".join(lines)
            time.sleep(0.05)
        srv.stop()
        time.sleep(1.0)  # down for a while: the client backs off and retries
        srv.start()
        client.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        srv.stop()
    text = "".join(lines)
    assert client.returncode == 0, text
    assert "connection closed (1001)" in text, text
    assert "skip:" not in text and "skips 0 " in text, text  # resumed in the window: no loss
    lines = status_lines(text)
    before = [seq for _, seq, _, reconnects in lines if reconnects == 0]
    after = [seq for _, seq, _, reconnects in lines if reconnects >= 1]
    assert before and after, text
    assert min(after) > max(before), text


def test_subscribe_refuses_a_negative_buffer():
    result = run_example("subscribe.py", "--buffer", "-1")
    assert result.returncode == 2 and "--buffer" in result.stderr, result.stderr


def test_subscribe_backs_off_when_the_server_is_full(recordings):
    # Every connection is accepted, then closed with 1013: the backoff must keep growing.
    args = ("--recordings", str(recordings), "--live", "match", "--max-connections", "0")
    with server_process(*args) as srv:
        result = run_example(
            "subscribe.py", "--url", srv.ws_url, "--stream", "match", "--duration", "4"
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "connection closed (1013)" in result.stdout, result.stdout
    delays = [float(d) for d in re.findall(r"^reconnecting in ([\d.]+) s$", result.stdout, re.M)]
    assert len(delays) >= 3, result.stdout
    # Backoff 0.5, 1, 2 s, each with jitter down to half: the third wait is at least 1 s.
    assert delays[2] >= 1.0, result.stdout


def expected_range(recording: Recording, first: int, last: int) -> tuple[int, int]:
    ticks = recording.ticks
    return int(np.searchsorted(ticks, first)), int(np.searchsorted(ticks, last, side="right"))


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_fetch_recording_writes_exactly_the_range(server, recordings, tmp_path, fmt):
    recording = Recording.open(recordings / "match.eeict")
    first, last = 1100, 1700  # spans the tick gap at the second round
    out = tmp_path / f"range.{fmt}"
    result = run_example(
        "fetch_recording.py", "--url", server.ws_url, "match", "--from-tick", str(first),
        "--to-tick", str(last), "--credit", "50", "--format", fmt, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    a, b = expected_range(recording, first, last)
    if fmt == "msgpack":  # the server's own bytes, unchanged
        assert out.read_bytes() == bytes(recording.frames_bytes(a, b))
    else:
        frames = [json.loads(line) for line in out.read_text().splitlines()]
        assert frames == [recording.frame(i) for i in range(a, b)]


def test_fetch_recording_prints_the_events_index(server, recordings):
    """``--events`` over the WebSocket URL: the server redirects plain HTTP to its HTTP port."""
    events = Recording.open(recordings / "match.eeict").meta["events"]
    result = run_example("fetch_recording.py", "--url", server.ws_url, "match", "--events")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[str(e["tick"]), e["type"]] for e in events]
    assert any(line.endswith("kill        Alpha [AK-47 HS] Delta") for line in lines), lines
    unknown = run_example("fetch_recording.py", "--url", server.ws_url, "nowhere", "--events")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
    neither = run_example("fetch_recording.py", "--url", server.ws_url, "match")
    assert neither.returncode == 2 and "--out is required" in neither.stderr


SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


async def _flaky_proxy(target_port: int, cut_after: int, cuts: int):
    """A TCP proxy to the server: the first connection is answered 503 (a server starting or
    stopping), the next ``cuts`` die after ``cut_after`` bytes from the server."""
    connections = 0

    async def pipe(reader, writer, limit: int | None) -> None:
        sent = 0
        try:
            while data := await reader.read(4096):
                if limit is not None and sent + len(data) > limit:
                    break
                writer.write(data)
                sent += len(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_reader, client_writer) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await client_reader.readuntil(b"\r\n\r\n")
            client_writer.write(SERVICE_UNAVAILABLE)
            await client_writer.drain()
            client_writer.close()
            return
        limit = cut_after if connections <= 1 + cuts else None
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        upstream = asyncio.create_task(pipe(client_reader, server_writer, None))
        await pipe(server_reader, client_writer, limit)
        server_writer.close()
        upstream.cancel()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_fetch_recording_resumes_after_503_and_dropped_connections(
    server, recordings, tmp_path
):
    recording = Recording.open(recordings / "match.eeict")
    everything = bytes(recording.frames_bytes(0, recording.frame_count))
    # More drops than fetch_recording.MAX_ATTEMPTS (6): each one made progress, so it goes on.
    # Plain frames, so the proxy's byte count says where a cut lands (compression is tested
    # on its own).
    cuts = 7
    proxy = await _flaky_proxy(server.port, cut_after=len(everything) // (cuts + 2), cuts=cuts)
    port = proxy.sockets[0].getsockname()[1]
    out = tmp_path / "all.msgpack"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "fetch_recording.py"), "--url", f"ws://127.0.0.1:{port}",
        "match", "--credit", "64", "--out", str(out), "--encoding", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        proxy.close()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "server answered HTTP 503" in log, log
    assert len(re.findall(r"connection lost .*resuming after tick \d+", log)) == cuts, log
    assert out.read_bytes() == everything


def test_loadtest_small_run_delivers_frames(server, tmp_path):
    report = tmp_path / "load.json"
    result = run_example(
        "loadtest.py", "--url", server.ws_url, "--stream", "match", "-n", "20", "--ramp", "100",
        "--duration", "3", "--json", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(report.read_text())
    assert summary["connected"] == 20
    assert summary["failed_clients"] == 0 and summary["errors"] == {}
    # Every client gets at least the frames of its connected time (plus its buffer).
    assert summary["frames"] >= 20 * 64 * 1.5
    assert summary["lag_ms"]["p50"] is not None
    assert "frames_per_s" in result.stdout


def test_loadtest_fails_when_error_rate_exceeded(server, tmp_path):
    report = tmp_path / "load.json"
    result = run_example(
        "loadtest.py", "--url", server.ws_url, "--stream", "no-such-stream", "-n", "3",
        "--duration", "1", "--max-error-rate", "0.5", "--json", str(report),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads(report.read_text())
    assert summary["error_rate"] == 1.0
    assert summary["errors"] == {"unknown_stream": 3}
    assert summary["disconnects"] == {"4004": 3}


def _subscribers(srv: ServerProcess, stream: str) -> int:
    with urllib.request.urlopen(f"{srv.http_url}/streams", timeout=5) as response:
        streams = json.load(response)["streams"]
    return next(s["subscribers"] for s in streams if s["id"] == stream)


def test_loadtest_counts_a_server_stopped_mid_run(recordings, tmp_path):
    args = ("--recordings", str(recordings), "--live", "match", "--loop")
    srv = ServerProcess(args, log_path=tmp_path / "server.log")
    report = tmp_path / "load.json"
    command = [sys.executable, str(EXAMPLES / "loadtest.py"), "--url", srv.ws_url, "--stream"]
    command += ["match", "-n", "4", "--duration", "30", "--max-error-rate", "0"]
    command += ["--json", str(report)]
    try:
        srv.start()
        client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while _subscribers(srv, "match") < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        srv.stop()  # SIGTERM: every subscriber gets a 1001 close, which ends `async for` quietly
        output, _ = client.communicate(timeout=30)
    finally:
        srv.stop()
    assert client.returncode == 1, output.decode()
    summary = json.loads(report.read_text())
    assert summary["disconnects"] == {"1001": 4}, summary
    assert summary["failed_clients"] == 4, summary


def _require_node() -> None:
    """node_modules come from ``npm ci`` (setup script); without node/npm: skip, or fail in CI."""
    message = None
    if not (shutil.which("node") and shutil.which("npm")):
        message = "node and npm are needed for the Node example"
    elif not (NODE / "node_modules").is_dir():
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            message = f"npm ci failed in {NODE}: {result.stderr[-500:]}"
    if message:
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_node_subscribe_prints_status(server):
    _require_node()
    result = subprocess.run(
        ["node", "subscribe.mjs", "--url", server.ws_url, "--stream", "match", "--duration", "3.5"],
        cwd=NODE, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    ticks = [int(m.group(1)) for m in re.finditer(r"^tick (\d+)", result.stdout, re.M)]
    assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), result.stdout
    help_result = subprocess.run(
        ["node", "subscribe.mjs", "--help"], cwd=NODE, capture_output=True, text=True, timeout=30
    )
    assert help_result.returncode == 0 and "--stream" in help_result.stdout


@pytest.mark.parametrize(
    "args", [["--stream", "no-such-stream"], ["--buffer", "abc"], ["--no-such-option"]]
)
def test_node_subscribe_exits_2_on_what_retrying_cannot_fix(server, args):
    _require_node()
    result = subprocess.run(
        ["node", "subscribe.mjs", "--url", server.ws_url, "--duration", "10", *args],
        cwd=NODE, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr


# -- compressed ticks, from a loopback server that sends what server/streams/encoding.py makes --


class FakeServer:
    """A tiny WebSocket server on 127.0.0.1 playing the server's side of one script.

    Live: hello, wait for subscribe, then the ticks of ``bursts`` [(seq, count)], compressed
    when the client asked for ``?encoding=deflate``, plain otherwise; then it keeps the
    connection open (``end=False``) or sends ``end``. Replay: answers one fetch with credit
    flow control. It records each connection's path.
    """

    def __init__(self, frames: list[bytes], bursts=(), end: bool = False) -> None:
        self.frames, self.bursts, self.end = frames, list(bursts), end
        self.paths: list[str] = []
        self.sent_frames = 0
        self.server = None

    async def __aenter__(self) -> FakeServer:
        self.server = await serve(self.handle, "127.0.0.1", 0, compression=None)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def ticks(self, seq: int, count: int, encoding: str | None, **extra) -> bytes:
        data = b"".join(self.frames[seq % len(self.frames) + i] for i in range(count))
        self.sent_frames += count
        return encode_ticks({"stream": "fake", "seq": seq, **extra}, count, data, encoding)

    async def handle(self, ws) -> None:

        path, _, query = ws.request.path.partition("?")
        self.paths.append(ws.request.path)
        encoding = ConnectionOptions.parse(dict(p.split("=", 1) for p in query.split("&") if p))
        encoding = encoding.encoding
        stream = {"id": "fake", "epoch": time.time() - 3600, "rate": 64.0, "first_tick": 1000}
        stream["last_tick"] = msgpack.unpackb(self.frames[-1])["tick"]
        hello = {"type": "hello", "server_time": time.time(), "max_buffer": 1920, "stream": stream}
        await ws.send(msgpack.packb(hello))
        try:
            request = msgpack.unpackb(await ws.recv())
            if path.startswith("/live/"):
                assert request["type"] == "subscribe"
                for seq, count in self.bursts:
                    await ws.send(self.ticks(seq, count, encoding))
                if self.end:
                    await ws.send(msgpack.packb({"type": "end", "stream": "fake", "seq": 0}))
            else:
                await self.fetch(ws, request, encoding)
            await ws.wait_closed()
        except ConnectionClosed:
            pass

    async def fetch(self, ws, request: dict, encoding: str | None) -> None:
        assert request["type"] == "fetch" and "resume_after" not in request
        credit, start = request["credit"], 0
        while start < len(self.frames):
            while credit <= 0:
                credit += msgpack.unpackb(await ws.recv())["frames"]
            count = min(credit, 100, len(self.frames) - start)
            await ws.send(self.ticks(start, count, encoding, fetch=request["id"]))
            start, credit = start + count, credit - count
        end = {"type": "fetch_end", "stream": "fake", "fetch": request["id"], "count": start}
        await ws.send(msgpack.packb(end))


def encoded_frames(count: int) -> list[bytes]:
    import msgpack

    return [msgpack.packb(frame) for frame in match_frames(count)]


async def run_client(command: list[str]) -> tuple[int, str]:
    """Run a client to its end (at most 60 s); its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, output.decode()


@pytest.mark.parametrize("language", ["python", "node"])
@pytest.mark.parametrize("encoding", ["deflate", "none"])
async def test_subscribe_reads_compressed_and_plain_ticks(language, encoding):
    if language == "node":
        _require_node()
        command = ["node", str(NODE / "subscribe.mjs")]
    else:
        command = [sys.executable, str(EXAMPLES / "subscribe.py")]
    frames = encoded_frames(200)
    bursts = [(seq, 8) for seq in range(0, 160, 8)]  # all due at once: the epoch is an hour ago
    async with FakeServer(frames, bursts) as fake:
        command += ["--url", fake.url, "--stream", "fake", "--duration", "2.5"]
        code, output = await run_client([*command, "--encoding", encoding])
    assert code == 0, output
    expected_query = "?encoding=deflate" if encoding == "deflate" else ""
    assert fake.paths == [f"/live/fake{expected_query}"]
    last_tick = msgpack.unpackb(frames[159])["tick"]
    # The frame on screen is the last one sent: its tick came out of the inflated data.
    assert re.search(rf"^tick\s+{last_tick}\s+seq\s+159\b", output, re.M), output


async def test_fetch_recording_writes_the_same_bytes_from_compressed_messages(tmp_path):
    frames = encoded_frames(700)
    async with FakeServer(frames) as fake:
        out = tmp_path / "all.msgpack"
        command = [sys.executable, str(EXAMPLES / "fetch_recording.py"), "--url", fake.url]
        command += ["fake", "--credit", "150", "--out", str(out)]
        code, output = await run_client(command)
    assert code == 0, output
    assert fake.paths == ["/replay/fake?encoding=deflate"]
    assert out.read_bytes() == b"".join(frames)  # the frames' own bytes, through deflate
    assert "700 frames" in output


@pytest.mark.parametrize(
    ("encoding", "first_seq"), [("deflate", 100_000), ("deflate", 5), ("none", 100_000)]
)
async def test_loadtest_counts_compressed_bursts_and_seq_gaps(tmp_path, encoding, first_seq):
    frames = encoded_frames(300)
    # Bursts of 8 from first_seq; one burst of 8 is never sent (a gap), one is sent twice.
    seqs = [first_seq + 8 * k for k in range(20)]
    bursts = [(s, 8) for s in seqs[:10] + seqs[11:15] + seqs[14:]]
    async with FakeServer(frames, bursts, end=True) as fake:
        report = tmp_path / "load.json"
        command = [sys.executable, str(EXAMPLES / "loadtest.py"), "--url", fake.url]
        command += ["--stream", "fake", "-n", "3", "--duration", "3", "--json", str(report)]
        code, output = await run_client([*command, "--encoding", encoding])
    assert code == 0, output
    summary = json.loads(report.read_text())
    sent = 8 * len(bursts)
    assert summary["frames"] == 3 * sent and summary["messages"] == 3 * (2 + len(bursts))
    assert summary["gap_frames"] == 3 * 8 and summary["repeated_frames"] == 3 * 8
    assert summary["failed_clients"] == 0 and summary["disconnects"] == {}
    # The epoch is an hour ago: every frame but each client's first is late, by an hour less
    # its seq's time; a few seconds of slack for this test's own run.
    assert summary["late_frames"] == 3 * (sent - 1)
    expected_ms = (3600 - (first_seq + 80) / 64) * 1000
    assert abs(summary["lag_ms"]["p50"] - expected_ms) < 10_000, summary["lag_ms"]
    assert fake.paths == [f"/live/fake{'?encoding=deflate' if encoding == 'deflate' else ''}"] * 3
