"""How every WebSocket session answers a request that fails: one error reply, the session goes on.

A refused request (``ProtocolError``) is answered with its code. Anything else is a bug on our
side: it is logged once per connection with its traceback (not once per message, so a client
cannot flood the log) and answered ``internal_error``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from server import protocol
from server.metrics import Metrics

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
        self._logged = False

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
        except Exception as exc:  # a bug: never a traceback per message
            if not self._logged:
                self._logged = True
                log.exception("stream %r: a request failed (logged once per connection)",
                              self.stream)  # fmt: skip
            self.metrics.protocol_errors["internal_error"] += 1
            request_id = attempt.request.id if attempt.request is not None else None
            message = f"the server failed on this request ({type(exc).__name__}); it was logged"
            await self.reply(protocol.error("internal_error", message, request_id))
