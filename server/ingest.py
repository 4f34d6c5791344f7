"""Live matches from CS2's Game State Integration: posts in, frames to the broker, a recording.

``POST /gsi/<match>`` hands each payload to the match's framer (processing/gsi/) and answers at
once; one task turns framed samples into frames at the stream's rate and publishes them through
the broker (in this process, or Redis for many replicas: server/follower.py serves them),
keeps them in a local store and a journal, marks the stream stale when posts stop, and writes
a normal recording when the match ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from processing.gsi.framer import Framer
from processing.gsi.payload import GsiPayloadError, auth_token, decode_payload
from processing.recording import SUFFIX, Recording, write_recording
from processing.source import SourceInfo
from server import journal
from server.broker import BrokerError
from server.builtin import cache_dir
from server.follower import pack_frame
from server.http_app import token_matches
from server.streams.store import GrowingStore

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)

RATE = 64.0  # frames per second of a live match: what the clients play
STEP_S = 1.0 / RATE


class LiveMatch:
    """One incarnation of an ingested match: its framer, frames so far, stream and journal."""

    def __init__(self, name: str, framer: Framer, started: float) -> None:
        self.name = name
        self.framer = framer
        self.started = started
        self.store: GrowingStore | None = None  # every frame of this incarnation, for the end
        self.epoch: str | None = None  # the broker's, once the first frame is published
        self.journal: journal.Journal | None = None
        self.tick_offset = 0  # frames reloaded from a journal come first
        self.time_offset = 0.0
        self.unpublished: list[tuple[int, bytes]] = []
        self.stale = False
        self.stale_since: float | None = None
        self.finishing = False


class Ingest:
    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config
        self.tokens = app.config.gsi_tokens()
        self.matches: dict[str, LiveMatch] = {}
        self.delay = app.config.gsi_delay
        self._writes: set[asyncio.Task[None]] = set()

    # -- posts ----------------------------------------------------------------------------

    def post(self, name: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Take one post; returns the HTTP status and a short JSON answer. Never blocks."""
        metrics = self.app.metrics
        if self.config.role == "serve":
            return self._refuse(404, "not_ingesting", "this replica serves only; post GSI to "
                                "the ingest process")  # fmt: skip
        expected = self.tokens.get(name)
        if expected is None:
            return self._refuse(404, "unknown_match", f"no live match {name[:64]!r} is "
                                "configured; start the server with --gsi NAME=TOKEN")  # fmt: skip
        try:
            payload = decode_payload(body)
        except GsiPayloadError as exc:
            return self._refuse(400, "bad_payload", f"not a GSI payload: {exc.reason}")
        except RecursionError:
            return self._refuse(400, "bad_payload", "not a GSI payload: JSON nested too deep")
        if not token_matches(auth_token(payload) or "", expected):
            return self._refuse(401, "unauthorized", "wrong or missing auth token in the payload")
        now = self.app.clock()
        match = self.matches.get(name)
        if match is not None and match.finishing and _phase(payload) == "gameover":
            return 200, {"ok": True, "ignored": "the match is over"}  # the scoreboard lingers
        if match is None or match.finishing:
            match = self._begin(name, now)
        try:
            match.framer.add(payload, now)
        except GsiPayloadError as exc:
            return self._refuse(400, "bad_payload", f"not a GSI payload: {exc.reason}")
        metrics.ingest_posts[name] += 1
        return 200, {"ok": True}

    def _refuse(self, status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        self.app.metrics.ingest_errors[code] += 1
        return status, {"error": code, "message": message}

    def _begin(self, name: str, now: float) -> LiveMatch:
        match = LiveMatch(name, Framer(rate=RATE, delay=self.config.gsi_delay), now)
        self.matches[name] = match
        log.info("live match %s: first post", name)
        return match

    # -- frames ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Frame every match at the stream rate until cancelled."""
        while True:
            now = self.app.clock()
            for match in list(self.matches.values()):
                if not match.finishing:
                    await self._advance(match, now)
            await asyncio.sleep(STEP_S)

    async def _advance(self, match: LiveMatch, now: float) -> None:
        frames = match.framer.frames(now)
        if frames and match.store is None:
            await self._open(match, now)
        store = match.store
        if store is None:
            return
        for frame in frames:
            frame["tick"] += match.tick_offset
            frame["round_time"] = round(frame["round_time"] + match.time_offset, 4)
            seq = store.frame_count
            chunk = store.append(frame)
            match.unpublished.append((seq, pack_frame(msgpack.packb(frame), now - self.delay)))
            if chunk is not None:
                match.journal.append(chunk)
        stale = match.framer.stale(now, self.config.gsi_stale_after)
        state: dict[str, Any] = {}
        if stale != match.stale:
            match.stale, match.stale_since = stale, (now if stale else None)
            state["stale"] = stale
            log.info("live match %s: %s", match.name,
                     "feed stopped (stale)" if stale else "feed resumed")  # fmt: skip
        quiet_for = now - match.stale_since if match.stale_since is not None else 0.0
        framed_all = now - self.delay > (match.framer.last_received or now) + STEP_S
        if (match.framer.ended and framed_all) or quiet_for > self.config.gsi_finish_after:
            state["ended"] = True  # game over once its last posts are frames too
            self._finish(match, "game over" if match.framer.ended else "feed gone")
        await self._publish(match, state)

    async def _publish(self, match: LiveMatch, state: dict[str, Any]) -> None:
        """Hand new frames (then state changes) to the broker; kept for later if it fails."""
        broker = self.app.broker
        try:
            if match.unpublished:
                await broker.publish_many(match.name, match.epoch, match.unpublished)
                match.unpublished = []
            if state:
                await broker.mark(match.name, match.epoch, **state)
        except BrokerError as exc:
            log.warning("live match %s: the broker refused frames (%s); retrying", match.name, exc)
            match.unpublished = match.unpublished[-self.app.broker.window :]

    async def _open(self, match: LiveMatch, now: float) -> None:
        """The first frame: a new incarnation in the broker and a local store, reloading a
        journal from before a restart when there is one."""
        meta = {
            "map": match.framer.description.map_name,
            "tickrate": RATE,
            "teams": match.framer.description.team_names,
            "source_file": f"gsi:{match.name}",
        }
        store = GrowingStore(match.name, meta)
        path = self._journal_path(match.name)
        loaded = journal.read(path) if path.exists() else None
        match.journal = journal.Journal(path)
        if loaded is not None and loaded[0].get("map") == meta["map"]:
            for frames in loaded[1]:
                for frame in frames:
                    match.unpublished.append((store.frame_count, pack_frame(msgpack.packb(frame),
                                                                            now)))  # fmt: skip
                    store.append(frame)
            if store.frame_count:
                match.tick_offset = int(store.meta["last_tick"]) + 1
                match.time_offset = store.frame(store.frame_count - 1)["round_time"] + STEP_S
            match.journal.reopen()
            log.info("live match %s: %d frames reloaded from %s", match.name,
                     store.frame_count, path.name)  # fmt: skip
        else:
            match.journal.start(meta)
        # The epoch clients see: when seq 0 would have been made at 64/s, so the next frame's
        # time (epoch + seq / rate) is now, journal or not.
        started = now - store.frame_count / RATE
        match.epoch = await self.app.broker.start_stream(match.name, {**meta, "started": started})
        match.store = store

    def _journal_path(self, name: str) -> Path:
        return self._output_dir() / f".{name}.journal"

    def _output_dir(self) -> Path:
        if self.config.recordings is not None:
            return self.config.recordings
        folder = cache_dir() / "matches"
        folder.mkdir(exist_ok=True)
        return folder

    # -- the end ---------------------------------------------------------------------------

    def _finish(self, match: LiveMatch, why: str) -> None:
        """No more frames: the broker is told (its subscribers get ``end``), and the match is
        written as a recording."""
        match.finishing = True
        match.store.finish()
        log.info("live match %s: %s after %d frames; writing the recording", match.name, why,
                 match.store.frame_count)  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._write(match))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, match: LiveMatch) -> None:
        store = match.store
        stamp = datetime.fromtimestamp(match.started, UTC).strftime("%Y%m%d-%H%M%S")
        recording_id = f"{match.name}-{stamp}"
        path = self._output_dir() / f"{recording_id}{SUFFIX}"
        digest = hashlib.sha256()
        for chunk in store.sealed_chunks():
            digest.update(chunk)
        info = SourceInfo(
            map_name=str(store.meta["map"]),
            tickrate=RATE,
            source_file=f"gsi:{match.name}",
            source_sha256=digest.hexdigest(),
            parser="gsi",
            team_names=dict(store.meta["teams"]),
        )
        frames = (frame for start in range(0, store.frame_count, 256)
                  for frame in store.frames(start, start + 256))  # fmt: skip
        try:
            await asyncio.to_thread(write_recording, path, info, frames)
        except Exception:
            log.exception("live match %s: writing %s failed; the journal is kept", match.name,
                          path.name)  # fmt: skip
            return
        match.journal.remove()
        if self.config.recordings is None:
            recording = await asyncio.to_thread(Recording.open, path)
            self.app.catalog.add_builtin(recording_id, recording, path)
        else:
            await asyncio.to_thread(self.app.catalog.scan)
        log.info("live match %s: recorded as %s (%d frames)", match.name, path.name,
                 store.frame_count)  # fmt: skip

    async def shutdown(self) -> None:
        """Let recordings being written finish; journals of matches in play stay for a restart."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        for match in self.matches.values():
            if match.journal is not None:
                match.journal.close()


def _phase(payload: dict) -> object:
    """The payload's map phase (warmup, live, intermission, gameover), if it has one."""
    block = payload.get("map")
    return block.get("phase") if isinstance(block, dict) else None
