"""Server settings: one dataclass, filled from command-line options or EEICT_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8080
DEFAULT_BUFFER_S = 2.0  # a subscriber that does not say otherwise is kept 2 s ahead
BUILTIN_STREAM = "generated"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    recordings: Path | None = None
    live: list[str] = field(default_factory=list)  # recording ids to play as live streams
    loop: bool = False
    every: int = 1
    epoch: float | None = None  # Unix time of every live stream's first frame; None: start time
    burst: int = 8  # frames per tick message
    token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    max_connections: int = 20000
    builtin_rounds: int = 24
    log_level: str = "INFO"
