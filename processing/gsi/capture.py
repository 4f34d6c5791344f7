"""The shared capture format: one Python-literal payload dict a line, in a .txt or a .zip.

The listener that made the capture wrote ``print(payload)``, so a line is a Python literal,
not JSON. ``ast.literal_eval`` costs about 5 ms a line (too slow to replay at 50x), so a line
is first turned into JSON by rewriting its string literals and True/False/None, and only a
line that this cannot read falls back to ``ast.literal_eval``. Lines not starting with ``{``
are the listener's log lines and are skipped. Reading streams: one line in memory at a time.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_TOKEN = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|\bTrue\b|\bFalse\b|\bNone\b")
_WORDS = {"True": "true", "False": "false", "None": "null"}


class CaptureError(Exception):
    """A capture that cannot be read; the message names the file, the line and what to do."""


def _to_json(match: re.Match[str]) -> str:
    token = match.group()
    if token in _WORDS:
        return _WORDS[token]
    if "\\" in token:
        return json.dumps(ast.literal_eval(token), ensure_ascii=False)
    if token[0] == '"':
        return token
    body = token[1:-1]
    return json.dumps(body, ensure_ascii=False) if '"' in body else f'"{body}"'


def _fast_json(line: str) -> str:
    """JSON for a line whose strings are all '...' without escapes (almost every line).

    Splitting on the quote puts the text outside strings at even indexes; only there can the
    words True/False/None stand, so they are replaced in those parts alone (in one pass).
    """
    parts = line.split("'")
    outside = "\x00".join(parts[0::2])
    for word, replacement in _WORDS.items():
        outside = outside.replace(word, replacement)
    parts[0::2] = outside.split("\x00")
    return '"'.join(parts)


def parse_line(line: str) -> Any:
    """One capture line's value (the same as ``ast.literal_eval(line)``)."""
    try:
        if '"' in line or "\\" in line or "\x00" in line:
            return json.loads(_TOKEN.sub(_to_json, line))
        return json.loads(_fast_json(line))
    except (ValueError, SyntaxError):
        return ast.literal_eval(line)


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    if path.suffix.lower() != ".zip":
        with open(path, encoding="utf-8") as f:
            yield f
        return
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith(".txt")]
        if len(names) != 1:
            raise CaptureError(f"{path}: expected one .txt file in the zip, found {names}")
        with archive.open(names[0]) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8")


def read_capture(path: Path | str, limit: int | None = None, skip: int = 0) -> Iterator[dict]:
    """The capture's payloads in order (at most ``limit``, after the first ``skip``, which are
    not parsed), read one line at a time."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such file; give a capture .txt or .zip")
    count = 0
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, 1):
                if limit is not None and count >= limit:
                    return
                if not line.startswith("{"):
                    continue
                if skip:
                    skip -= 1
                    continue
                try:
                    payload = parse_line(line)
                except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                    raise CaptureError(
                        f"{path}:{number}: not a Python dict literal ({exc}); is it a capture?"
                    ) from exc
                if not isinstance(payload, dict):
                    raise CaptureError(f"{path}:{number}: a {type(payload).__name__}, not a dict")
                count += 1
                yield payload
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot be read as a capture ({exc})") from exc


def count_payloads(path: Path | str, limit: int | None = None, skip: int = 0) -> int:
    """How many payloads read_capture will yield (a fast scan, for progress bars)."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such file; give a capture .txt or .zip")
    count = 0
    with _open_text(path) as f:
        for line in f:
            count += line.startswith("{")
            if limit is not None and count >= skip + limit:
                break
    return max(0, count - skip)
