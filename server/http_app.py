"""Plain HTTP, served by aiohttp: the page, catalogs, downloads, GSI ingest, probes, metrics.

websockets serves only WebSockets (it cannot read a request body); everything else is here,
on its own port. Downloads are streamed from the file by aiohttp's FileResponse (sendfile,
Range, If-None-Match), never copied into memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from server import protocol

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_POST_BYTES = 256 * 1024  # a GSI post with all ten players is ~10 KB
PUBLIC_PATHS = ("/", "/healthz", "/readyz")
# Headers whose repeats would make "which one counts" ambiguous: refused, never guessed.
SINGLE_HEADERS = (
    "Authorization",
    "Range",
    "Host",
    "Upgrade",
    "If-None-Match",
)  # everything else needs the token, when one is set
APP_KEY = web.AppKey("eeict_app", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientErrorsQuiet(logging.Filter):
    """aiohttp logs a malformed request (already answered 400) as an error with a traceback;
    a client's bad bytes are not our error, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


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
            response = await handler(request)
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = (
                "ETag, X-Checksum-SHA256, Content-Range, Content-Length"
            )
        response.headers.add("Vary", "Origin")
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
        if app.healthy:
            return web.Response(text="ready\n")
        why = "broker unreachable" if app.ready else "starting or stopping"
        return web.Response(status=503, text=f"not ready: {why}\n")

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
        if entry is None or entry.path is None:
            return _unknown_recording(request.match_info["id"])
        return await downloads.serve(request, entry.id, entry.path, entry.stamp)

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
    """Recording downloads: streamed from the file, a checksum header, at most N at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._checksums: dict[tuple[str, tuple[int, int]], str] = {}

    async def serve(
        self, request: web.Request, recording_id: str, path: Path, stamp: tuple[int, int]
    ) -> web.StreamResponse:
        if self.active >= self.limit:
            return error(
                503, "busy", f"{self.limit} downloads are running; retry shortly",
                **{"Retry-After": "2"},
            )  # fmt: skip
        self.active += 1
        try:
            checksum = await self._checksum(path, stamp)
        except BaseException:
            self.active -= 1
            raise
        return _CountedFile(
            self._release,
            path,
            headers={
                "X-Checksum-SHA256": checksum,
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{recording_id}.eeict"',
            },
        )

    def _release(self) -> None:
        self.active -= 1

    async def _checksum(self, path: Path, stamp: tuple[int, int]) -> str:
        key = (str(path), stamp)
        checksum = self._checksums.get(key)
        if checksum is None:
            checksum = await asyncio.to_thread(_file_sha256, path)
            self._checksums = {k: v for k, v in self._checksums.items() if k[0] != str(path)}
            self._checksums[key] = checksum
        return checksum


class _CountedFile(web.FileResponse):
    """A FileResponse that frees its download slot once the file has been sent (or failed)."""

    def __init__(self, release: Callable[[], None], path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._release = release

    async def prepare(self, request: web.BaseRequest):
        try:
            return await super().prepare(request)
        finally:
            release, self._release = self._release, lambda: None
            release()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def describe_ports(ws_port: int | None, http_port: int | None) -> dict[str, Any]:
    """Where this process listens, so the page (on the HTTP port) finds the WebSocket port."""
    return {"ws": ws_port, "http": http_port, "protocol": protocol.PROTOCOL_VERSION}
