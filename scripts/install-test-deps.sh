#!/usr/bin/env bash
# Test dependencies outside PyPI: Debian's Chromium (the radar page's browser test) and the
# Node example's packages. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium for the browser test..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: install it (e.g. 'sudo apt-get install chromium')" >&2
    fi
fi

if [ -f client_examples/node/package-lock.json ] && command -v npm >/dev/null 2>&1; then
    (cd client_examples/node && npm ci --silent --no-audit --no-fund)
fi
