"""Plain HTTP, served by aiohttp: the page, catalogs, downloads, GSI ingest, probes, metrics.

websockets serves only WebSockets (it cannot read a request body); everything else is here,
on its own port. Downloads are streamed in blocks from the file the catalog has open (never
reopened by name, so a file swapped for a symlink or another file is not what gets sent),
with bounded memory, a bound on concurrent ones and a send timeout per block.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from processing.recording import RecordingError
from server import protocol

if TYPE_CHECKING:
    from server.app import App
    from server.catalog import Entry

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_POST_BYTES = 256 * 1024  # a GSI post with all ten players is ~10 KB
DOWNLOAD_BLOCK = 256 * 1024  # read and sent at a time: a download's memory is about two blocks
# A download whose client takes no block for this long is closed and frees its slot: 8 clients
# that never read would otherwise hold every slot for good.
DOWNLOAD_SEND_TIMEOUT_S = 30.0
PUBLIC_PATHS = ("/", "/healthz", "/readyz")  # and /static/, /gsi/ (its own tokens): no --token
# Headers whose repeats would make "which one counts" ambiguous: refused, never guessed.
SINGLE_HEADERS = (
    "Authorization",
    "Range",
    "Host",
    "Upgrade",
    "If-None-Match",
)
APP_KEY = web.AppKey("eeict_app", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientErrorsQuiet(logging.Filter):
    """aiohttp logs a malformed request (already answered 400) as an error with a traceback;
    a client's bad bytes are not our error, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


def _cors_headers(headers: Any, origin: str | None, allowed: frozenset[str]) -> None:
    if origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = (
            "ETag, X-Checksum-SHA256, Content-Range, Content-Length"
        )
    headers.add("Vary", "Origin")


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def given_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token", "")


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def build(app: App) -> web.Application:
    config = app.config
    allowed = frozenset(config.allowed_origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """CORS only for configured origins: echo the matching one, never ``*``."""
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin in allowed:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Range"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # aiohttp's own answers: 404 no route, 405, ...
                _cors_headers(exc.headers, origin, allowed)
                raise
        _cors_headers(response.headers, origin, allowed)
        return response

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        for name in SINGLE_HEADERS:
            if len(request.headers.getall(name, ())) > 1:
                return error(400, "bad_request", f"send one {name} header, not several")
        path = request.path
        public = path in PUBLIC_PATHS or path.startswith(("/static/", "/gsi/"))
        if config.token and not public and not token_matches(given_token(request), config.token):
            app.metrics.refused["unauthorized"] += 1
            return error(
                401, "unauthorized",
                "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>",
            )  # fmt: skip
        return await handler(request)

    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorsQuiet) for f in server_log.filters):
        server_log.addFilter(ClientErrorsQuiet())
    http = web.Application(middlewares=[cors, auth], client_max_size=MAX_POST_BYTES)
    http[APP_KEY] = app
    downloads = app.downloads = Downloads(config.max_downloads)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        status, body = app.readiness()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-cache"})

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = app.metrics.exposition(request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def streams(request: web.Request) -> web.Response:
        return web.json_response(app.describe_streams(), headers={"Cache-Control": "no-cache"})

    async def recordings(request: web.Request) -> web.Response:
        return web.json_response(app.catalog.describe(), headers={"Cache-Control": "no-cache"})

    async def events(request: web.Request) -> web.Response:
        found = app.find_replayable(request.match_info["id"])
        if found is None:
            return _unknown_recording(request.match_info["id"])
        _, store, _ = found
        return web.json_response({"events": store.meta.get("events", [])})

    async def download(request: web.Request) -> web.StreamResponse:
        entry = app.catalog.get(request.match_info["id"])
        if entry is None:
            return _unknown_recording(request.match_info["id"])
        return await downloads.serve(request, entry)

    async def gsi(request: web.Request) -> web.Response:
        try:
            body: bytes | None = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = None  # refused by the ingest like any bad post: counted, answered in JSON
        status, answer = app.ingest.post(request.match_info["match"], body)
        return web.json_response(answer, status=status)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    http.add_routes(
        [
            web.get("/", index),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/streams", streams),
            web.get("/recordings", recordings),
            web.get("/recordings/{id}/file", download),
            web.get("/recordings/{id}/events", events),
            web.post("/gsi/{match}", gsi),
            web.static("/static", STATIC, append_version=False),
            *app.extra_routes(),
        ]
    )
    return http


def _unknown_recording(recording_id: str) -> web.Response:
    return error(404, "unknown_recording", f"no recording {recording_id!r}; see /recordings")


class Downloads:
    """Recording downloads: streamed from the open file, a checksum header, at most N at a time.

    ``send_timeout`` bounds how long one block may wait for the client (tests shorten it).
    """

    def __init__(self, limit: int, send_timeout: float = DOWNLOAD_SEND_TIMEOUT_S) -> None:
        self.limit = limit
        self.send_timeout = send_timeout
        self.active = 0

    async def serve(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        if self.active >= self.limit:
            return error(
                503, "busy", f"{self.limit} downloads are running; retry shortly",
                **{"Retry-After": "2"},
            )  # fmt: skip
        self.active += 1
        try:
            return await self._serve(request, entry)
        finally:
            self.active -= 1

    async def _serve(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        changed = await asyncio.to_thread(_file_changed, entry)
        if changed is not None:
            return error(
                409, "recording_changed",
                f"the file of recording {entry.id!r} {changed} since it was listed; the server "
                "looks at its folder every few seconds: retry shortly (see /recordings)",
                **{"Retry-After": "2"},
            )  # fmt: skip
        size, mtime_ns = entry.stamp
        etag = f"{mtime_ns:x}-{size:x}"  # what aiohttp's FileResponse sent: caches stay valid
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{entry.id}.eeict"',
                "Accept-Ranges": "bytes",
            }
        )
        response.etag, response.last_modified = etag, mtime_ns / 1e9
        matches = request.if_none_match
        if matches is not None and any(tag.value in (etag, "*") for tag in matches):
            response.set_status(304)
            return response
        try:
            start, stop, ranged = _byte_range(request, size, etag, mtime_ns / 1e9)
        except ValueError:
            return error(
                416, "bad_range", f"the file has {size} bytes; ask for one range within it",
                **{"Content-Range": f"bytes */{size}"},
            )  # fmt: skip
        if ranged:
            response.set_status(206)
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response.headers["X-Checksum-SHA256"] = await asyncio.to_thread(entry.sha256)
        response.content_length = stop - start
        await response.prepare(request)
        if request.method != "HEAD":
            await self._send(request, response, entry, start, stop)
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        entry: Entry,
        start: int,
        stop: int,
    ) -> None:
        """The bytes [start, stop) of the open file, a block at a time; a client that takes no
        block for ``send_timeout`` s, or a file that changes meanwhile, ends the connection."""
        recording = entry.recording
        for offset in range(start, stop, DOWNLOAD_BLOCK):
            try:
                block = await asyncio.to_thread(
                    recording.raw_bytes, offset, min(offset + DOWNLOAD_BLOCK, stop)
                )
                await asyncio.wait_for(response.write(block), self.send_timeout)
            except TimeoutError:
                log.info(
                    "download of %r: the client took nothing for %.0f s; closed",
                    entry.id, self.send_timeout,
                )  # fmt: skip
                break
            except RecordingError as exc:
                log.warning("download of %r stopped: %s", entry.id, exc)
                break
        else:
            return
        if request.transport is not None:
            request.transport.abort()  # frees the slot and the buffered bytes at once


