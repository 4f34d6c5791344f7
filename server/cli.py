"""The ``eeict`` command: serve, process, inspect."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from server import __version__
from server.config import DEFAULT_PORT, ServerConfig

DESCRIPTION = """\
EEICT Stream: turns CS2 match data into seekable recordings and streams them to WebSocket
clients as msgpack frames (live streams, replay sessions, range fetch, and the old /demodata
JSON protocol).

  eeict serve                       serve the built-in generated match on :8080
  eeict process demos/*.dem --out recordings
  eeict serve --recordings recordings --live NAME --loop
"""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"EEICT_{name}", default)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in (_env(name) or "").split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eeict", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"eeict-stream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the WebSocket/HTTP server",
        description="Run the server. Every option can also be set by the EEICT_* variable shown.",
    )
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="[EEICT_HOST] %(default)s")
    serve.add_argument(
        "--port", type=int, default=int(_env("PORT", str(DEFAULT_PORT))),
        help="[EEICT_PORT] one port for HTTP and WebSocket (default %(default)s; 0: any free)",
    )  # fmt: skip
    serve.add_argument(
        "--recordings", type=Path, default=_env("RECORDINGS"),
        help="[EEICT_RECORDINGS] folder of .eeict recordings, watched for new files",
    )  # fmt: skip
    serve.add_argument(
        "--live", nargs="+", default=_env_list("LIVE"), metavar="NAME",
        help="[EEICT_LIVE, comma-separated] recordings to play as live streams "
        "(default: the built-in generated match, looping)",
    )  # fmt: skip
    serve.add_argument(
        "--loop", action="store_true", default=_env("LOOP", "") in ("1", "true", "yes"),
        help="[EEICT_LOOP=1] live streams start over at the end",
    )  # fmt: skip
    serve.add_argument(
        "--every", type=int, default=int(_env("EVERY", "1")), metavar="N",
        help="[EEICT_EVERY] live streams play every Nth tick, in real time (default 1)",
    )  # fmt: skip
    serve.add_argument(
        "--epoch", type=float, default=_env("EPOCH"), metavar="UNIX_SECONDS",
        help="[EEICT_EPOCH] when live streams started (default: now); replicas given the same "
        "epoch play the same tick at the same moment",
    )  # fmt: skip
    serve.add_argument(
        "--burst", type=int, default=int(_env("BURST", "8")),
        help="[EEICT_BURST] frames per tick message on live streams (default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--token", default=_env("TOKEN"),
        help="[EEICT_TOKEN] require this token on WebSockets, /metrics and /recordings",
    )  # fmt: skip
    serve.add_argument(
        "--allowed-origins", nargs="+", default=_env_list("ALLOWED_ORIGINS"), metavar="ORIGIN",
        help="[EEICT_ALLOWED_ORIGINS] browser Origins allowed to open WebSockets (default: any)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections", type=int, default=int(_env("MAX_CONNECTIONS", "20000")),
        help="[EEICT_MAX_CONNECTIONS] more are closed with code 1013 (default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--builtin-rounds", type=int, default=int(_env("BUILTIN_ROUNDS", "24")),
        help="[EEICT_BUILTIN_ROUNDS] rounds in the built-in generated match (default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--log-level", default=_env("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="[EEICT_LOG_LEVEL] %(default)s",
    )  # fmt: skip

    process = commands.add_parser(
        "process",
        help="turn CS2 demos into recordings",
        description="Parse CS2 .dem files into .eeict recordings. A bad file is reported and "
        "the others are still processed; the exit status is 1 if any failed.",
    )
    process.add_argument("demos", nargs="+", type=Path, metavar="DEMO")
    process.add_argument(
        "--out", type=Path, default=Path("recordings"), help="default: %(default)s"
    )
    process.add_argument("--force", action="store_true", help="overwrite existing recordings")
    process.add_argument(
        "--shard", metavar="INDEX/COUNT", default=_env("SHARD"),
        help="[EEICT_SHARD] process only this share of the demos (e.g. 0/4), as each pod of an "
        "Indexed Job does; a demo's share follows from its name, so the shares never overlap",
    )  # fmt: skip

    inspect = commands.add_parser("inspect", help="show a recording's metadata")
    inspect.add_argument("recording", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the metadata as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Files we write (recordings, the cache) stay group-writable: on OpenShift every pod runs
    # as an arbitrary UID in group 0, and the next pod or Job must be able to replace them.
    os.umask(os.umask(0) & ~0o020)
    if args.command == "process":
        from processing.commands import Shard, process

        try:
            shard = None if args.shard is None else Shard.parse(args.shard)
        except ValueError as exc:
            print(f"error: --shard {exc}", file=sys.stderr)
            return 2
        return process(args.demos, args.out, args.force, shard)
    if args.command == "inspect":
        from processing.commands import inspect

        return inspect(args.recording, args.json)
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    from server.app import App

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if args.recordings is not None and not args.recordings.is_dir():
        print(f"error: --recordings {args.recordings} is not a folder", file=sys.stderr)
        return 2
    config = ServerConfig(
        host=args.host,
        port=args.port,
        recordings=args.recordings,
        live=args.live,
        loop=args.loop,
        every=max(1, args.every),
        epoch=None if args.epoch is None else float(args.epoch),
        burst=max(1, args.burst),
        token=args.token or None,
        allowed_origins=args.allowed_origins,
        max_connections=args.max_connections,
        builtin_rounds=args.builtin_rounds,
        log_level=args.log_level,
    )
    try:
        from uvloop import run
    except ImportError:  # uvloop does not build on Windows
        run = asyncio.run
    run(App(config).run_until_signal())
    return 0


if __name__ == "__main__":
    sys.exit(main())
