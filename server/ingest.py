"""Live matches from CS2's Game State Integration: posts in; frames to a journal, the broker
and, once the match is over, a recording.

``POST /gsi/<match>`` is checked here and handed to the match's ``MatchInPlay``
(server/streams/match.py: the rules, pure), answered at once. Each run of a match has a task
of its own that steps it at the stream's rate and does its I/O: sealed chunks to its journal
(server/journal.py), frames and stale/ended marks to the broker (in this process, or Redis for
many replicas: server/follower.py serves them), the recording at the end
(server/match_recording.py). The match's store is the one truth all three are written from,
each with its own position in it, so a failure of one (Redis down when the match starts, a
full disk, a bug met by one match) is logged and tried again later, loses no frame and never
stops another match. At start-up, journals an earlier process left are found: a run whose game
posts again continues; one that stays silent for ``--gsi-finish-after`` is written as a
recording.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processing.gsi.framer import RATE
from processing.gsi.payload import GsiPayloadError, auth_token, decode_payload
from processing.recording import Recording
from server import journal
from server.broker import BrokerError, EpochMismatch, UnknownStream
from server.builtin import cache_dir
from server.follower import pack_frame
from server.http_app import MAX_POST_BYTES, token_matches
from server.match_recording import new_run_id, write_match
from server.streams.match import DESCRIBED, STEP_S, MatchInPlay, MatchRules
from server.streams.store import FRAMES_PER_CHUNK, GrowingStore

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)

RETRY_S = 1.0  # a failed broker or journal operation of a match is tried again after this
REWRITE_S = 30.0  # a recording that could not be written is tried again after this
RECOVERED_CHECK_S = 1.0  # how often journals from before a restart are checked for the bound
SHUTDOWN_WRITES_S = 20.0  # shutting down waits this long for recordings being written
WARN_EVERY_S = 30.0  # the same trouble of one match is logged at most this often


@dataclass(eq=False)
class LiveRun:
    """One run of a match (first post to recording) and where its I/O stands."""

    match: MatchInPlay
    started: float  # Unix time of its first post
    run: str | None = None  # its id (journal and recording), once its first frame is due
    journal: journal.Journal | None = None
    epoch: str | None = None  # its incarnation in the broker, once started there
    published: int = 0  # frames [0, published) are the broker's
    marks: dict[str, Any] = field(default_factory=dict)  # state not yet marked in the broker
    fenced: bool = False  # another process took its stream: the broker is not used again
    broker_retry_at: float = 0.0
    journal_retry_at: float = 0.0

    @property
    def name(self) -> str:
        return self.match.name

    @property
    def delivered(self) -> bool:
        """The broker has everything it will get of this run."""
        store = self.match.store
        if self.fenced or self.epoch is None or store is None:
            return True
        return self.published >= store.frame_count and not self.marks


class Ingest:
    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config
        self.tokens = app.config.gsi_tokens()
        self.rules = MatchRules(
            app.config.gsi_delay, app.config.gsi_stale_after, app.config.gsi_finish_after
        )
        self.runs: dict[str, LiveRun] = {}  # each match's newest run, by name
        self.recovered: dict[str, journal.Contents] = {}  # left by an earlier process: resumable
        self._scanned = asyncio.Event()  # journals from before a restart have been looked at
        self._playing: set[asyncio.Task[None]] = set()
        self._writing: dict[str, asyncio.Task[None]] = {}  # run id -> its recording being written
        self._warned: dict[tuple[str, str], float] = {}

    # -- posts ----------------------------------------------------------------------------

    def post(self, name: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
        """Take one post (``body`` None: it was over the size bound); returns the HTTP status
        and a short JSON answer. Never blocks."""
        if self.config.role == "serve":
            return self._refuse(404, "not_ingesting", "this replica serves only; post GSI to "
                                "the ingest process")  # fmt: skip
        expected = self.tokens.get(name)
        if expected is None:
            return self._refuse(404, "unknown_match", f"no live match {name[:64]!r} is "
                                "configured; start the server with --gsi NAME=TOKEN")  # fmt: skip
        if body is None:
            return self._refuse(413, "too_large", f"body over {MAX_POST_BYTES // 1024} KiB; a "
                                "GSI post with ten players is about 10 KiB")  # fmt: skip
        try:
            payload = decode_payload(body)
        except GsiPayloadError as exc:
            return self._refuse(400, "bad_payload", f"not a GSI payload: {exc.reason}")
        except RecursionError:
            return self._refuse(400, "bad_payload", "not a GSI payload: JSON nested too deep")
        if not token_matches(auth_token(payload) or "", expected):
            return self._refuse(401, "unauthorized", "wrong or missing auth token in the payload")
        now = self.app.clock()
        run = self.runs.get(name)
        if run is not None and run.match.finished and _phase(payload) == "gameover":
            return 200, {"ok": True, "ignored": "the match is over"}  # the scoreboard lingers
        if run is None or run.match.finished:
            run = self._begin(name, now)
        try:
            run.match.add(payload, now)
        except GsiPayloadError as exc:
            return self._refuse(400, "bad_payload", f"not a GSI payload: {exc.reason}")
        self.app.metrics.ingest_posts[name] += 1
        return 200, {"ok": True}

    def _refuse(self, status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        self.app.metrics.ingest_errors[code] += 1
        return status, {"error": code, "message": message}

    def _begin(self, name: str, now: float) -> LiveRun:
        run = self.runs[name] = LiveRun(MatchInPlay(name, self.rules), now)
        log.info("live match %s: first post", name)
        task = asyncio.get_running_loop().create_task(self._play(run), name=f"live match {name}")
        self._playing.add(task)
        task.add_done_callback(self._playing.discard)
        return run

    # -- each run: frames and their I/O -----------------------------------------------------

    async def _play(self, run: LiveRun) -> None:
        """Step the run at the stream's rate until it is over and the broker has it all."""
        await self._scanned.wait()
        while True:
            try:
                if await self._step(run, self.app.clock()):
                    return
            except Exception:  # a bug met by this match: the others go on, and so does this one
                self._warn(run.name, "bug", "live match %s: a step failed; trying again",
                           run.name, exc_info=True)  # fmt: skip
            await asyncio.sleep(STEP_S)

    async def _step(self, run: LiveRun, now: float) -> bool:
        """One step of the run; True once nothing more is to be done for it."""
        match = run.match
        if match.store is None:
            if not match.has_map:
                return False
            await self._open(run)
            now = self.app.clock()
        step = match.step(now)
        run.marks.update(step.marks)
        if step.finished:
            self._finish(run, step.finished, now)
        else:
            self._write_journal(run, now)
        newest = self.runs.get(run.name) is run
        if not run.fenced and (run.epoch is not None or (newest and not match.finished)):
            await self._broadcast(run, now)  # (a run over before it had a stream needs none)
        return match.finished is not None and (run.delivered or not newest)

    async def _open(self, run: LiveRun) -> None:
        """The run's first frame is due: continue the run a restart interrupted (same map), or
        begin a new one with a journal of its own."""
        match, name = run.match, run.name
        folder = self._output_dir()
        described = match.description()
        recovered = self.recovered.pop(name, None)
        store: GrowingStore | None = None
        if recovered is not None and recovered.meta.get("map") == described["map"]:
            try:
                store, size = await asyncio.to_thread(recovered.load, FRAMES_PER_CHUNK)
            except Exception:
                log.exception("live match %s: cannot reload %s; a new run begins (the journal "
                              "is kept)", name, recovered.path.name)  # fmt: skip
            else:
                run.run, run.started = recovered.run, recovered.started
                header = _header(name, run.run, run.started, recovered.meta)
                run.journal = journal.Journal(recovered.path, header, size, store.sealed_count)
                log.info("live match %s: %d frames reloaded from %s", name, store.frame_count,
                         recovered.path.name)  # fmt: skip
        elif recovered is not None:  # another map: that run is over
            log.info("live match %s: a new run on %r; the run before the restart is over",
                     name, described["map"])  # fmt: skip
            self._record_journal(recovered)
        if store is None:
            taken = {r.run for r in self.runs.values() if r.run} | set(self._writing)
            run.run = new_run_id(name, run.started, folder, taken)
            store = GrowingStore(name, described)
            path = journal.journal_path(folder, run.run)
            run.journal = journal.Journal(path, _header(name, run.run, run.started, described))
        match.open(store, self.app.clock())

    def _write_journal(self, run: LiveRun, now: float) -> None:
        if run.journal is None or now < run.journal_retry_at:
            return
        try:
            run.journal.write(run.match.store, now)
        except OSError as exc:
            run.journal_retry_at = now + RETRY_S
            self._warn(run.name, "journal", "live match %s: cannot write its journal %s (%s); "
                       "trying again, the frames are kept in memory", run.name,
                       run.journal.path.name, exc)  # fmt: skip

    async def _broadcast(self, run: LiveRun, now: float) -> None:
        """Start the run's stream in the broker when it has none, then hand it the frames and
        marks it does not have yet."""
        broker, match = self.app.broker, run.match
        store = match.store
        count = store.frame_count
        if run.epoch is None:
            if now < run.broker_retry_at:
                return
            meta = {key: store.meta[key] for key in DESCRIBED}
            try:
                # The epoch clients see: when seq 0 would have been made at the stream's rate,
                # so the next frame's time (epoch + seq / rate) is now, reloaded frames or not.
                run.epoch = await broker.start_stream(
                    run.name, {**meta, "started": now - count / RATE}
                )
            except BrokerError as exc:
                run.broker_retry_at = now + RETRY_S
                self._warn(run.name, "start", "live match %s: cannot start its stream (%s); "
                           "trying again, frames are kept", run.name, exc)  # fmt: skip
                return
            # What the broker keeps of a stream; earlier frames stay in this process's store.
            run.published = max(0, count - broker.window)
            run.marks = match.state()
        try:
            if run.published < count:
                frames = store.encoded(run.published, count)
                await broker.publish_many(run.name, run.epoch, [
                    (seq, pack_frame(data, match.depicted_time(seq)))
                    for seq, data in enumerate(frames, start=run.published)
                ])  # fmt: skip
                run.published = count
            if run.marks and now >= run.broker_retry_at:
                await broker.mark(run.name, run.epoch, **run.marks)
                run.marks = {}
        except (EpochMismatch, UnknownStream) as exc:
            run.fenced = True
            log.error("live match %s: another process took over its stream (%s); this run is "
                      "still journaled and recorded here", run.name, exc)  # fmt: skip
        except BrokerError as exc:
            # The broker's contract (docs/scale-out.md, "Failures"): frames that passed its
            # seq check are its own, kept until its backend takes them, so they are never
            # given twice (a second time is a seq error). Were some refused outright, readers
            # would count them as lost, never silently. Marks are given again (they merge).
            run.published = count
            run.broker_retry_at = now + RETRY_S
            self._warn(run.name, "publish", "live match %s: the broker holds its frames for "
                       "now (%s)", run.name, exc)  # fmt: skip

    def frames_of(self, name: str, epoch: str) -> GrowingStore | None:
        """Every frame of the run published as ``epoch``, if this process ingests it: a
        follower here starts from them, not only from what the broker still holds."""
        run = self.runs.get(name)
        if run is None or run.epoch != epoch:
            return None
        return run.match.store

    # -- the end ---------------------------------------------------------------------------

    def _finish(self, run: LiveRun, why: str, now: float) -> None:
        """No more frames: the run is written as a recording (its journal goes once it is)."""
        store = run.match.store
        log.info("live match %s: %s after %d frames; writing the recording %s", run.name, why,
                 store.frame_count, run.run)  # fmt: skip
        self._write_journal(run, now)  # as far as it gets: the journal stays if writing fails
        journal_file = None
        if run.journal is not None:
            run.journal.close()
            journal_file, run.journal = run.journal.path, None

        async def ready() -> GrowingStore:
            return store

        self._record(run.name, run.run, ready, journal_file)

    def _record_journal(self, contents: journal.Contents) -> None:
        """Write a run left by an earlier process as a recording, from its journal."""

        async def load() -> GrowingStore:
            store, _ = await asyncio.to_thread(contents.load, FRAMES_PER_CHUNK)
            store.finish()
            return store

        self._record(contents.name, contents.run, load, contents.path)

    def _record(
        self,
        name: str,
        run: str,
        load: Callable[[], Awaitable[GrowingStore]],
        journal_file: Path | None,
    ) -> None:
        """Write the run's frames (from ``load``) as a recording in a task of its own, then
        remove its journal."""
        task = asyncio.get_running_loop().create_task(
            self._write(name, run, load, journal_file), name=f"record {run}"
        )
        self._writing[run] = task
        task.add_done_callback(lambda _: self._writing.pop(run, None))

    async def _write(
        self,
        name: str,
        run: str,
        load: Callable[[], Awaitable[GrowingStore]],
        journal_file: Path | None,
    ) -> None:
        try:
            store = await load()
        except Exception:  # an unreadable journal: kept for a look, tried again at next start
            log.exception("live match %s: cannot read run %s back; its journal is kept", name, run)
            return
        if store.frame_count == 0:
            log.info("live match %s: run %s has no frames; nothing to record", name, run)
        else:
            folder = self._output_dir()
            while True:
                try:
                    path = await asyncio.to_thread(write_match, store, run, folder)
                    break
                except Exception as exc:
                    log.error("live match %s: writing %s failed (%s); the journal is kept, "
                              "trying again in %.0f s", name, run, exc, REWRITE_S)  # fmt: skip
                    await asyncio.sleep(REWRITE_S)
            if self.config.recordings is None:
                recording = await asyncio.to_thread(Recording.open, path)
                self.app.catalog.add_builtin(run, recording, path)
            else:
                await asyncio.to_thread(self.app.catalog.scan)
            log.info("live match %s: recorded as %s (%d frames)", name, path.name,
                     store.frame_count)  # fmt: skip
        if journal_file is not None:
            await asyncio.to_thread(journal_file.unlink, missing_ok=True)

    # -- start-up and shutdown --------------------------------------------------------------

    async def run(self) -> None:
        """Find the journals of an earlier process, then write those of runs whose game did
        not post again within the bound (the runs themselves are stepped by their tasks)."""
        try:
            await self._recover()
        finally:
            self._scanned.set()
        while True:
            now = self.app.clock()
            for name, contents in list(self.recovered.items()):
                if now - contents.written_at > self.rules.finish_after_s:
                    del self.recovered[name]
                    log.info("live match %s: no post for %.0f s since its journal's last "
                             "frames; writing run %s", name, now - contents.written_at,
                             contents.run)  # fmt: skip
                    self._record_journal(contents)
            await asyncio.sleep(RECOVERED_CHECK_S)

    async def _recover(self) -> None:
        """Each configured match's newest journal is resumable; its older ones are over."""
        found, unreadable = await asyncio.to_thread(journal.scan, self._output_dir())
        for path in unreadable:
            log.warning("%s is not a journal this server can read; left as it is", path)
        newest: dict[str, journal.Contents] = {}
        for contents in sorted(found, key=lambda c: c.started):
            if contents.name not in self.tokens:
                log.warning("journal %s is of match %r, not configured here (--gsi); left as "
                            "it is", contents.path.name, contents.name)  # fmt: skip
                continue
            older = newest.get(contents.name)
            if older is not None:
                self._record_journal(older)
            newest[contents.name] = contents
        for name, contents in newest.items():
            log.info("live match %s: run %s from before the restart (%d s of frames) continues "
                     "if its game posts within %.0f s", name, contents.run,
                     len(contents.chunks) * FRAMES_PER_CHUNK // RATE,
                     self.rules.finish_after_s)  # fmt: skip
        self.recovered = newest

    async def shutdown(self) -> None:
        """Stop the runs (their journals stay for a restart) and let recordings being written
        finish, for a while."""
        for task in self._playing:
            task.cancel()
        await asyncio.gather(*self._playing, return_exceptions=True)
        for run in self.runs.values():
            if run.journal is not None:
                run.journal.close()
        writing = list(self._writing.values())
        if writing:
            _, late = await asyncio.wait(writing, timeout=SHUTDOWN_WRITES_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*writing, return_exceptions=True)

    # -- helpers ---------------------------------------------------------------------------

    def _output_dir(self) -> Path:
        if self.config.recordings is not None:
            return self.config.recordings
        folder = cache_dir() / "matches"
        folder.mkdir(exist_ok=True)
        return folder

    def _warn(self, name: str, kind: str, message: str, *args: Any, **kwargs: Any) -> None:
        """Log a match's trouble of one kind at most every WARN_EVERY_S (it is retried often)."""
        now = time.monotonic()
        if now - self._warned.get((name, kind), -WARN_EVERY_S) < WARN_EVERY_S:
            return
        self._warned[(name, kind)] = now
        log.warning(message, *args, **kwargs)


def _header(name: str, run: str, started: float, meta: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "run": run, "started": started, "meta": meta}


def _phase(payload: dict) -> object:
    """The payload's map phase (warmup, live, intermission, gameover), if it has one."""
    block = payload.get("map")
    return block.get("phase") if isinstance(block, dict) else None