def _file_changed(entry: Entry) -> str | None:
    """Whether the file the catalog has open is no longer what it listed, or no longer the file
    its path names (removed, replaced, or swapped for a symlink); None when it is."""
    opened = entry.recording.file_status()
    if opened is None:  # held in memory
        return None
    if entry.recording.overwritten():
        return "was overwritten"
    try:
        named = os.lstat(entry.path)  # a symlink is looked at, not followed
    except FileNotFoundError:
        return "was removed"
    if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
        return "was replaced"
    return None


def _byte_range(request: web.Request, size: int, etag: str, mtime: float) -> tuple[int, int, bool]:
    """The bytes [start, stop) a request asks for, and whether that is a range (206): all of
    them, or its one ``Range`` (ignored when an ``If-Range`` names another version).
    ValueError: a range not within the file."""
    if_range = request.headers.get("If-Range")
    if if_range is not None:
        date = request.if_range
        if if_range.strip() != f'"{etag}"' and (date is None or date.timestamp() < int(mtime)):
            return 0, size, False
    given = request.http_range  # ValueError for a malformed or backwards range
    start, stop = given.start, given.stop
    if start is None:
        return 0, size, False
    if start < 0:  # the last -start bytes
        start = max(0, size + start)
        stop = size
    else:
        stop = size if stop is None else min(stop, size)
    if start >= size:
        raise ValueError("range starts past the end")
    return start, stop, True


def describe_ports(ws_port: int | None, http_port: int | None) -> dict[str, Any]:
    """Where this process listens, so the page (on the HTTP port) finds the WebSocket port."""
    return {"ws": ws_port, "http": http_port, "protocol": protocol.PROTOCOL_VERSION}
