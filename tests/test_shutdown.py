"""SIGTERM on a real ``eeict serve`` process: clients are closed with 1001 and it exits fast."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import msgpack
import pytest
import websockets
from server_process import server_process, write_match
from websockets.asyncio.client import connect

pytestmark = pytest.mark.timeout(90)


async def test_sigterm_closes_clients_with_1001_and_exits(tmp_path):
    write_match(tmp_path)
    with server_process("--recordings", str(tmp_path), "--live", "match", "--loop") as server:
        clients = [await connect(f"{server.ws_url}/live/match") for _ in range(3)]
        for ws in clients:
            await ws.recv()  # hello
            await ws.send(msgpack.packb({"type": "subscribe", "buffer": 64}))
            await ws.recv()  # subscribed
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        codes = []
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            codes.append(closed.value.rcvd.code)
        exit_code = await asyncio.to_thread(server.proc.wait, 15)
        elapsed = time.monotonic() - started
        log = server.log()
    assert codes == [1001, 1001, 1001]
    assert exit_code == 0, log
    assert elapsed < 10, f"shutdown took {elapsed:.1f} s"
    assert "shutting down" in log and "stopped" in log
