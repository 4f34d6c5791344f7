"""The broker contract: how the frames of a live stream travel from whoever makes them (the
ingest) to every server replica that serves them.

Each stream is a sequence of frames (msgpack bytes) numbered by ``seq`` within an ``epoch``, one
epoch per incarnation of the stream: a restarted ingest starts a new epoch, and a reader is told
so (``reset``) instead of taking seq 0 of the new incarnation for a continuation of the old one.
A broker keeps only the last ``window`` frames of a stream (the resume window); a reader that
fell further behind, or whose frames the broker lost (a Redis restart without its data), learns
how many frames it will never get (``lost``), never silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_WINDOW = 4096  # frames kept per stream: 64 s at 64 frames/s, above the 30 s resume window
MAX_READ_FRAMES = 1024  # frames one read returns at most (a reader far behind reads again)
# An ended stream leaves the catalog at once; its frames stay this long for replicas still
# reading its last frames (a little over the 30 s resume window), then the broker forgets it.
ENDED_KEEP_S = 45.0
_SECRET_QUERY = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_HIDDEN = r"\1***"


class BrokerError(Exception):
    """A broker operation could not be done."""


class BrokerUnavailable(BrokerError):
    """The broker's backend (Redis) cannot be reached right now; ``healthy`` is False."""


class EpochMismatch(BrokerError):
    """The stream's current epoch is not the one given: another incarnation replaced it."""


class UnknownStream(BrokerError):
    """No stream of that name was started (or the broker lost it)."""


def redact_url(url: str) -> str:
    """``url`` as it may be shown (logs, ``--help``, errors): any password replaced by ``***``,
    in the user part (``redis://:secret@host``) or the query (``?password=secret``). Up to the
    last ``@`` counts as the user part, so a password holding ``/`` or ``@`` is hidden too, and
    so is everything before an ``@`` in a string that is not a URL at all (a typo)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, after = rest.rpartition("@")
    if at and (":" in userinfo or not sep):
        rest = f"{userinfo.split(':', 1)[0] if sep else ''}:***@{after}"
    return f"{scheme}{sep}{_SECRET_QUERY.sub(_HIDDEN, rest)}"


@dataclass(frozen=True)
class StreamInfo:
    """What the broker keeps beside a stream's frames."""

    epoch: str
    meta: dict[str, Any]  # the match description given to start_stream
    state: dict[str, Any] = field(default_factory=dict)  # flags set with mark() (stale, ended)


@dataclass(frozen=True)
class ReadResult:
    """The answer to one read.

    ``epoch`` is the stream's current epoch (None: the stream is unknown). ``reset`` is True when
    that is not the epoch the reader asked for: ``frames`` then start at the earliest frame the
    broker holds of the new epoch, and the reader must drop its seq bookkeeping. ``lost`` counts
    the frames between the reader's position (``after_seq + 1``, or seq 0 after a reset) and the
    first frame returned that the broker no longer holds. ``meta`` is the epoch's match
    description when the reader did not know the epoch (a reset, or no epoch asked), else None:
    a reader never needs a second call, which could fail, to learn what it now reads.
    """

    epoch: str | None
    frames: list[tuple[int, bytes]]
    reset: bool = False
    lost: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] | None = None

    @property
    def last_seq(self) -> int | None:
        return self.frames[-1][0] if self.frames else None


class Broker(Protocol):
    """Frames of live streams, shared by every process that uses the same broker."""

    window: int

    @property
    def healthy(self) -> bool:
        """False while the backend cannot be reached or refuses this process's writes (shown
        by ``/readyz``, ``/streams`` and the ``eeict_broker_up`` gauge)."""
        ...

    async def ping(self) -> bool:
        """Ask the backend now (the server does every few seconds); updates ``healthy``."""
        ...

    async def start_stream(self, stream: str, meta: dict[str, Any]) -> str:
        """Start a new incarnation of ``stream``: its old frames go, a new epoch is returned.

        Like ``publish`` and ``mark`` of the streams it starts, this never fails because the
        backend is away: what must be written waits in this process until it is back.
        """
        ...

    async def publish(self, stream: str, epoch: str, seq: int, data: bytes) -> None:
        """Append one frame; ``seq`` must be above every seq published before in this epoch."""
        ...

    async def publish_many(
        self, stream: str, epoch: str, frames: Sequence[tuple[int, bytes]]
    ) -> None:
        """Append a burst of (seq, data) frames in one go, seqs strictly increasing."""
        ...

    async def read(
        self, stream: str, after_seq: int, epoch: str | None, block_s: float = 0.0
    ) -> ReadResult:
        """Frames with seq > ``after_seq`` of ``epoch``, waiting up to ``block_s`` for some.

        ``epoch`` None reads the current epoch from ``after_seq`` (a reader that just started).
        Returns early, without frames, when the epoch or the stream's state changed.
        """
        ...

    async def streams(self) -> dict[str, StreamInfo]:
        """Every stream in play (not ended), with its epoch, meta and state."""
        ...

    async def mark(self, stream: str, epoch: str, **state: Any) -> None:
        """Merge flags into the stream's state (e.g. ``stale=True``); wakes blocked readers.

        ``ended=True`` is final: the stream leaves ``streams()`` at once and its frames stay
        readable for ``ENDED_KEEP_S`` before the broker forgets it.
        """
        ...

    async def close(self) -> None: ...


def check_frames(frames: Iterable[tuple[int, bytes]], after: int | None) -> list[tuple[int, bytes]]:
    """The frames as a list, refused unless seqs are >= 0, strictly increasing and above
    ``after`` (the last seq published in this epoch), and data is bytes."""
    checked = list(frames)
    last = -1 if after is None else after
    for seq, data in checked:
        if not isinstance(seq, int) or seq <= last:
            raise ValueError(f"seq must be an int above {last}, got {seq!r}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"frame data must be bytes, got {type(data).__name__}")
        last = seq
    return checked


def lost_before(first_seq: int | None, expected_seq: int) -> int:
    """Frames a reader expecting ``expected_seq`` will never get when the first frame still held
    is ``first_seq``."""
    return 0 if first_seq is None else max(0, first_seq - expected_seq)


def ends(state: dict[str, Any]) -> bool:
    """Whether these state flags end the stream."""
    return state.get("ended") is True


def json_copy(value: dict[str, Any], what: str) -> dict[str, Any]:
    """A deep copy through JSON: both engines keep meta and state as JSON, so a value that
    cannot travel through Redis is refused by the in-memory engine as well."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from exc
