"""The client examples against a real ``eeict serve`` subprocess on 127.0.0.1, small and short."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess, server_process, write_match

from processing.recording import Recording

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


def test_subscribe_resumes_after_server_restart(recordings, tmp_path):
    # A fixed epoch makes the restarted server continue the same seq numbering.
    args = ("--recordings", str(recordings), "--live", "match", "--loop")
    srv = ServerProcess((*args, "--epoch", str(time.time())), log_path=tmp_path / "server.log")
    command = [sys.executable, str(EXAMPLES / "subscribe.py"), "--url", srv.ws_url]
    command += ["--stream", "match", "--duration", "9"]
    try:
        srv.start()
        client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(2.5)
        srv.stop()
        time.sleep(1.0)
        srv.start()
        output, _ = client.communicate(timeout=30)
    finally:
        srv.stop()
    text = output.decode()
    assert client.returncode == 0, text
    assert "connection closed (1001)" in text, text
    assert "skip:" not in text and "skips 0 " in text, text  # resumed in the window: no loss
    lines = status_lines(text)
    before = [seq for _, seq, _, reconnects in lines if reconnects == 0]
    after = [seq for _, seq, _, reconnects in lines if reconnects >= 1]
    assert before and after, text
    assert min(after) > max(before), text


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


async def _proxy_dropping_first_connection(target_port: int, cut_after: int):
    """A TCP proxy whose first connection dies after ``cut_after`` bytes from the server."""
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
        limit = cut_after if connections == 1 else None
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        upstream = asyncio.create_task(pipe(client_reader, server_writer, None))
        await pipe(server_reader, client_writer, limit)
        server_writer.close()
        upstream.cancel()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_fetch_recording_resumes_after_dropped_connection(server, recordings, tmp_path):
    recording = Recording.open(recordings / "match.eeict")
    everything = bytes(recording.frames_bytes(0, recording.frame_count))
    proxy = await _proxy_dropping_first_connection(server.port, cut_after=len(everything) // 3)
    port = proxy.sockets[0].getsockname()[1]
    out = tmp_path / "all.msgpack"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "fetch_recording.py"), "--url", f"ws://127.0.0.1:{port}",
        "match", "--credit", "64", "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        proxy.close()
    assert process.returncode == 0, stderr.decode()
    assert re.search(r"connection lost .*resuming after tick \d+", stderr.decode())
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
