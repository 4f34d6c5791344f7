"""Serves a broker's live match on this replica: reads its frames into a local feed and stream.

Every replica (and the single process of a one-machine set-up) follows each stream the broker
knows: frames arrive under the seq and epoch the ingest gave them, so a client that loses its
replica resumes on another with nothing missing or twice. Each replica encodes once and fans
out locally. A new epoch (the ingest restarted) is a new incarnation: this replica's
subscribers are closed with 1012 and reconnect into it; frames the broker lost become a new
segment of the feed, which the stream reports to its subscribers as a counted skip.

``follow_broker`` supervises the followers: one that fails is logged and started again (with
backoff), its subscribers closed with 1012 so they resume on the new one; such a failure does
not make the replica unready, since the replica goes on serving everything else.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from server import protocol
from server.broker import BrokerError, StreamInfo
from server.broker.follow import follow
from server.streams.feed import GrowingFeed
from server.streams.live import LiveStream
from server.streams.store import GrowingStore
from server.transport import perform

if TYPE_CHECKING:
    from server.app import App
    from server.live_driver import LiveDriver

log = logging.getLogger(__name__)

READ_BLOCK_S = 1.0
RESTART_MAX_S = 60.0  # longest wait before a failed follower is started again
HEALTHY_RUN_S = 60.0  # a follower that ran this long before failing starts over from 1 s
_DEPICTS = struct.Struct("<d")  # each broker frame: when it shows (ingest clock), then msgpack


def pack_frame(frame_bytes: bytes, depicts: float) -> bytes:
    """A frame as it travels through the broker."""
    return _DEPICTS.pack(depicts) + frame_bytes


def unpack_frame(data: bytes) -> tuple[float, dict]:
    (depicts,) = _DEPICTS.unpack_from(data)
    return depicts, msgpack.unpackb(data[_DEPICTS.size :])


class Follower:
    def __init__(self, app: App, name: str, info: StreamInfo) -> None:
        self.app = app
        self.name = name
        self.info = info
        self.feed: GrowingFeed | None = None
        self.driver: LiveDriver | None = None
        self.after = -1  # last seq read
        self.ended = False

    async def run(self) -> None:
        broker, clock, read = self.app.broker, self.app.clock, self.app.metrics.broker_frames_read
        epoch = self.info.epoch
        async for update in follow(broker, self.name, -1, epoch, READ_BLOCK_S):
            result = update.result
            if result is None:
                self._set_stale(True, "the broker is unreachable")
                continue
            if result.epoch is None:  # the broker forgot the stream (it restarted empty)
                self._set_stale(True, "the broker lost the stream")
                continue
            if result.reset:
                self._new_incarnation(StreamInfo(result.epoch, result.meta or {}, result.state))
                epoch = result.epoch
            now = clock()
            if result.frames:
                read[self.name] += len(result.frames)
                first = result.frames[0][0]
                if self.feed is None or (result.lost and first > self.after + 1):
                    self._new_segment(epoch, first, result.lost)
                for seq, data in result.frames:
                    depicts, frame = unpack_frame(data)
                    self.feed.append(frame, now, depicts)
                    self.after = seq
            self._apply_state(result.state, now)
            if self.driver is not None:
                self.driver.wake()
            if self.ended:
                return

    def _new_segment(self, epoch: str, first_seq: int, lost: int) -> None:
        """A feed starting at ``first_seq``: on joining, or after frames the broker lost.

        When this process ingests the match, the frames before ``first_seq`` come from the
        ingest's store (the broker keeps only its window: after an ingest restart that is the
        last minute of a match reloaded whole from its journal), so the feed starts at seq 0.
        Clients see the incarnation's start time (Unix seconds, the same on every replica) as
        the stream's epoch, as for recorded streams: they pace frame s at epoch + s / rate.
        """
        meta = {**self.info.meta, "synthetic": False}
        seed = self.app.ingest.frames_of(self.name, epoch) if first_seq > 0 else None
        if seed is not None and seed.frame_count >= first_seq:
            store, base_seq = seed.head(first_seq), 0
            store.meta.update(meta)
        else:
            store, base_seq = GrowingStore(self.name, meta), first_seq
        shown_epoch = float(meta.get("started", 0.0)) or epoch
        feed = GrowingFeed(store, shown_epoch, base_seq=base_seq)
        if self.feed is None or self.driver is None:
            stream = LiveStream(self.name, feed, self.app.metrics, self.app.config.burst)
            self.driver = self.app.add_stream(stream)
        else:
            if base_seq:
                log.warning("live match %s: the broker lost %d frames; subscribers are told",
                            self.name, lost)  # fmt: skip
            self.driver.stream.replace_feed(feed)
        self.feed = feed

    def _new_incarnation(self, info: StreamInfo) -> None:
        """The ingest restarted: drop this incarnation's subscribers (they reconnect and see
        the new epoch in ``hello``) and start over with the meta the read brought along."""
        log.info("live match %s: new epoch %s", self.name, info.epoch)
        self.info = info
        self.retire("the match restarted")

    def retire(self, why: str) -> None:
        """Close this replica's subscribers of the stream with 1012 (they reconnect) and take
        it off /live until a feed has frames again: a client reconnecting at once would
        otherwise join a stream that gets no more frames."""
        if self.driver is not None:
            perform(self.driver.stream.close_all(protocol.CLOSE_RESTART, why))
            if self.app.drivers.get(self.name) is self.driver:
                del self.app.drivers[self.name]
            self.driver.task.cancel()
        self.feed, self.driver, self.after = None, None, -1

    def _apply_state(self, state: dict, now: float) -> None:
        if self.feed is None:
            return
        self._set_stale(bool(state.get("stale")), "the feed stopped" if state.get("stale") else "")
        if state.get("ended") and not self.feed.store.complete:
            self.feed.store.finish()
            self.ended = True
            log.info("live match %s: ended after seq %d", self.name, self.after)

    def _set_stale(self, stale: bool, why: str) -> None:
        if self.feed is not None and self.feed.set_stale(stale, self.app.clock()):
            log.info("live match %s: %s", self.name, why if stale else "feed resumed")
            if self.driver is not None:
                self.driver.wake()

    def describe(self) -> dict | None:
        """The match as a replayable stream (its frames so far on this replica), or None."""
        if self.feed is None or self.feed.store.frame_count == 0:
            return None
        meta = self.feed.store.meta
        return {
            "id": self.name,
            "kind": "live_match",
            "path": f"/replay/{self.name}",
            "live_path": f"/live/{self.name}",
            **{key: meta[key] for key in ("map", "tickrate", "first_tick", "last_tick",
                                           "frame_count", "duration_s", "teams")},
            "rounds": meta["round_starts"],
            "players": meta["roster"],
            "epoch": self.feed.epoch,
            **self.feed.describe(),
        }  # fmt: skip


@dataclass
class _Supervised:
    """A follower's task, and what its failures in a row decided."""

    task: asyncio.Task[None]
    started: float  # event loop time
    failures: int = 0
    retry_at: float = 0.0
    seen_done: bool = False


