"""Requests per connection, bounded: a token bucket, so a flooding client costs itself only.

A request over the limit is dropped and answered ``rate_limited`` (at most once a second), so
a client learns why, and the server's work per connection stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REQUESTS_PER_S = 50.0  # a player UI sends a few a second; a script that seeks hard, tens
BURST = 100


@dataclass
class RateLimit:
    rate: float = REQUESTS_PER_S
    burst: float = BURST
    tokens: float = field(init=False)
    at: float | None = field(init=False, default=None)
    told_at: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def allow(self, now: float) -> bool:
        """Take one request's token; False when the client is over its rate."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def should_tell(self, now: float) -> bool:
        """Whether to answer this refusal (once a second at most)."""
        if now - self.told_at >= 1.0:
            self.told_at = now
            return True
        return False
