"""Runs a LiveStream: steps it when it is due or woken, and performs what it decides.

One asyncio task per stream. A recorded stream is due at each frame time; a match in play is
woken by whoever appends its frames or changes its state (``wake()``).

A recorded stream's file may be overwritten in place while it plays (a plain ``cp`` over it):
reads then raise RecordingError, and the driver also sees the open file's size or mtime change
(every FILE_CHECK_S, so even a stream nobody reads is noticed, and a new file whose bytes
happen to read cleanly is never served through the old index). The driver never dies of
that: if the file is now a valid
recording it plays on from it (same clock, same seqs; subscribers are closed with 1012 and
resume), else the stream stops, its subscribers are closed with 4010 and a reason, and it
resumes once the file is valid again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from processing.recording import Recording, RecordingError, shown
from server import protocol
from server.streams.feed import LiveFeed
from server.streams.live import LiveStream
from server.streams.timeline import Timeline
from server.transport import perform

log = logging.getLogger(__name__)

# After a failed read, the file is looked at again after each of these pauses before the
# stream stops: a copy still being written over it has usually finished by then.
REOPEN_PAUSES_S = (0.1, 0.2, 0.4, 0.8)
STOPPED_RECHECK_S = 2.0  # a stopped stream looks at its file this often (as the catalog does)
FILE_CHECK_S = 2.0  # how often a played recording's open file is checked for in-place changes
REPLACED_REASON = "the recording's file was replaced: reconnect and resume"


class LiveDriver:
    def __init__(self, stream: LiveStream, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.clock = clock
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None  # set by whoever starts run()
        self._tried: tuple[int, int] | None = None  # (size, mtime_ns) of a file found invalid
        self._failure: tuple[LiveFeed, RecordingError] | None = None  # reported by a reader
        self._checked_at = time.monotonic()
        self.stopped: str | None = None  # why the stream serves nobody now (unreadable file)

    def failed(self, feed: LiveFeed, exc: RecordingError) -> None:
        """A reader other than the driver (the legacy adapter) met ``exc`` reading ``feed``:
        look at its file soon (the feed is replaced, or the stream stopped)."""
        if self._failure is None:
            self._failure = (feed, exc)
            self._wake.set()

    def wake(self) -> None:
        """Step soon: new frames, a new subscriber, or a state change."""
        self._wake.set()

    async def run(self) -> None:
        """Step until cancelled."""
        stream = self.stream
        while True:
            self._wake.clear()
            if self.stopped is not None:
                await self._while_stopped()
                continue
            failure, self._failure = self._failure, None
            if failure is None:
                failure = self._file_changed()
            if failure is not None and failure[0] is stream.feed:  # not an already replaced one
                await self._recording_failed(failure[1])
                continue
            now = self.clock()
            try:
                perform(stream.step(now))
            except RecordingError as exc:
                await self._recording_failed(exc)
                continue
            wake_at = stream.next_wake(now)
            if wake_at is None:
                await self._wake.wait()
                continue
            delay = max(0.0, wake_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _file_changed(self) -> tuple[LiveFeed, RecordingError] | None:
        """A failure to act on if the open file was changed in place (checked now and then)."""
        now = time.monotonic()
        feed = self.stream.feed
        if now - self._checked_at < FILE_CHECK_S or not isinstance(feed, Timeline):
            return None
        self._checked_at = now
        recording = feed.store
        try:
            if not recording.overwritten():
                return None
        except OSError:
            return None
        name = shown(Path(recording.name).name)
        return feed, RecordingError(f"{name}: overwritten in place while it was played")

    async def _recording_failed(self, exc: RecordingError) -> None:
        """Play on from a valid new file, or stop the stream and close its subscribers."""
        for pause in (0.0, *REOPEN_PAUSES_S):
            await asyncio.sleep(pause)
            if await self._reopened():
                return
        self.stopped = str(exc)
        closing = len(self.stream.subscribers)
        perform(
            self.stream.close_all(protocol.CLOSE_RECORDING_UNREADABLE, protocol.UNREADABLE_REASON)
        )
        log.error(
            "live stream %r stopped, %d subscribers closed (it resumes once the file is a valid "
            "recording again): %s", self.stream.id, closing, exc,
        )  # fmt: skip

    async def _while_stopped(self) -> None:
        """Close whoever joins meanwhile; resume when the file is a valid recording again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), STOPPED_RECHECK_S)
        perform(
            self.stream.close_all(protocol.CLOSE_RECORDING_UNREADABLE, protocol.UNREADABLE_REASON)
        )
        await self._reopened()

    async def _reopened(self) -> bool:
        """Whether the stream now plays a new, valid file found at its recording's path."""
        feed = self.stream.feed
        if not isinstance(feed, Timeline):
            return False
        recording = await asyncio.to_thread(self._replacement, feed.store)
        if recording is None:
            return False
        stream = self.stream
        stream.replace_feed(dataclasses.replace(feed, store=recording))
        # Its subscribers reconnect and resume (same clock, same seqs): a failed step may have
        # left some of them unscheduled, and their frames come from another file now.
        perform(stream.close_all(protocol.CLOSE_RESTART, REPLACED_REASON))
        stream.closed = False  # new subscribers (and /demodata clients) go on at once
        self.stopped = None
        log.warning(
            "live stream %r: its file %s was replaced; playing the new one (%d frames, "
            "%r) on the same clock", self.stream.id, shown(Path(recording.name).name),
            recording.frame_count, recording.meta["map"],
        )  # fmt: skip
        return True

    def _replacement(self, old: Recording) -> Recording | None:
        """The recording now at ``old``'s path if it is another file and a valid one (runs in
        a worker thread; each new version of the file is opened once)."""
        try:
            info = os.lstat(old.name)
        except OSError:
            return None
        stamp = (info.st_size, info.st_mtime_ns)
        if stamp in (old.stamp, self._tried):
            return None
        self._tried = stamp
        try:
            return Recording.open(Path(old.name))
        except RecordingError:
            return None
