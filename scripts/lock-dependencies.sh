#!/usr/bin/env bash
# Rewrites the images' dependency locks from pyproject.toml, resolved for every Python the
# project supports (>= 3.11) whatever Python runs this script: the images run 3.12,
# scripts/container-check.sh's Debian base 3.11. A dependency only some versions need carries
# its marker (redis needs async-timeout below 3.11.3), which pip evaluates when it installs:
#   requirements/serving.txt     the serving dependencies and the build backend (setuptools)
#   requirements/processing.txt  what the `processing` extra adds on top of them
# Every line is an exact version with the sha256 of each of its files on PyPI, so the
# Containerfile installs them with `pip install --require-hashes --no-deps`: a changed or
# substituted file fails the build. Versions already in the locks are kept while they still
# satisfy pyproject.toml; UPGRADE=1 takes the newest instead.
#
# Run after changing dependencies in pyproject.toml (needs PyPI; installs uv into a temporary
# venv), then rebuild and check the images (scripts/container-check.sh) and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_FLOOR=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["requires-python"].removeprefix(">="))')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check uv
uv=$work/venv/bin/uv

# The inputs, from pyproject.toml: serving = dependencies + build-system.requires; processing =
# the same plus the `processing` extra.
python3 - "$work" <<'PY'
import sys
import tomllib
from pathlib import Path

work = Path(sys.argv[1])
pyproject = tomllib.loads(Path("pyproject.toml").read_text())
serving = pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]
processing = serving + pyproject["project"]["optional-dependencies"]["processing"]
(work / "serving.in").write_text("\n".join(serving) + "\n")
(work / "processing.in").write_text("\n".join(processing) + "\n")
PY

compile_lock() { # compile_lock INPUT OUTPUT [uv options]: OUTPUT's pins are kept as preferences
    local input=$1 output=$2
    shift 2
    "$uv" pip compile "$input" --output-file "$output" --universal --python-version "$PYTHON_FLOOR" \
        --generate-hashes --no-header --no-annotate --quiet ${UPGRADE:+--upgrade} "$@"
}

# Everything first (so both files agree on every version), then the serving part of it.
mkdir -p requirements
cat requirements/serving.txt requirements/processing.txt >"$work/all.txt" 2>/dev/null || true
compile_lock "$work/processing.in" "$work/all.txt"
grep -E '^[A-Za-z0-9]' "$work/all.txt" | sed 's/ .*//' >"$work/pins.txt" # name==version
cp "$work/all.txt" "$work/serving.txt"
compile_lock "$work/serving.in" "$work/serving.txt" --constraint "$work/pins.txt"

python3 - "$work" <<'PY'
import re
import sys
from pathlib import Path

work = Path(sys.argv[1])


def entries(path: Path) -> dict[str, str]:
    """name -> its block ("name==version \\" and its --hash lines), from uv's output."""
    blocks: dict[str, str] = {}
    name = None
    for line in path.read_text().splitlines():
        if re.match(r"[A-Za-z0-9]", line):
            name = re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower().replace("_", "-")
            blocks[name] = line
        elif line.startswith(" ") and name is not None:
            blocks[name] += "\n" + line
    return blocks


everything, serving = entries(work / "all.txt"), entries(work / "serving.txt")
for name, block in serving.items():
    assert everything[name].splitlines()[0] == block.splitlines()[0], f"{name}: versions differ"
heading = (
    "# {what}.\n"
    "# Exact versions, each with the sha256 of its files on PyPI, for every Python >= 3.11 (a\n"
    "# marker says where only some need a package). The Containerfile installs them with\n"
    "# `pip install --require-hashes --no-deps`. Written by scripts/lock-dependencies.sh from\n"
    "# pyproject.toml: do not edit by hand.\n"
)
parts = {
    "serving.txt": ("The serving image", serving),
    "processing.txt": (
        "What the processing image adds (the `processing` extra)",
        {k: v for k, v in everything.items() if k not in serving},
    ),
}
for file, (what, blocks) in parts.items():
    body = "\n".join(blocks[name] for name in sorted(blocks))
    Path("requirements", file).write_text(heading.format(what=what) + body + "\n")
    print(f"requirements/{file}: {len(blocks)} packages")
PY
