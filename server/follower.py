"""Serves a broker's live match on this replica: reads its frames into a local feed and stream.

Every replica (and the single process of a one-machine set-up) follows each stream the broker
knows: frames arrive under the seq and epoch the ingest gave them, so a client that loses its
replica resumes on another with nothing missing or twice. Each replica encodes once and fans
out locally. A new epoch (the ingest restarted) is a new incarnation: this replica's
subscribers are closed with 1012 and reconnect into it; frames the broker lost become a new
segment of the feed, which the stream reports to its subscribers as a counted skip.
"""

from __future__ import annotations

import asyncio
import logging
import struct
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
        broker, clock = self.app.broker, self.app.clock
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
                await self._new_incarnation(result.epoch)
                epoch = result.epoch
            now = clock()
            if result.frames:
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

    async def _new_incarnation(self, epoch: str) -> None:
        """The ingest restarted: drop this incarnation's subscribers (they reconnect and see
        the new epoch in ``hello``) and start over."""
        log.info("live match %s: new epoch %s", self.name, epoch)
        streams = await self.app.broker.streams()
        if self.name in streams:
            self.info = streams[self.name]
        if self.driver is not None:
            perform(self.driver.stream.close_all(protocol.CLOSE_RESTART, "the match restarted"))
            # Off /live until the new incarnation's first frame: a client reconnecting at once
            # would otherwise join the old stream, which gets no more frames.
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


async def follow_broker(app: App, interval_s: float = 1.0) -> None:
    """Start a Follower for every stream the broker knows and this replica does not follow."""
    tasks: dict[str, asyncio.Task[None]] = {}
    while True:
        try:
            streams = await app.broker.streams()
        except BrokerError:
            streams = {}
        for name, info in streams.items():
            current, task = app.followers.get(name), tasks.get(name)
            if task is not None and not task.done():
                continue
            if current is not None and current.info.epoch == info.epoch:
                continue  # that incarnation was followed to its end
            if info.state.get("ended") and current is None:
                continue  # over before this replica started: it is a recording now
            follower = app.followers[name] = Follower(app, name, info)
            tasks[name] = app.start_task(follower.run(), f"follow {name}")
        await asyncio.sleep(interval_s)
