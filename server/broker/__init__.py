"""How the frames of live streams travel between processes: the Broker contract and its engines
(in-memory for one process, Redis Streams for many replicas)."""

from __future__ import annotations

from .base import (
    DEFAULT_WINDOW,
    ENDED_KEEP_S,
    Broker,
    BrokerError,
    BrokerUnavailable,
    EpochMismatch,
    ReadResult,
    StreamInfo,
    UnknownStream,
    redact_url,
)
from .follow import Update, follow
from .memory import MemoryBroker

__all__ = [
    "DEFAULT_WINDOW",
    "ENDED_KEEP_S",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "EpochMismatch",
    "MemoryBroker",
    "ReadResult",
    "StreamInfo",
    "UnknownStream",
    "Update",
    "follow",
    "make_broker",
    "redact_url",
]


def make_broker(url: str | None, window: int = DEFAULT_WINDOW, **options) -> Broker:
    """The engine ``--broker`` asks for: None -> in-memory, ``redis://`` / ``rediss://`` /
    ``unix://`` -> Redis Streams (options go to RedisBroker: prefix, op_timeout_s, ...)."""
    if url is None or url == "" or url == "memory":
        if options:
            raise ValueError(f"the in-memory broker takes no options, got {sorted(options)}")
        return MemoryBroker(window)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_streams import RedisBroker  # redis is imported only when it is used

        return RedisBroker(url, window, **options)
    raise ValueError(
        f"--broker must be a redis://HOST:PORT/DB URL (or omitted), got {redact_url(url)!r}"
    )
