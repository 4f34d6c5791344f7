#!/usr/bin/env bash
# Smoke-tests one built image with docker the way OpenShift runs it (an arbitrary UID in group
# 0, read-only root, no capabilities); the CI workflow's images job runs it after each build:
#   scripts/ci-smoke-image.sh serving|processing IMAGE
# The serving image must stay at or under MAX_SERVING_MB (default 250, uncompressed, as
# `docker image inspect` reports it), hold none of the processing stack, serve (readiness,
# health, metrics on the HTTP port), drain on SIGTERM and refuse `eeict process` with the install
# hint; the processing image must have the parser. The server's log is printed only on failure.
# scripts/container-check.sh is the thorough local check (a demo processed and streamed).
set -euo pipefail
flavor=$1
image=$2
MAX_SERVING_MB=${MAX_SERVING_MB:-250}
# Only `eeict process` needs these (module names; polars' compiled core is _polars_runtime_32).
PROCESSING_STACK=(demoparser2 pandas polars _polars_runtime_32 pyarrow)
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
    size=$(docker image inspect --format '{{.Size}}' "$image")
    if ((size > MAX_SERVING_MB * 1000000)); then
        echo "the serving image is $((size / 1000000)) MB, over $MAX_SERVING_MB MB" >&2
        exit 1
    fi
    echo "serving image: $((size / 1000000)) MB (limit $MAX_SERVING_MB MB)"
    # Which of the stack's modules the image's Python finds: none, for the serving image.
    check="import importlib.util, sys
found = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
print(' '.join(found))"
    present=$("${run[@]}" "${python[@]}" "$check" "${PROCESSING_STACK[@]}")
    if [[ -n $present ]]; then
        echo "the serving image contains $present" >&2
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
    # The server's log only when a check below fails (set -e leaves with a non-zero status).
    trap 'status=$?; if ((status)); then docker logs "$cid" 2>&1 | tail -30; fi; docker rm -f "$cid" >/dev/null' EXIT
    for _ in $(seq 120); do
        curl -fsS --max-time 2 http://127.0.0.1:18081/readyz >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS --max-time 5 http://127.0.0.1:18081/readyz >/dev/null
    curl -fsS --max-time 5 http://127.0.0.1:18081/healthz >/dev/null
    curl -fsS --max-time 5 -H "Authorization: Bearer smoke" http://127.0.0.1:18081/metrics |
        grep -q '^eeict_open_connections '
    docker stop --time 20 "$cid" >/dev/null # SIGTERM: the server drains and exits 0
    code=$(docker inspect --format '{{.State.ExitCode}}' "$cid")
    [[ $code == 0 ]] || { echo "exit status $code after SIGTERM" >&2; exit 1; }
    echo "serving image: ready, healthy, metrics, exit 0 on SIGTERM; none of ${PROCESSING_STACK[*]}"
    ;;
*)
    echo "usage: $0 serving|processing IMAGE" >&2
    exit 2
    ;;
esac
