"""The HTTP port of the server redesign, for the radar page tests until server/app.py mounts
it: the page and its modules, ``server.maps.map_routes``, ``/recordings/<id>/events``, and
``/streams`` / ``/recordings`` taken from a real ``eeict serve`` (its WebSocket port) with
``"ports"`` added, so the page finds the WebSocket on the other port as it will in production.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web
from server_process import free_port

from processing.recording import Recording
from server.maps import map_routes

STATIC = Path(__file__).resolve().parents[1] / "server" / "static"


def events_of(recording: Recording) -> list[dict[str, Any]]:
    """The recording's events index; read off the frames (kills, plants, round starts) when
    the file predates ``meta["events"]``."""
    if recording.meta.get("events") is not None:
        return recording.meta["events"]
    events: list[dict[str, Any]] = []
    planted = False
    for frame in recording.frames(0, recording.frame_count):
        tick = frame["tick"]
        if frame.get("round_start"):
            events.append({"tick": tick, "type": "round_start"})
        for kill in frame.get("kills") or ():
            fields = {k: kill.get(k) for k in ("killer", "victim", "weapon", "is_hs")}
            events.append({"tick": tick, "type": "kill", **fields})
        now_planted = bool((frame.get("bomb") or {}).get("planted"))
        if now_planted and not planted:
            events.append({"tick": tick, "type": "plant", "player": frame["bomb"]["planted_by"]})
        planted = now_planted
    return events


@web.middleware
async def cors(request: web.Request, handler) -> web.StreamResponse:
    """Any origin may read (a test server on loopback; the real one allows configured ones)."""
    response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


class SeamApp:
    """An aiohttp app on its own loopback port and thread, in front of a WebSocket server."""

    def __init__(self, recordings: dict[str, Recording], overviews: Path | None) -> None:
        self.ws_port = 0  # set before start(): the server may need our url (--allowed-origins)
        self.recordings = recordings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = web.Application(middlewares=[cors])
        app.add_routes(map_routes(lambda: list(recordings.values()), overviews))
        app.add_routes([
            web.get("/", self.index), web.get("/streams", self.streams),
            web.get("/recordings", self.catalog), web.get("/recordings/{id}/events", self.events),
            web.static("/static", STATIC),
        ])  # fmt: skip
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _upstream(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ws_port}{path}"

        def get() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)

        return await asyncio.to_thread(get)

    async def streams(self, request: web.Request) -> web.Response:
        answer = await self._upstream("/streams")
        answer["ports"] = {"ws": self.ws_port, "http": self.port}
        return web.json_response(answer)

    async def catalog(self, request: web.Request) -> web.Response:
        return web.json_response(await self._upstream("/recordings"))

    async def events(self, request: web.Request) -> web.Response:
        recording = self.recordings.get(request.match_info["id"])
        if recording is None:
            raise web.HTTPNotFound(text="unknown recording")
        events = await asyncio.to_thread(events_of, recording)
        return web.json_response({"events": events})
