"""The server's clock: Unix time that never jumps."""

from __future__ import annotations

import time
from collections.abc import Callable


def steady_wall_clock() -> Callable[[], float]:
    """Unix time that never jumps: read once, then advanced by the monotonic clock.

    An NTP step would otherwise move every playhead at once (backwards: streams stall).
    """
    wall0, mono0 = time.time(), time.monotonic()
    return lambda: wall0 + (time.monotonic() - mono0)
