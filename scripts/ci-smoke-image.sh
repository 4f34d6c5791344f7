#!/usr/bin/env bash
# Smoke-tests one built image with docker the way OpenShift runs it (an arbitrary UID in group
# 0, read-only root, no capabilities); the CI workflow's images job runs it after each build:
#   scripts/ci-smoke-image.sh serving|processing IMAGE
# The serving image must serve (readiness, health, metrics on the HTTP port), drain on SIGTERM
# and refuse `eeict process` with the install hint; the processing image must have the parser.
# scripts/container-check.sh is the thorough local check (a demo processed and streamed).
set -euo pipefail
flavor=$1
image=$2
run=(docker run --rm --user 1000870000:0 --read-only --tmpfs /tmp --cap-drop ALL
    --security-opt no-new-privileges)
python=(--entrypoint /opt/venv/bin/python "$image" -c)

case $flavor in
processing)
    "${run[@]}" "${python[@]}" "import demoparser2, pandas"
    "${run[@]}" "$image" process --help >/dev/null
    echo "processing image: demoparser2 and pandas import; eeict process --help runs"
    ;;
serving)
    if "${run[@]}" "${python[@]}" "import demoparser2" 2>/dev/null; then
        echo "the serving image contains demoparser2" >&2
        exit 1
    fi
    rc=0
    out=$("${run[@]}" "$image" process /data/none.dem 2>&1) || rc=$?
    if [[ $rc != 2 ]] || ! grep -qF "eeict-stream[processing]" <<<"$out"; then
        echo "eeict process in the serving image: status $rc, output: $out" >&2
        exit 1
    fi
    cid=$(docker run -d --user 1000870000:0 --read-only --tmpfs /tmp --cap-drop ALL \
        -e XDG_CACHE_HOME=/tmp/cache -e EEICT_TOKEN=smoke \
        -p 127.0.0.1:18080:8080 -p 127.0.0.1:18081:8081 "$image")
    trap 'docker logs "$cid" 2>&1 | tail -30; docker rm -f "$cid" >/dev/null' EXIT
    for _ in $(seq 120); do
        curl -fsS --max-time 2 http://127.0.0.1:18081/readyz >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS --max-time 5 http://127.0.0.1:18081/readyz >/dev/null
    curl -fsS --max-time 5 http://127.0.0.1:18081/healthz >/dev/null
    curl -fsS --max-time 5 -H "Authorization: Bearer smoke" http://127.0.0.1:18081/metrics |
        grep -q '^eeict_open_connections '
    docker stop --time 20 "$cid" >/dev/null # SIGTERM: the server drains and exits 0
    status=$(docker inspect --format '{{.State.ExitCode}}' "$cid")
    [[ $status == 0 ]] || { echo "exit status $status after SIGTERM" >&2; exit 1; }
    echo "serving image: ready, healthy, metrics, exit 0 on SIGTERM; no demo parser"
    ;;
*)
    echo "usage: $0 serving|processing IMAGE" >&2
    exit 2
    ;;
esac
