#!/usr/bin/env bash
# Test dependencies outside PyPI: Debian's Chromium (the radar page's browser test), Debian's
# redis-server (the broker tests start their own on a free port) and the Node example's packages. Idempotent and quick when everything is already there.
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

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's redis-server for the broker tests..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server')" >&2
    fi
fi

# npm ci deletes and reinstalls node_modules: only when the lock file changed since the last
# install (npm writes node_modules/.package-lock.json on every install; `npm install` may give
# both files the same time, hence "not older" rather than "newer").
node_dir=client_examples/node
installed="$node_dir/node_modules/.package-lock.json"
if [ -f "$node_dir/package-lock.json" ] && command -v npm >/dev/null 2>&1; then
    if [ -f "$installed" ] && ! [ "$node_dir/package-lock.json" -nt "$installed" ]; then
        echo "node packages are up to date"
    else
        (cd "$node_dir" && npm ci --silent --no-audit --no-fund)
    fi
fi
