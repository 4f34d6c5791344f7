"""The server process: loads recordings, runs live streams, routes connections, stops cleanly."""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from server import http_api, protocol
from server.builtin import load_builtin
from server.catalog import Catalog, Entry
from server.config import BUILTIN_STREAM, DEFAULT_BUFFER_S, ServerConfig
from server.legacy import serve_legacy
from server.live_session import serve_live
from server.metrics import Metrics
from server.replay_session import serve_replay
from server.streams.live import LiveStream
from server.streams.sink import WebSocketSink
from server.streams.timeline import Timeline, steady_wall_clock

log = logging.getLogger(__name__)

SHUTDOWN_CLOSE_TIMEOUT = 3.0  # seconds a client gets to answer our close frame
CATALOG_RESCAN_S = 2.0
# Awaited sends (replies, replay, fetch) wait while more than this is queued: large enough to
# keep a fetch streaming at loopback speed, small enough to bound a stalled client's memory.
WRITE_LIMIT = 256 * 1024
MISS_RESCAN_S = 1.0  # a request for an unknown recording rescans at most this often


class App:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.catalog = Catalog(config.recordings)
        self.live: dict[str, LiveStream] = {}
        self.ready = False
        self.port: int | None = None
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics.subscriber_counts = lambda: {
            sid: len(stream.subscribers) for sid, stream in self.live.items()
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen at once (so /healthz answers), then load recordings and become ready."""
        config = self.config
        self._server = await serve(
            self.handle_connection,
            config.host,
            config.port,
            process_request=self.process_request,
            compression=None,  # per-message deflate costs CPU per client and breaks encode-once
            max_size=protocol.HARD_MAX_MESSAGE,
            write_limit=WRITE_LIMIT,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=SHUTDOWN_CLOSE_TIMEOUT,
            origins=[*config.allowed_origins, None] if config.allowed_origins else None,
            server_header=protocol.SERVER_NAME,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening on http://%s:%d", config.host, self.port)
        await asyncio.to_thread(self.catalog.scan)
        live_ids = config.live
        if not live_ids:
            recording = await asyncio.to_thread(load_builtin, config.builtin_rounds)
            self.catalog.add_builtin(BUILTIN_STREAM, recording)
            live_ids = [BUILTIN_STREAM]
        clock = steady_wall_clock()
        epoch = config.epoch if config.epoch is not None else clock()
        for stream_id in live_ids:
            entry = self.catalog.get(stream_id)
            if entry is None:
                known = ", ".join(sorted(self.catalog.entries)) or "none"
                raise SystemExit(
                    f"--live {stream_id}: no such recording in {config.recordings} (known: {known})"
                )
            loop = config.loop or stream_id == BUILTIN_STREAM
            timeline = Timeline(entry.recording, epoch, every=config.every, loop=loop)
            stream = LiveStream(stream_id, timeline, self.metrics, config.burst, clock=clock)
            self.live[stream_id] = stream
            self._start_task(stream.run(), f"live stream {stream_id}")
        self._start_task(self._rescan(), "catalog rescan")
        self.ready = True
        log.info("ready: live %s; %d recordings", ", ".join(self.live), len(self.catalog.entries))

    def _start_task(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task; if it ever dies, log why and stop claiming to be ready."""
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._task_ended)
        self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.ready = False
        log.error("%s failed; /readyz now reports not ready", task.get_name(),
                  exc_info=task.exception())  # fmt: skip

    async def shutdown(self) -> None:
        """Stop accepting, go unready, close every client with 1001, stop the streams."""
        self.ready = False
        log.info("shutting down: closing %d connections", self.metrics.connections)
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), SHUTDOWN_CLOSE_TIMEOUT + 2)
            except TimeoutError:
                log.warning("some connections did not close in time; exiting anyway")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("stopped")

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.shutdown()

    async def _rescan(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_RESCAN_S)
            await asyncio.to_thread(self.catalog.scan)

    # -- HTTP and routing ------------------------------------------------------------------

    def describe_streams(self) -> dict[str, Any]:
        return {"streams": [stream.describe(stream.clock()) for stream in self.live.values()]}

    def authorized(self, request: Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        if given.lower().startswith("bearer "):
            given = given[7:].strip()
        else:
            given = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        is_upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        needs_auth = (
            is_upgrade or path in ("/metrics", "/recordings") or path.startswith("/recordings/")
        )
        if needs_auth and not self.authorized(request):
            self.metrics.refused["unauthorized"] += 1
            return http_api.error_response(
                401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'"
                " or ?token=<token>",
            )  # fmt: skip
        if not is_upgrade:
            return await http_api.handle(self, path, request) or http_api.error_response(
                404, "not_found", f"no such path: {path}; see /streams and /recordings"
            )
        if not self.ready:
            return http_api.error_response(
                503, "not_ready", "the server is starting or stopping; retry in a few seconds"
            )
        if not (path == "/demodata" or path.startswith(("/live/", "/replay/"))):
            return http_api.error_response(
                404, "not_found", f"no WebSocket at {path}; use /live/<stream>, /replay/<recording>"
            )
        return None

    async def handle_connection(self, connection: ServerConnection) -> None:
        path = urlsplit(connection.request.path).path
        metrics = self.metrics
        metrics.connections += 1
        metrics.connections_total += 1
        try:
            if metrics.connections > self.config.max_connections:
                metrics.refused["server_full"] += 1
                await connection.close(
                    protocol.CLOSE_SERVER_FULL,
                    f"server full ({self.config.max_connections} connections); retry later",
                )
                return
            await self._route(connection, path)
        finally:
            metrics.connections -= 1

    async def _route(self, connection: ServerConnection, path: str) -> None:
        if path == "/demodata":
            stream = next(iter(self.live.values()))
            await serve_legacy(connection, stream, self.metrics)
            return
        kind, _, name = path.lstrip("/").partition("/")
        if kind == "live" and name in self.live:
            stream = self.live[name]
            default_buffer = min(stream.max_buffer, int(DEFAULT_BUFFER_S * stream.timeline.rate))
            await serve_live(connection, stream, self.metrics, default_buffer)
            return
        if kind == "replay":
            entry = await asyncio.to_thread(self._find_recording, name)
            if entry is not None:
                await serve_replay(connection, entry, self.metrics)
                return
        known = ", ".join(self.live) if kind == "live" else ", ".join(self.catalog.entries)
        self.metrics.protocol_errors["unknown_stream"] += 1
        WebSocketSink(connection).write(
            protocol.error("unknown_stream", f"no {kind} stream {name!r}; known: {known or 'none'}")
        )
        await connection.close(protocol.CLOSE_UNKNOWN_STREAM, f"unknown stream {name!r}")

    def _find_recording(self, name: str) -> Entry | None:
        entry = self.catalog.get(name)
        if entry is None:  # dropped in since the last scan?
            self.catalog.scan_if_older(MISS_RESCAN_S)
            entry = self.catalog.get(name)
        return entry
