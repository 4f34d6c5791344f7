#!/usr/bin/env bash
# Rewrites constraints.txt: the exact version of every package the images install
# (`eeict-stream[processing]` and everything it pulls in), as pip resolves them today.
# Run after changing dependencies in pyproject.toml, then rebuild and check the images.
set -euo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
.venv/bin/pip install --quiet --dry-run --ignore-installed --report "$report" '.[processing]'
{
    cat <<'HEADER'
# Exact versions of every package the images install (`eeict-stream[processing]` and what it
# pulls in). The Containerfile installs with `pip install -c constraints.txt`, so a rebuild of
# the same commit installs the same packages. Written by scripts/lock-dependencies.sh.
HEADER
    .venv/bin/python - "$report" <<'PY'
import json
import sys

installed = json.load(open(sys.argv[1]))["install"]
pins = sorted(
    f"{p['metadata']['name'].lower()}=={p['metadata']['version']}"
    for p in installed
    if p["metadata"]["name"] != "eeict-stream"
)
print("\n".join(pins))
PY
} >constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
