"""Server settings, each declared once: name, type, default and help in one dataclass field.

The command line (``eeict serve --help``) and the ``EEICT_*`` environment variables are both
built from these fields, so an option cannot drift between a dataclass, argparse and a copy.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from processing.gsi.framer import DELAY_S as GSI_DELAY_S
from processing.gsi.framer import GAP_S as GSI_STALE_AFTER_S
from server.broker import redact_url

DEFAULT_PORT = 8080
DEFAULT_HTTP_PORT = 8081
DEFAULT_BUFFER_S = 2.0  # a subscriber that does not say otherwise is kept 2 s ahead
MAX_BUFFER_S = 30.0  # the most a live subscriber or a replay session may ask to be sent ahead
BUILTIN_STREAM = "generated"
ENV_PREFIX = "EEICT_"
MATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a live match's stream id


BROKER_SCHEMES = ("redis://", "rediss://", "unix://")


def hide_tokens(pairs: list[str]) -> list[str]:
    """``--gsi NAME=TOKEN`` pairs as ``--help`` shows them: the names, not the tokens."""
    return [f"{pair.partition('=')[0]}=***" for pair in pairs]


def option(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    shown: Callable[[Any], Any] | None = None,
    **extra: Any,
) -> Any:
    """A setting: its default and its help text (shown by --help with its variable).

    ``shown`` turns a default into what --help may print (a secret from an EEICT_* variable
    must not reach a terminal or a log that captured it)."""
    meta = {"help": help, "metavar": metavar, "shown": shown, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(DEFAULT_PORT, "WebSocket port: /live, /replay, /demodata (0: any free)")
    http_port: int = option(
        DEFAULT_HTTP_PORT, "HTTP port: the page, catalogs, downloads, GSI ingest, probes, metrics"
    )
    recordings: Path | None = option(
        None, "folder of .eeict recordings, watched for new files; finished live matches are "
        "written here", metavar="DIR",
    )  # fmt: skip
    live: list[str] = option(
        [], "recordings to play as live streams (default: the built-in generated match, "
        "looping)", metavar="NAME",
    )  # fmt: skip
    loop: bool = option(False, "recorded live streams start over at the end")
    every: int = option(1, "recorded live streams play every Nth tick, in real time", metavar="N")
    epoch: float | None = option(
        None, "Unix time recorded live streams started (default: now); replicas given the same "
        "epoch play the same tick at the same moment", metavar="UNIX_SECONDS",
    )  # fmt: skip
    burst: int = option(8, "frames per tick message on live streams")
    token: str | None = option(
        None,
        "require this token on WebSockets and every HTTP path but the page, /static, the "
        "probes and /gsi (which has its own per-match tokens)",
        shown=lambda _: "***",
    )  # fmt: skip
    allow_open: bool = option(
        False, "serve a non-loopback --host without --token (otherwise refused at start-up)"
    )
    allowed_origins: list[str] = option(
        [], "browser Origins allowed to open WebSockets and read HTTP answers (CORS); "
        "default: none but the page's own", metavar="ORIGIN",
    )  # fmt: skip
    max_connections: int = option(
        20000,
        "WebSocket connections beyond this are closed (1013); size it to the pod's memory "
        "(docs/deploy.md, Sizing)",
    )
    max_replays: int = option(
        64,
        "/replay and /demodata connections at once (each may hold about 1.5 MiB of queued data); "
        "more are closed (1013)",
    )
    max_downloads: int = option(8, "concurrent recording downloads; more get 503")
    gsi: list[str] = option(
        [], "live matches CS2 may post to at POST /gsi/NAME, each with the token of its "
        "cfg's auth block", metavar="NAME=TOKEN", shown=hide_tokens,
    )  # fmt: skip
    gsi_delay: float = option(
        GSI_DELAY_S, "seconds live GSI frames trail the newest post (to interpolate between posts)",
        metavar="SECONDS",
    )  # fmt: skip
    gsi_stale_after: float = option(
        GSI_STALE_AFTER_S, "seconds without a post before a live match is marked stale; a "
        "longer silence is not interpolated across (the cfg's heartbeat is 2 s)",
        metavar="SECONDS",
    )  # fmt: skip
    gsi_finish_after: float = option(
        300.0, "seconds a stale live match waits for posts before it is written as a recording",
        metavar="SECONDS",
    )  # fmt: skip
    broker: str | None = option(
        None, "how live matches reach every replica: redis://HOST:PORT/DB (Redis Streams; "
        "redis://:PASSWORD@HOST:PORT/DB with a password, rediss:// for TLS); needed by --role "
        "ingest and serve; default: in this process only", metavar="URL", shown=redact_url,
    )  # fmt: skip
    role: str = option(
        "all", "all: take GSI posts and serve; ingest: take posts and publish them to the "
        "broker only; serve: serve the broker's matches only (replicas)",
        choices=("all", "ingest", "serve"),
    )  # fmt: skip
    overviews: Path | None = option(
        None,
        "folder of CS2 map overviews for the radar: <map>.txt and <map>_radar*.png or .jpg, "
        "extracted from the game's files (README: The radar)",
        metavar="DIR",
    )  # fmt: skip
    builtin_rounds: int = option(24, "rounds in the built-in generated match")
    log_level: str = option("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    def gsi_tokens(self) -> dict[str, str]:
        """``--gsi NAME=TOKEN`` pairs as a dict (validated by ``from_args``)."""
        return dict(pair.split("=", 1) for pair in self.gsi)


def _base_type(annotation: Any) -> type:
    """``int`` for ``int``, ``Path`` for ``Path | None``, ``str`` for ``list[str]``."""
    hint = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    if hint:
        annotation = next(a for a in hint if a is not type(None))
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(ServerConfig, globalns={"Path": Path})


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse_env(raw: str, kind: Any) -> Any:
    if typing.get_origin(kind) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    base = _base_type(kind)
    if base is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if raw == "" and isinstance(kind, types.UnionType):
        return None
    return base(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One command-line option per field, defaulting to its EEICT_* variable when set."""
    hints = _hints()
    for spec in fields(ServerConfig):
        kind, meta = hints[spec.name], spec.metadata
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        raw = os.environ.get(env_name(spec.name))
        if raw is not None:
            default = _parse_env(raw, kind)
        flag = "--" + spec.name.replace("_", "-")
        show = meta["shown"] or (lambda value: value)
        shown = "" if default in (None, [], False) else f" (default {show(default)})"
        help_text = f"[{env_name(spec.name)}] {meta['help']}{shown}"
        base = _base_type(kind)
        if base is bool:
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(
                flag, nargs="+", default=default, metavar=meta["metavar"], help=help_text
            )
        else:
            parser.add_argument(
                flag, type=base, default=default, metavar=meta["metavar"],
                choices=meta.get("choices"), help=help_text,
            )  # fmt: skip


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and what to do."""


def from_args(args: argparse.Namespace) -> ServerConfig:
    """The config from parsed options, checked for values that cannot work."""
    config = ServerConfig(**{spec.name: getattr(args, spec.name) for spec in fields(ServerConfig)})
    return validate(config)


def validate(config: ServerConfig) -> ServerConfig:
    if config.recordings is not None and not config.recordings.is_dir():
        raise ConfigError(f"--recordings {config.recordings} is not a folder")
    if config.overviews is not None and not config.overviews.is_dir():
        raise ConfigError(f"--overviews {config.overviews} is not a folder")
    if config.max_connections < 0:
        raise ConfigError("--max-connections must be 0 or more (0: refuse every WebSocket)")
    if config.max_replays < 0:
        raise ConfigError("--max-replays must be 0 or more (0: no replay sessions)")
    for name in ("every", "burst", "max_downloads", "builtin_rounds"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("gsi_delay", "gsi_stale_after", "gsi_finish_after"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    for pair in config.gsi:
        name, sep, token = pair.partition("=")
        if not (sep and token and MATCH_NAME.fullmatch(name)):
            raise ConfigError(
                f"--gsi {pair!r}: write NAME=TOKEN (NAME: letters, digits, '.', '_', '-'; "
                "TOKEN: the one in the game's cfg)"
            )
    _check_broker(config)
    if not config.token and not config.allow_open and not is_loopback(config.host):
        raise ConfigError(
            f"--host {config.host} without --token would open every stream and recording to "
            "anyone who can reach it: set --token (EEICT_TOKEN), or --allow-open if that is meant"
        )
    return config


def _check_broker(config: ServerConfig) -> None:
    """A broker URL the engines take; a role that shares matches between processes has one."""
    if config.broker and not config.broker.startswith(BROKER_SCHEMES):
        raise ConfigError(
            f"--broker {redact_url(config.broker)!r} is not a Redis URL: write "
            "redis://HOST:PORT/DB (redis://:PASSWORD@HOST:PORT/DB, rediss:// for TLS), or leave "
            "it out to keep live matches in this process"
        )
    if config.role != "all" and not config.broker:
        other = "serve" if config.role == "ingest" else "ingest"
        raise ConfigError(
            f"--role {config.role} without --broker: nothing would pass between this process "
            f"and the {other} process; pass --broker redis://HOST:PORT/DB (EEICT_BROKER), the "
            "same Redis for the ingest and every replica, or use --role all for one process"
        )


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
