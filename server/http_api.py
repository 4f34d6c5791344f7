"""Plain HTTP on the WebSocket port: health, readiness, metrics, catalogs, downloads, the page.

websockets hands every request to ``process_request`` before the handshake; a request for one
of these paths is answered here and never becomes a WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from server.app import App

STATIC = Path(__file__).parent / "static"
HTTP_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/streams", "/recordings")
_DOWNLOAD = re.compile(r"^/recordings/([^/]+)/file$")
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


def response(
    status: int, body: bytes | str, content_type: str, headers: dict[str, str] | None = None
) -> Response:
    data = body.encode() if isinstance(body, str) else body
    all_headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-cache"),
            ("Access-Control-Allow-Origin", "*"),
            *(headers or {}).items(),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, all_headers, data)


def json_response(status: int, payload: Any) -> Response:
    return response(status, json.dumps(payload, indent=1), "application/json")


def error_response(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


async def handle(app: App, path: str, request: Request) -> Response | None:
    """Answer a plain HTTP request, or return None when ``path`` is not an HTTP path."""
    if path == "/healthz":
        return response(200, "ok\n", "text/plain")
    if path == "/readyz":
        if app.ready:
            return response(200, "ready\n", "text/plain")
        return response(503, "not ready\n", "text/plain")
    if path == "/metrics":
        return response(200, app.metrics.render(), "text/plain; version=0.0.4")
    if path == "/streams":
        return json_response(200, app.describe_streams())
    if path == "/recordings":  # the folder is rescanned every 2 s in the background
        return json_response(200, app.catalog.describe())
    download = _DOWNLOAD.match(path)
    if download:
        return await asyncio.to_thread(_download, app, download.group(1), request)
    if path == "/" or path.startswith("/static/"):
        return _static("index.html" if path == "/" else path[len("/static/") :])
    return None


def _download(app: App, recording_id: str, request: Request) -> Response:
    """The whole file, with a checksum, conditional GET and one byte range (runs in a thread)."""
    entry = app.catalog.get(recording_id)
    if entry is None:
        return error_response(404, "unknown_recording", f"no recording {recording_id!r}")
    etag = f'"{entry.sha256()}"'
    size = entry.recording.size
    headers = {
        "ETag": etag,
        "X-Checksum-SHA256": entry.sha256(),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{recording_id}.eeict"',
    }
    if request.headers.get("If-None-Match") == etag:
        return response(304, b"", "application/octet-stream", headers)
    match = _RANGE.match(request.headers.get("Range", "").strip())
    if match and _valid_range(*match.groups()):  # otherwise the whole file (RFC 9110 14.2)
        span = _byte_range(*match.groups(), size)
        if span is None:
            headers["Content-Range"] = f"bytes */{size}"
            return response(416, b"", "application/octet-stream", headers)
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        body = bytes(entry.recording.raw_bytes(start, stop))
        return response(206, body, "application/octet-stream", headers)
    return response(200, bytes(entry.recording.raw_bytes()), "application/octet-stream", headers)


def _valid_range(first: str, last: str) -> bool:
    return bool(first or last) and not (first and last and int(last) < int(first))


def _byte_range(first: str, last: str, size: int) -> tuple[int, int] | None:
    """[start, stop) of one valid ``bytes=first-last`` range; None when none of it exists."""
    if first == "":  # suffix range: the last N bytes
        start, stop = max(0, size - int(last)), size
    else:
        start = int(first)
        stop = size if last == "" else min(size, int(last) + 1)
    return (start, stop) if start < stop else None


def _static(name: str) -> Response:
    target = (STATIC / name).resolve()
    if not target.is_relative_to(STATIC.resolve()) or not target.is_file():
        return error_response(404, "not_found", f"no such file: {name}")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return response(200, target.read_bytes(), content_type)
