"""The wire protocol: msgpack maps with a ``type``, both ways. Documented in docs/protocol.md.

Server messages that carry frames are thin envelopes around frame bytes that already exist
(encoded once at processing time); client messages are decoded and validated here so that
handlers only ever see well-formed requests.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from server import __version__

SERVER_NAME = f"eeict-stream/{__version__}"
PROTOCOL_VERSION = 1
MAX_CLIENT_MESSAGE = 16 * 1024  # larger client messages get a too_large error
HARD_MAX_MESSAGE = 32 * 1024  # beyond this websockets closes the connection with 1009

# Close codes (besides 1000 normal, 1001 going away, 1009 too big, 1011 server error).
CLOSE_SLOW_CONSUMER = 4000
CLOSE_UNAUTHORIZED = 4001
CLOSE_UNKNOWN_STREAM = 4004
CLOSE_SERVER_FULL = 1013
CLOSE_RESTART = 1012  # the stream's incarnation ended (a new epoch): reconnect
CLOSE_RECORDING_UNREADABLE = 4010  # the recording's file changed or broke while it was served
UNREADABLE_REASON = "the recording's file changed or became unreadable; reconnect in a few seconds"


class ProtocolError(Exception):
    """A client request we refuse; ``code`` is stable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id: Any = None  # the client's "id" for the refused request, if it had one

    def reply(self) -> bytes:
        """The ``error`` message telling the client what was wrong with its request."""
        return error(self.code, self.message, self.request_id)


_packer = msgpack.Packer()


def pack(message: Mapping[str, Any]) -> bytes:
    return msgpack.packb(message)


def ticks_envelope(stream: str, seq: int, count: int, frames: bytes, **extra: Any) -> bytes:
    """A ``ticks`` message around ``count`` already-encoded frames, without decoding them."""
    fields = {"type": "ticks", "stream": stream, "seq": seq, **extra}
    parts = [_packer.pack_map_header(len(fields) + 1)]
    for key, value in fields.items():
        parts.append(_packer.pack(key))
        parts.append(_packer.pack(value))
    parts.append(_packer.pack("frames"))
    parts.append(_packer.pack_array_header(count))
    parts.append(frames)
    return b"".join(parts)


def binary_frame(message: bytes) -> bytes:
    """``message`` as one unmasked, final WebSocket binary frame (RFC 6455 5.2).

    Server frames are never masked, so one frame serves every subscriber of a burst.
    """
    return frame_header(len(message)) + message


def frame_header(size: int) -> bytes:
    """The header of an unmasked, final binary frame of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x82, size))
    if size < 1 << 16:
        return bytes((0x82, 126)) + size.to_bytes(2, "big")
    return bytes((0x82, 127)) + size.to_bytes(8, "big")


def error(code: str, message: str, request: Any = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request is not None:
        body["request"] = request
    return pack(body)


def recording_unreadable(stream: str, request: Any = None) -> bytes:
    """The reply when the recording being served changed on disk or cannot be read."""
    return error(
        "recording_unreadable",
        f"the file of recording {stream!r} changed or became unreadable while it was served; "
        "reconnect in a few seconds to get the file as it is now",
        request,
    )


def internal_error(request: Any = None) -> bytes:
    """The reply to a request the server failed on: the client learns no more than that."""
    return error(
        "internal_error", "the server failed on this request (it is logged); try again", request
    )


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # keyword options need Python 3.12
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple = 2, 4, 4, 4
    short.maxstring = short.maxother = 60
    short.maxlong = 40
    return short


_repr = _short_repr()


def shown(value: Any) -> str:
    """A short repr of a client's value for error messages: bounded in size and depth."""
    return _repr.repr(value)


# -- client requests --------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One validated client message: its type, its fields, and the client's optional id."""

    type: str
    fields: dict[str, Any]
    id: Any = None

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


