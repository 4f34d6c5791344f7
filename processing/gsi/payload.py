"""One posted body: is it a GSI payload, and the typed reading of the fields the frames use.

CS2 posts the whole state of every subscribed component each time (plus ``previously`` and
``added`` deltas), so a payload is checked on its own. Unknown fields are ignored; a known
field of the wrong shape refuses the whole payload with a GsiPayloadError whose reason names
the field, so the endpoint can answer 400 with it and nothing downstream sees half a state.
"""

from __future__ import annotations

import json
import math
from typing import Any


class GsiPayloadError(ValueError):
    """Not a GSI payload (or a known field malformed); ``reason`` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_payload(body: bytes) -> dict:
    """The payload in a POST body: JSON, a dict, with a ``provider`` dict."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise GsiPayloadError(f"body is not JSON ({exc})") from exc
    return check_payload(value)


def check_payload(value: Any) -> dict:
    """``value`` itself if it has the shape of a GSI payload (the top level only)."""
    if not isinstance(value, dict):
        raise GsiPayloadError(f"payload is a JSON {type(value).__name__}, not an object")
    if not isinstance(value.get("provider"), dict):
        raise GsiPayloadError("payload has no 'provider' object: not a game state post")
    for key in ("map", "round", "allplayers", "grenades", "bomb", "previously", "auth"):
        if key in value and not isinstance(value[key], dict):
            raise GsiPayloadError(f"'{key}' is a {type(value[key]).__name__}, not an object")
    return value


def auth_token(payload: dict) -> str | None:
    """The token of the payload's ``auth`` block (the cfg's ``auth { token ... }``), if any."""
    auth = payload.get("auth")
    token = auth.get("token") if isinstance(auth, dict) else None
    return token if isinstance(token, str) else None


# Typed field readers: ``where`` names the field in the error.


def obj(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise GsiPayloadError(f"{where} is not an object")
    return value


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise GsiPayloadError(f"{where} is not a string")
    return value


def integer(value: Any, where: str) -> int:
    """An int; CS2 sends numbers, some GSI tools send them as digit strings."""
    if isinstance(value, bool):
        raise GsiPayloadError(f"{where} is a boolean, not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise GsiPayloadError(f"{where} is not an integer")


def number(value: Any, where: str) -> float:
    """A finite float from a number or a numeric string (GSI sends times as "1.5")."""
    if isinstance(value, bool):
        raise GsiPayloadError(f"{where} is a boolean, not a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise GsiPayloadError(f"{where} is not a number") from None
    if not math.isfinite(result):
        raise GsiPayloadError(f"{where} is not finite")
    return result


def flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise GsiPayloadError(f"{where} is not a boolean")
    return value


def vector(value: Any, where: str) -> tuple[float, float, float]:
    """GSI's "x, y, z" string as three finite floats."""
    parts = text(value, where).split(",")
    if len(parts) != 3:
        raise GsiPayloadError(f"{where} is not an 'x, y, z' string")
    x, y, z = (number(p.strip(), where) for p in parts)
    return (x, y, z)


def steamid(value: Any, where: str) -> int:
    """A 64-bit steam id given as a digit string."""
    if not isinstance(value, str) or not value.isdigit() or int(value) >= 1 << 64:
        raise GsiPayloadError(f"{where} is not a steam id")
    return int(value)
