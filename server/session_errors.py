"""How every WebSocket session answers a request that fails: one error reply, the session goes on.

A refused request (``ProtocolError``) is answered with its code. A recording whose file changed
or broke while it was served (``RecordingError``) is answered ``recording_unreadable`` and
logged in one line, once per connection; the session decides whether it can go on
(``unreadable``). Anything else is a bug on our side: it is logged once per connection with
its traceback (not once per message, so a client cannot flood the log) and answered
``internal_error``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from processing.recording import RecordingError
from server import protocol
from server.metrics import Metrics
from server.rate_limit import RateLimit

log = logging.getLogger(__name__)


class Attempt:
    """Filled in by the guarded block: the decoded request, so an error can echo its id."""

    request: protocol.Request | None = None


class RequestErrors:
    """One per connection: answers failed requests through ``reply``."""

    def __init__(
        self, reply: Callable[[bytes], Awaitable[Any]], metrics: Metrics, stream: str
    ) -> None:
        self.reply = reply
        self.metrics = metrics
        self.stream = stream
        self.limit = RateLimit()
        self._logged = False
        self.unreadable = False  # a request met a recording that cannot be read any more

    async def admit(self, now: float) -> bool:
        """Whether to handle the next request (the client is within its request rate)."""
        if self.limit.allow(now):
            return True
        self.metrics.protocol_errors["rate_limited"] += 1
        if self.limit.should_tell(now):
            message = f"over {self.limit.rate:.0f} requests a second; requests are dropped"
            await self.reply(protocol.error("rate_limited", message))
        return False

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[Attempt]:
        attempt = Attempt()
        try:
            yield attempt
        except protocol.ProtocolError as exc:
            if attempt.request is not None:
                exc.request_id = attempt.request.id
            self.metrics.protocol_errors[exc.code] += 1
            await self.reply(exc.reply())
        except ConnectionClosed:
            raise  # the client left: the session ends, nothing to answer
        except RecordingError as exc:  # the file changed under us: not a bug, no traceback
            if not self.unreadable:
                self.unreadable = True
                log.warning("stream %r: a request met an unreadable recording: %s",
                            self.stream, exc)  # fmt: skip
            self.metrics.protocol_errors["recording_unreadable"] += 1
            await self.reply(protocol.recording_unreadable(self.stream, _request_id(attempt)))
        except Exception:  # a bug: never a traceback per message
            if not self._logged:
                self._logged = True
                log.exception("stream %r: a request failed (logged once per connection)",
                              self.stream)  # fmt: skip
            self.metrics.protocol_errors["internal_error"] += 1
            await self.reply(protocol.internal_error(_request_id(attempt)))


def _request_id(attempt: Attempt) -> Any:
    return attempt.request.id if attempt.request is not None else None
