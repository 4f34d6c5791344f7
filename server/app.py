"""The server process: loads recordings, runs live streams, routes connections, stops cleanly.

Two listeners: websockets on ``--port`` for /live, /replay and /demodata, and aiohttp on
``--http-port`` for everything plain HTTP (server/http_app.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from server import http_app, protocol
from server.broker import Broker, make_broker, redact_url
from server.builtin import load_builtin
from server.catalog import Catalog
from server.clock import steady_wall_clock
from server.config import BUILTIN_STREAM, DEFAULT_BUFFER_S, ServerConfig, is_loopback
from server.follower import Follower, follow_broker
from server.ingest import Ingest
from server.legacy import serve_legacy
from server.live_driver import LiveDriver
from server.live_session import LiveSession
from server.maps import map_routes
from server.metrics import Metrics
from server.replay_session import ReplaySession
from server.streams.encoding import ConnectionOptions
from server.streams.live import LiveStream
from server.streams.store import FrameStore
from server.streams.timeline import Timeline
from server.transport import WebSocketSink, close_reason

log = logging.getLogger(__name__)

SHUTDOWN_CLOSE_TIMEOUT = 3.0  # seconds a client gets to answer our close frame
CATALOG_RESCAN_S = 2.0
# Awaited sends (replies, replay, fetch) wait while more than this is queued: large enough to
# keep a fetch streaming at loopback speed, small enough to bound a stalled client's memory.
WRITE_LIMIT = 256 * 1024
MISS_RESCAN_S = 1.0  # a request for an unknown recording rescans at most this often
# Client messages are tiny: incoming data a connection can hold is one queued message and one
# being read, each at most HARD_MAX_MESSAGE (docs/deploy.md, "Sizing").
MAX_QUEUE = 1
# Connections waiting to be accepted: thousands of clients ramping up must not overflow it.
LISTEN_BACKLOG = 4096
BROKER_PING_S = 2.0  # how often the broker's backend is asked, so its health is always current


class App:
    def __init__(
        self,
        config: ServerConfig,
        clock: Callable[[], float] | None = None,
        broker: Broker | None = None,  # default: the one --broker names, of the default window
    ) -> None:
        self.config = config
        self.clock = clock or steady_wall_clock()
        self.metrics = Metrics()
        self.catalog = Catalog(config.recordings)
        self.drivers: dict[str, LiveDriver] = {}  # live stream id -> its driver
        self.broker = broker or make_broker(config.broker)
        self.ingest = Ingest(self)
        self.followers: dict[str, Follower] = {}  # live matches served here, by stream id
        self.downloads: http_app.Downloads | None = None  # set when the HTTP app is built
        self.paced_sessions = 0  # /replay and /demodata connections now (--max-replays)
        self.ready = False
        self.failed: str | None = None  # the background task that died, if one did
        self.port: int | None = None
        self.http_port: int | None = None
        self._server: Server | None = None
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics.subscriber_counts = lambda: {
            sid: len(driver.stream.subscribers) for sid, driver in self.drivers.items()
        }
        self.metrics.broker_up = lambda: self.broker.healthy

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen at once (so /healthz answers), then load recordings and become ready."""
        config = self.config
        self._http = web.AppRunner(http_app.build(self), access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, config.host, config.http_port, backlog=LISTEN_BACKLOG)
        await site.start()
        self.http_port = self._http.addresses[0][1]
        self._server = await serve(
            self.handle_connection,
            config.host,
            config.port,
            process_request=self.process_request,
            compression=None,  # per-message deflate costs CPU per client and breaks encode-once
            max_size=protocol.HARD_MAX_MESSAGE,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=SHUTDOWN_CLOSE_TIMEOUT,
            server_header=protocol.SERVER_NAME,
            backlog=LISTEN_BACKLOG,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "listening: WebSocket ws://%s:%d, HTTP http://%s:%d",
            config.host, self.port, config.host, self.http_port,
        )  # fmt: skip
        if (warning := open_server_warning(config)) is not None:
            log.warning("%s", warning)
        await asyncio.to_thread(self.catalog.scan)
        live_ids = config.live
        if not live_ids:
            recording = await asyncio.to_thread(load_builtin, config.builtin_rounds)
            self.catalog.add_builtin(BUILTIN_STREAM, recording, Path(recording.name))
            live_ids = [BUILTIN_STREAM]
        epoch = config.epoch if config.epoch is not None else self.clock()
        for stream_id in live_ids:
            entry = self.catalog.get(stream_id)
            if entry is None:
                known = ", ".join(sorted(self.catalog.entries)) or "none"
                raise SystemExit(
                    f"--live {stream_id}: no such recording in {config.recordings} (known: {known})"
                )
            loop = config.loop or stream_id == BUILTIN_STREAM
            timeline = Timeline(entry.recording, epoch, every=config.every, loop=loop)
            self.add_stream(LiveStream(stream_id, timeline, self.metrics, config.burst))
        self.start_task(self._rescan(), "catalog rescan")
        self.start_task(self._watch_broker(), "broker health check")
        if config.role != "serve":
            self.start_task(self.ingest.run(), "GSI ingest")
        if config.role != "ingest":
            self.start_task(follow_broker(self), "broker follower")
        self.ready = True
        log.info(
            "ready (%s): live %s; %d recordings; GSI matches %s; broker %s",
            config.role, ", ".join(self.drivers), len(self.catalog.entries),
            ", ".join(config.gsi_tokens()) or "none",
            redact_url(config.broker) if config.broker else "in memory",
        )  # fmt: skip

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: the HTTP status and a JSON body.

        Ready once started, until draining or until a background task died for good. The
        broker's health is reported, not required: a replica whose Redis is away still serves
        recorded streams, replays, the page and every frame it holds, and the ingest still
        takes the game's posts (they wait for Redis), so taking every pod out of the Service
        at once would turn a partial outage into a full one (docs/deploy.md, "Probes").
        """
        broker = "ok" if self.broker.healthy else "down"
        if self.ready:
            return 200, {"status": "ready", "broker": broker}
        reason = f"{self.failed} failed" if self.failed else "starting or stopping"
        return 503, {"status": "not_ready", "reason": reason, "broker": broker}

    def add_stream(self, stream: LiveStream) -> LiveDriver:
        """Serve ``stream`` at /live/<id> (replacing an ended one of the same id)."""
        old = self.drivers.get(stream.id)
        if old is not None:
            old.task.cancel()
        driver = LiveDriver(stream, self.clock)
        driver.task = self.start_task(driver.run(), f"live stream {stream.id}")
        self.drivers[stream.id] = driver
        return driver

    def start_task(
        self, coroutine: Coroutine[Any, Any, None], name: str, supervised: bool = False
    ) -> asyncio.Task[None]:
        """Run a background task, cancelled at shutdown. If it dies, that is logged once and
        the process stops claiming to be ready: nothing would start it again. A
        ``supervised`` task is one whose starter watches it and starts it again (a live
        match's follower): its failure is that starter's to log and no reason to go unready.
        """
        task = asyncio.create_task(coroutine, name=name)
        if not supervised:
            task.add_done_callback(self._task_ended)
        self._tasks = [t for t in self._tasks if not t.done()] + [task]
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.ready = False
        self.failed = self.failed or task.get_name()
        log.error("%s failed and will not be started again; /readyz now reports not ready",
                  task.get_name(), exc_info=task.exception())  # fmt: skip

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
        await self.ingest.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.close()
        if self._http is not None:
            await self._http.cleanup()
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

    async def _watch_broker(self) -> None:
        """Ask the broker's backend every few seconds, so ``eeict_broker_up`` and ``/readyz``
        are current even when nothing else uses it (an ingest with no match in play)."""
        while True:
            try:
                await self.broker.ping()
            except Exception:  # a bug in an engine: logged, and the check goes on
                log.exception("checking the broker failed")
            await asyncio.sleep(BROKER_PING_S)

    # -- what is served --------------------------------------------------------------------

    def describe_streams(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "streams": [driver.stream.describe(now) for driver in self.drivers.values()],
            "ports": http_app.describe_ports(self.port, self.http_port),
            "broker": {
                "engine": "redis" if self.config.broker else "memory",
                "up": self.broker.healthy,
            },
        }

    def find_replayable(self, name: str) -> tuple[str, FrameStore, dict[str, Any]] | None:
        """A live match in play (its frames so far) or a recording, by id."""
        follower = self.followers.get(name)
        description = follower.describe() if follower is not None else None
        if description is not None:
            return name, follower.feed.store, description
        entry = self.catalog.get(name)
        if entry is None:
            return None
        return entry.id, entry.recording, entry.describe()

    def extra_routes(self) -> list[web.RouteDef]:
        """HTTP routes of the map overviews (server/maps.py)."""
        return map_routes(
            lambda: [entry.recording for entry in list(self.catalog.entries.values())],
            self.config.overviews,
        )

    # -- WebSocket routing -----------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        if given.lower().startswith("bearer "):
            given = given[7:].strip()
        else:
            given = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        return http_app.token_matches(given, token)

    def origin_allowed(self, request: Request) -> bool:
        """No Origin (not a browser), a configured one, or the page's own host (our HTTP port,
        or one origin behind a proxy)."""
        origin = request.headers.get("Origin")
        if origin is None or origin in self.config.allowed_origins:
            return True
        host, _, port = (request.headers.get("Host") or "").rpartition(":")
        if not host or not port.isdigit():  # no port: the Host of a proxy (an OpenShift Route)
            host, port = request.headers.get("Host") or "", ""
        page = urlsplit(origin)
        same_host = page.hostname == host.strip("[]").lower()
        return same_host and (not port or page.port in (self.http_port, self.port))

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        for name in (*http_app.SINGLE_HEADERS, "Origin"):
            if len(request.headers.get_all(name)) > 1:
                return _ws_error(400, "bad_request", f"send one {name} header, not several")
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            # Plain HTTP lives on the HTTP port: send browsers and scripts there.
            host = (request.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
            location = f"http://{host}:{self.http_port}{request.path}"
            return Response(
                308, "Permanent Redirect",
                Headers([("Location", location), ("Content-Length", "0")]), b"",
            )  # fmt: skip
        if not self.origin_allowed(request):
            self.metrics.refused["origin"] += 1
            return _ws_error(
                403, "origin_not_allowed", "this page's origin may not open WebSockets here; "
                "start the server with --allowed-origins <origin>",
            )  # fmt: skip
        if not self.authorized(request):
            self.metrics.refused["unauthorized"] += 1
            return _ws_error(
                401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'"
                " or ?token=<token>",
            )  # fmt: skip
        if not self.ready:
            return _ws_error(
                503, "not_ready", "the server is starting or stopping; retry in a few seconds"
            )
        if not (path == "/demodata" or path.startswith(("/live/", "/replay/"))):
            return _ws_error(
                404, "not_found", f"no WebSocket at {path}; use /live/<stream>, /replay/<recording>"
            )
        return None

    async def handle_connection(self, connection: ServerConnection) -> None:
        request = urlsplit(connection.request.path)
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
            await self._route(connection, request.path, parse_qs(request.query))
        finally:
            metrics.connections -= 1

    async def _route(
        self, connection: ServerConnection, path: str, query: dict[str, list[str]]
    ) -> None:
        try:
            options = ConnectionOptions.parse({key: values[0] for key, values in query.items()})
        except protocol.ProtocolError as exc:
            self.metrics.protocol_errors[exc.code] += 1
            WebSocketSink(connection).write(exc.reply())
            await connection.close(CloseCode.POLICY_VIOLATION, close_reason(exc.message))
            return
        if path == "/demodata" or path.startswith("/replay/"):
            if self.paced_sessions >= self.config.max_replays:
                self.metrics.refused["replays_full"] += 1
                await connection.close(
                    protocol.CLOSE_SERVER_FULL,
                    f"{self.config.max_replays} replay and /demodata sessions at once; retry later",
                )
                return
            self.paced_sessions += 1
            try:
                await self._route_paced(connection, path, query, options)
            finally:
                self.paced_sessions -= 1
            return
        kind, _, name = path.lstrip("/").partition("/")
        if kind == "live" and name in self.drivers:
            driver = self.drivers[name]
            rate = driver.stream.feed.rate
            default_buffer = min(driver.stream.max_buffer, int(DEFAULT_BUFFER_S * rate))
            await LiveSession(connection, driver, self.metrics, default_buffer, options).run()
            return
        await self._unknown_stream(connection, kind, name)

    async def _route_paced(
        self,
        connection: ServerConnection,
        path: str,
        query: dict[str, list[str]],
        options: ConnectionOptions,
    ) -> None:
        """/replay and /demodata: sessions sent at their client's pace (each may hold a write
        limit, a fetch chunk and a reply queue: --max-replays bounds how many)."""
        if path == "/demodata":
            driver = self._legacy_driver(query.get("stream", [None])[0])
            if driver is not None:
                await serve_legacy(connection, driver, self.clock, self.metrics)
                return
            await self._unknown_stream(connection, "live", query.get("stream", [""])[0])
            return
        name = path.partition("/replay/")[2]
        found = self.find_replayable(name)
        if found is None:
            found = await asyncio.to_thread(self._rescan_for, name)
        if found is None:
            await self._unknown_stream(connection, "replay", name)
            return
        await ReplaySession(connection, *found, self.metrics, options).run()

    async def _unknown_stream(self, connection: ServerConnection, kind: str, name: str) -> None:
        known = self.drivers if kind == "live" else self.catalog.entries
        self.metrics.protocol_errors["unknown_stream"] += 1
        WebSocketSink(connection).write(
            protocol.error(
                "unknown_stream",
                f"no {kind} stream {name[:100]!r}; known: {', '.join(known) or 'none'}",
            )
        )
        await connection.close(
            protocol.CLOSE_UNKNOWN_STREAM, close_reason(f"unknown stream {name!r}")
        )

    def _legacy_driver(self, name: str | None) -> LiveDriver | None:
        """The stream ``/demodata`` plays: the one named, else a live match in play, else the
        first configured stream (the old client cannot name one)."""
        if name is not None:
            return self.drivers.get(name)
        playing = [f for f in self.followers.values() if f.driver and not f.ended]
        if playing:
            return playing[-1].driver
        return next(iter(self.drivers.values()))

    def _rescan_for(self, name: str) -> tuple[str, FrameStore, dict[str, Any]] | None:
        self.catalog.scan_if_older(MISS_RESCAN_S)  # dropped in since the last scan?
        return self.find_replayable(name)


def open_server_warning(config: ServerConfig) -> str | None:
    """What the log says when no token protects the server (loopback, or --allow-open)."""
    if config.token:
        return None
    who = "every local user" if is_loopback(config.host) else "anyone who can reach it"
    if config.allow_open:
        who += " (--allow-open)"
    return (
        f"no --token: streams, recordings, downloads, /streams and /metrics on {config.host} "
        f"are open to {who}; set --token (EEICT_TOKEN) to require one"
    )


def _ws_error(status: int, code: str, message: str) -> Response:
    """A refused upgrade, as JSON like every HTTP error of this server."""
    body = json.dumps({"error": code, "message": message}).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Response(status, HTTPStatus(status).phrase, headers, body)
