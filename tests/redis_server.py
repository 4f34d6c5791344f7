"""Run Debian's ``redis-server`` on a free 127.0.0.1 port in a temporary folder, for tests and
benchmarks that need a real Redis.

No persistence unless asked (``--save ''``, no AOF), so a restart loses everything; with
``persist=True`` a restart reloads the data (an RDB snapshot written at shutdown).
``restart()`` keeps the port, so clients that were connected find the server again. With
``password``, clients must authenticate (``requirepass``), as the deployed Redis requires.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """One redis-server child process; ``start()`` again after ``stop()`` reuses port and folder."""

    folder: Path
    port: int = field(default_factory=free_port)
    persist: bool = False
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def auth(self) -> bytes:
        """What a raw connection sends first (nothing without a password)."""
        return f"AUTH {self.password}\r\n".encode() if self.password else b""

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is missing: run scripts/install-test-deps.sh")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder]
        command += ["--logfile", self.log_path, "--daemonize", "no", "--appendonly", "no"]
        command += ["--protected-mode", "yes", "--save", "3600 1" if self.persist else ""]
        if self.password:
            command += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            [str(part) for part in command], stdout=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}:\n{self.log()}"
                )
            if self.command(b"PING") == b"+PONG":
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server not answering after {READY_TIMEOUT_S} s:\n{self.log()}")

    def command(self, *words: bytes) -> bytes | None:
        """Send one inline command and return the first reply line, or None if nobody answers."""
        lines = 2 if self.password else 1  # AUTH's +OK first
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
        ):
            sock.sendall(self.auth + b" ".join(words) + b"\r\n")
            reply = b""
            while reply.count(b"\r\n") < lines:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply.split(b"\r\n")[lines - 1]
        return None

    def stop(self) -> None:
        """SIGTERM (Redis saves its snapshot first when persisting), SIGKILL if it hangs."""
        self.resume()  # a paused process would not see the SIGTERM
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self, keep_data: bool | None = None) -> None:
        """Stop and start on the same port; ``keep_data=False`` also deletes any snapshot."""
        self.stop()
        if keep_data is False or (keep_data is None and not self.persist):
            (self.folder / "dump.rdb").unlink(missing_ok=True)
        self.start()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open and nothing answers, as when
        the network to Redis is cut."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def redis_server(persist: bool = False, password: str | None = None) -> Iterator[RedisServer]:
    """``with redis_server() as redis:`` then connect to ``redis.url``; stopped (and its folder
    removed) afterwards."""
    with tempfile.TemporaryDirectory(prefix="eeict-redis-") as folder:
        server = RedisServer(Path(folder), persist=persist, password=password)
        try:
            server.start()
            yield server
        finally:
            server.stop()
