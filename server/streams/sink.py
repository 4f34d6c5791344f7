"""Where a stream's bytes go, as the stream logic sees it: a tiny interface, no socket.

The stream logic only asks a sink how much is queued and whether it is open; writing and
closing are done by the I/O layer (server/transport.py) from the ``Output`` the logic returns.
"""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    """One client connection as the streams see it."""

    def buffered(self) -> int:
        """Bytes queued for this client and not yet handed to the kernel."""

    @property
    def is_open(self) -> bool: ...