# Field kinds: "int", "number", "str", "epoch"; a trailing "?" marks the field optional.
REQUEST_FIELDS: dict[str, dict[str, str]] = {
    "ping": {},
    "subscribe": {"buffer": "int?", "resume_seq": "int?", "epoch": "epoch?"},
    "buffer": {"ticks": "int"},
    "unsubscribe": {},
    # Replay sessions (server/streams/playback.py).
    "play": {},
    "pause": {},
    "speed": {"value": "number"},
    "seek": {"tick": "int?", "time": "number?", "round": "int?"},
    "step": {"delta": "int?"},
    # Range fetch (server/streams/fetch.py).
    "fetch": {"from_tick": "int", "to_tick": "int", "credit": "int?", "resume_after": "int?"},
    "credit": {"frames": "int"},
    "cancel": {},
}

INT64 = range(-(1 << 63), 1 << 63)  # "int" fields: what numpy and every client can hold
MAX_ID_LENGTH = 256  # a request's "id": a scalar, strings and bytes at most this long

_KIND_CHECK = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v in INT64,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "str": lambda v: isinstance(v, str),
    # A stream's epoch: a recording's Unix time, or a live match's broker epoch (a string).
    "epoch": lambda v: isinstance(v, str | float | int) and not isinstance(v, bool),
}


def decode_request(data: bytes | str, allowed: frozenset[str]) -> Request:
    """Decode and validate one client message, or raise ProtocolError saying what is wrong."""
    if isinstance(data, str):
        raise ProtocolError("bad_message", "send binary msgpack messages, not text")
    if len(data) > MAX_CLIENT_MESSAGE:
        raise ProtocolError(
            "too_large", f"message of {len(data)} bytes; the limit is {MAX_CLIENT_MESSAGE}"
        )
    try:
        message = msgpack.unpackb(data, strict_map_key=True)
    except Exception as exc:
        raise ProtocolError("bad_message", f"not valid msgpack: {str(exc)[:200]}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_message", 'a message is a msgpack map with a string "type"')
    if not _valid_id(message.get("id")):
        raise ProtocolError(
            "bad_field", f"id must be nil, a number, or a string of at most {MAX_ID_LENGTH} bytes"
        )
    try:
        return _validate(message, allowed)
    except ProtocolError as exc:
        exc.request_id = message.get("id")
        raise


def _valid_id(value: Any) -> bool:
    """Scalars only: an id is echoed in replies, so it must be cheap and safe to send back."""
    if isinstance(value, str | bytes):
        return len(value) <= MAX_ID_LENGTH
    return value is None or isinstance(value, bool | int | float)


def _validate(message: dict[str, Any], allowed: frozenset[str]) -> Request:
    kind = message["type"]
    if kind not in allowed:
        known = ", ".join(sorted(allowed))
        raise ProtocolError(
            "unknown_type", f"unknown message type {shown(kind)} here; use: {known}"
        )
    fields: dict[str, Any] = {}
    for name, spec in REQUEST_FIELDS[kind].items():
        optional = spec.endswith("?")
        expected = spec.rstrip("?")
        if name not in message or (optional and message[name] is None):
            if not optional:
                raise ProtocolError("bad_field", f"{kind}: field {name!r} is required")
            continue
        value = message[name]
        if not _KIND_CHECK[expected](value):
            raise ProtocolError(
                "bad_field", f"{kind}: field {name!r} must be {expected}, got {shown(value)}"
            )
        fields[name] = value
    return Request(kind, fields, message.get("id"))


def decode_legacy(data: bytes | str) -> Any:
    """A ``/demodata`` client message parsed as JSON, or None when it is not one.

    None also for messages over MAX_CLIENT_MESSAGE and for nesting too deep for the parser
    (RecursionError), so no client text can raise out of a session.
    """
    if len(data) > MAX_CLIENT_MESSAGE:
        return None
    try:
        return json.loads(data)
    except (ValueError, TypeError, RecursionError):
        return None
