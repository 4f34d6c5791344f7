"""The broker engines as pytest fixtures: the same tests run on the in-memory engine and on a
real redis-server (Debian's package; missing it skips locally and fails under CI=true).
A test module imports the ``*_fixture`` names; the fixtures are called without the suffix."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable

import pytest
from redis_server import RedisServer, redis_server, redis_server_binary

from server.broker import ENDED_KEEP_S, Broker, MemoryBroker
from server.broker.redis_streams import RedisBroker

WAIT_S = 10.0
_prefixes = itertools.count()


def require_redis_server() -> None:
    if redis_server_binary() is None:
        message = "redis-server is missing: run scripts/install-test-deps.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` (sync or async) until true; fail after WAIT_S with ``what``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")


def info_field(server: RedisServer, section: str, name: str) -> str:
    """One field of ``INFO <section>`` (a bulk reply, read whole over a plain socket)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(server.auth + f"INFO {section}\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if server.auth and data.startswith(b"+OK\r\n"):
                data = data[5:]
            header, _, rest = data.partition(b"\r\n")
            if header.startswith(b"$") and len(rest) >= int(header[1:]):
                break
            if not chunk:
                break
    for line in data.decode().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1]
    raise KeyError(name)


class Engine:
    """One engine under test: makes brokers and knows how to see that a reader is blocked."""

    def __init__(self, name: str, server: RedisServer | None) -> None:
        self.name, self.server = name, server
        self.prefix = f"t{next(_prefixes)}"
        self.made: list[Broker] = []

    @property
    def trim_slack(self) -> int:
        """Frames an engine may keep beyond the window: Redis trims ``MAXLEN ~`` in whole
        stream nodes (at most 100 entries by default), the in-memory engine exactly."""
        return 0 if self.server is None else 100

    def broker(self, window: int = 256, **options) -> Broker:
        """A broker of this engine; ``ended_keep_s`` goes to both, other options to Redis."""
        if self.server is None:
            made: Broker = MemoryBroker(window, options.get("ended_keep_s", ENDED_KEEP_S))
        else:
            options.setdefault("op_timeout_s", 1.0)
            made = RedisBroker(self.server.url, window, prefix=self.prefix, **options)
        self.made.append(made)
        return made

    async def wait_blocked(self, readers: int = 1) -> None:
        """Until ``readers`` reads are waiting (so the test exercises the wake-up)."""
        if self.server is None:
            for _ in range(3):
                await asyncio.sleep(0)  # the reader task runs up to its wait
            return
        server = self.server
        await wait_for(
            lambda: int(info_field(server, "clients", "blocked_clients")) >= readers,
            f"{readers} blocked XREAD on redis",
        )

    async def close(self) -> None:
        for made in self.made:
            await made.close()


@pytest.fixture(name="shared_redis", scope="session")
def shared_redis_fixture():
    """One redis-server for the contract tests (each test uses its own key prefix)."""
    require_redis_server()
    with redis_server() as server:
        yield server


@pytest.fixture(name="engine", params=["memory", "redis"])
async def engine_fixture(request):
    server = request.getfixturevalue("shared_redis") if request.param == "redis" else None
    made = Engine(request.param, server)
    yield made
    await made.close()


@pytest.fixture(name="own_redis")
def own_redis_fixture():
    """A redis-server of the test's own, for fault tests that stop or freeze it."""
    require_redis_server()
    with redis_server() as server:
        yield server