async def follow_broker(app: App, interval_s: float = 1.0) -> None:
    """Start a Follower for every stream the broker has in play and this replica does not
    follow; start one again, with backoff, if it failed."""
    loop = asyncio.get_running_loop()
    running: dict[str, _Supervised] = {}
    while True:
        try:
            streams = await app.broker.streams()
        except BrokerError:
            streams = {}
        now = loop.time()
        for name, entry in running.items():
            if entry.task.done() and not entry.seen_done:
                entry.seen_done = True
                error = None if entry.task.cancelled() else entry.task.exception()
                if error is not None:
                    _restart_later(app, name, entry, error, now, interval_s)
        for name, info in streams.items():
            entry = running.get(name)
            if entry is not None and (not entry.task.done() or now < entry.retry_at):
                continue
            current = app.followers.get(name)
            if current is not None and current.info.epoch == info.epoch:
                continue  # that incarnation was followed to its end
            if info.state.get("ended") and current is None:
                continue  # it ended as this replica looked: it is a recording now
            follower = app.followers[name] = Follower(app, name, info)
            task = app.start_task(follower.run(), f"follow {name}", supervised=True)
            failures = entry.failures if entry is not None and entry.retry_at else 0
            running[name] = _Supervised(task, now, failures)
        await asyncio.sleep(interval_s)


def _restart_later(
    app: App, name: str, entry: _Supervised, error: BaseException, now: float, interval_s: float
) -> None:
    """A follower failed: its subscribers are let go (they reconnect and resume on the next
    one) and it is started again after a backoff that doubles with each failure in a row."""
    entry.failures = 1 if now - entry.started >= HEALTHY_RUN_S else entry.failures + 1
    wait = min(RESTART_MAX_S, interval_s * 2 ** (entry.failures - 1))
    entry.retry_at = now + wait
    log.error("following live match %s failed (%d in a row); starting it again in %.0f s",
              name, entry.failures, wait, exc_info=error)  # fmt: skip
    follower = app.followers.pop(name, None)
    if follower is not None:
        follower.retire("the server restarts this stream")
