"""The game's gamestate_integration_<name>.cfg for a spectator client, and `eeict gsi-config`.

The values (docs/gsi.md explains them): the server answers at once, so no buffering is needed
(buffer 0) and the game may post as often as every 0.1 s (throttle) while anything changes;
with ten moving players that is about 5-10 posts a second, which the framer's 0.75 s delay
covers. The heartbeat (a post even when nothing changed) is kept short so a silent feed is
told apart from a quiet one within a few seconds (the framer bridges silences up to it, the
server marks a longer one stale); the timeout is short because a lost request stalls the feed
(the game waits for each answer before the next post).
"""

from __future__ import annotations

import argparse
import re
import sys

TIMEOUT_S = 2.0
BUFFER_S = 0.0
THROTTLE_S = 0.1
HEARTBEAT_S = 2.0
COMPONENTS = (
    "provider",
    "map",
    "round",
    "phase_countdowns",
    "bomb",
    "allgrenades",
    "allplayers_id",
    "allplayers_state",
    "allplayers_match_stats",
    "allplayers_weapons",
    "allplayers_position",
    "player_id",
    "player_state",
    "player_weapons",
    "player_match_stats",
    "player_position",
)
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SAFE_VALUE = re.compile(r'[^"\\\r\n]*')


def render_config(url: str, token: str, name: str = "eeict") -> str:
    """The cfg text: KeyValues with the post URI, timings, auth token and components."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"name {name!r}: use letters, digits, '_' or '-' (it names the file)")
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"url {url!r}: the game posts over HTTP; give http(s)://host:port/gsi/<match>"
        )
    for label, value in (("url", url), ("token", token)):
        if not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"{label} must not contain quotes, backslashes or line breaks")
    lines = [
        f'"EEICT Stream {name}"',
        "{",
        f'  "uri"        "{url}"',
        f'  "timeout"    "{TIMEOUT_S:.1f}"',
        f'  "buffer"     "{BUFFER_S:.1f}"',
        f'  "throttle"   "{THROTTLE_S:.1f}"',
        f'  "heartbeat"  "{HEARTBEAT_S:.1f}"',
        '  "auth"',
        "  {",
        f'    "token"    "{token}"',
        "  }",
        '  "output"',
        "  {",
        '    "precision_time"      "3"',
        '    "precision_position"  "2"',
        '    "precision_vector"    "3"',
        "  }",
        '  "data"',
        "  {",
        *(f'    "{component}"  "1"' for component in COMPONENTS),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def file_name(name: str) -> str:
    """Where the game looks for it: <game>/csgo/cfg/gamestate_integration_<name>.cfg."""
    return f"gamestate_integration_{name}.cfg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `eeict gsi-config`."""
    parser.add_argument(
        "--url", required=True, help="where the game posts: http://HOST:HTTP_PORT/gsi/<match>"
    )
    parser.add_argument("--token", required=True, help="the match's ingest token (auth.token)")
    parser.add_argument(
        "--name",
        default="eeict",
        help="file name part: prints gamestate_integration_<name>.cfg (default: eeict)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the cfg; say on stderr where it goes."""
    try:
        text = render_config(args.url, args.token, args.name)
    except ValueError as exc:
        print(f"gsi-config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    print(
        f"gsi-config: save this as <CS2>/game/csgo/cfg/{file_name(args.name)} and restart the game",
        file=sys.stderr,
    )
    return 0
