#!/usr/bin/env bash
# Build both images of the Containerfile (serving and processing) and smoke-test them the way
# OpenShift runs them: an arbitrary non-root UID with GID 0, a read-only root, the image's own
# entrypoint and env. The processing image turns a demo into a recording (as the Job does); the
# serving image, which must hold no demo parser, serves it from a read-only recordings mount (as
# the Deployment does). Sizes: the project's layers (the venv) are the same on any base, so they
# are held to what the 250 MB serving image leaves beside the UBI minimal runtime base
# (MAX_PROJECT_MB); the whole image is measured on the real base by CI (ci-smoke-image.sh).
#
# Run by hand as root from anywhere (not in CI: it installs packages and takes minutes):
#   scripts/container-check.sh
# Knobs (environment): REBUILD_BASE=1 rebuilds the cached base image; DEMO=path picks the demo
# to process (default: the smallest in ../shared/demos); PORT (WebSocket, default 18080) and
# HTTP_PORT (default PORT+1); MAX_PROJECT_MB (default 110: 250 MB less the ~140 MB that UBI
# minimal with python3.12 and tar is estimated at; docs/deploy.md, "Images").
#
# Why not `podman run`: sandboxes like CI's refuse the OCI runtime's setrlimit, so the image's
# filesystem is mounted and its entrypoint run with chroot in a private mount namespace instead.
# The production base (UBI) needs a registry this machine cannot reach, so the build uses a
# local Debian bookworm base (python3 3.11 + venv) made with debootstrap and cached in podman.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=localhost/eeict-base-python
BUILDER=localhost/eeict-builder-python # the base plus binutils, for the build stages' strip
SERVING=localhost/eeict-stream:check
PROCESSING=localhost/eeict-stream-processing:check
PORT=${PORT:-18080}
HTTP_PORT=${HTTP_PORT:-$((PORT + 1))}
MAX_PROJECT_MB=${MAX_PROJECT_MB:-110}
# Modules only `eeict process` needs: in the processing image, never in the serving one
# (polars' compiled core, most of its size, is the separate polars-runtime-32 package).
PROCESSING_STACK=(demoparser2 pandas polars _polars_runtime_32 pyarrow)
RUN_UID=1000870000 # the kind of UID OpenShift's restricted SCC assigns
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d /tmp/eeict-container-check.XXXXXX)
CONTAINERS=()
SERVER_PID=""
NS_PID=""

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
since() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(now)"; }

cleanup() {
    set +e
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID"; fi
    if [[ -n $NS_PID ]]; then wait "$NS_PID" 2>/dev/null; fi
    for container in "${CONTAINERS[@]}"; do
        podman umount "$container" >/dev/null 2>&1
        podman rm --force "$container" >/dev/null 2>&1
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

[[ $(id -u) == 0 ]] || die "run as root (podman storage, chroot and mounts need it)"
[[ -f $ROOT/README.md ]] || die "README.md is missing: pyproject.toml names it as the readme"
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || die "$PY is missing: the WebSocket check uses the project's venv"

# --- tools ------------------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- base image (cached) ----------------------------------------------------------------------
if [[ ${REBUILD_BASE:-0} == 1 ]] || ! podman image exists "$BASE"; then
    t=$(now)
    log "building $BASE with debootstrap (bookworm minbase + python3-venv)"
    rootfs=$WORK/rootfs
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    # Trust what the host trusts (a TLS-inspecting proxy's CA, say), so pip in the build can
    # reach PyPI from here; pip reads PIP_CERT rather than the system store.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["/usr/bin/python3"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    log "base image built in $(since "$t")"
else
    log "using cached $BASE (REBUILD_BASE=1 to rebuild)"
fi
if [[ ${REBUILD_BASE:-0} == 1 ]] || ! podman image exists "$BUILDER"; then
    log "building $BUILDER ($BASE + binutils)"
    printf 'FROM %s\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null && rm -rf /var/lib/apt/lists/*\n' "$BASE" |
        timeout 600 podman build --isolation=chroot --layers=false -t "$BUILDER" -f - "$WORK" >"$WORK/builder.log" 2>&1 ||
        { tail -20 "$WORK/builder.log"; die "building $BUILDER failed"; }
fi

# --- build both images -------------------------------------------------------------------------
# build_image FLAVOR TAG: no layer cache (every source change invalidates the pip layer anyway,
# and it leaves no untagged builder-stage images behind); the last run's image is removed.
build_image() {
    local flavor=$1 tag=$2 previous t
    t=$(now)
    log "podman build --build-arg FLAVOR=$flavor -> $tag"
    previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    (cd "$ROOT" && timeout 1200 podman build --isolation=chroot --layers=false \
        --build-arg RUNTIME_IMAGE="$BASE" --build-arg BUILDER_IMAGE="$BUILDER" --build-arg FLAVOR="$flavor" -t "$tag" -f Containerfile . \
        >"$WORK/build-$flavor.log" 2>&1) ||
        { tail -30 "$WORK/build-$flavor.log"; die "podman build ($flavor) failed"; }
    if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$tag") ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    log "$flavor image built in $(since "$t")"
}
build_image serving "$SERVING"
build_image processing "$PROCESSING"

base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
mb() { echo $(($1 / 1000000)); }
serving_size=$(podman image inspect --format '{{.Size}}' "$SERVING")
processing_size=$(podman image inspect --format '{{.Size}}' "$PROCESSING")
log "sizes: serving $(mb "$serving_size") MB, processing $(mb "$processing_size") MB (base $(mb "$base_size") MB; project layers $(mb $((serving_size - base_size))) / $(mb $((processing_size - base_size))) MB)"
(($(mb $((serving_size - base_size))) <= MAX_PROJECT_MB)) ||
    die "the serving image's own layers are over $MAX_PROJECT_MB MB"

# --- static checks on each image ----------------------------------------------------------------
# mount_image TAG: creates a container of TAG and prints where its filesystem is mounted.
mount_image() {
    local container
    container=$(podman create "$1")
    CONTAINERS+=("$container")
    podman mount "$container"
}
SERVING_MNT=$(mount_image "$SERVING")
PROCESSING_MNT=$(mount_image "$PROCESSING")
for tag in "$SERVING" "$PROCESSING"; do
    user=$(podman image inspect --format '{{.Config.User}}' "$tag")
    [[ $user =~ ^[1-9][0-9]*$ ]] || die "$tag: USER is '$user', expected a numeric non-root UID"
done
for mnt in "$SERVING_MNT" "$PROCESSING_MNT"; do
    perm=$(stat -c '%g %A' "$mnt/data/recordings")
    [[ $perm == "0 drwxrwx"* ]] || die "/data/recordings is '$perm', expected group 0 with rwx"
    [[ ! -e $mnt/opt/venv/bin/pip ]] || die "pip was left in /opt/venv"
    ! compgen -G "$mnt/root/.cache/pip" >/dev/null || die "a pip cache was left in an image"
done
for package in "${PROCESSING_STACK[@]}"; do
    ! compgen -G "$SERVING_MNT/opt/venv/lib/python3*/site-packages/$package" >/dev/null ||
        die "the serving image contains $package"
    compgen -G "$PROCESSING_MNT/opt/venv/lib/python3*/site-packages/$package" >/dev/null ||
        die "the processing image lacks $package"
done
log "both images: a numeric non-root USER, /data/recordings group 0 and writable, no pip; ${PROCESSING_STACK[*]} only in processing"

# The serving image's own entrypoint, command and environment, as a container runtime uses them.
mapfile -t ARGV < <(podman image inspect --format '{{json .Config.Entrypoint}}{{json .Config.Cmd}}' "$SERVING" |
    "$PY" -c 'import json, sys; d = json.JSONDecoder(); s = sys.stdin.read().strip(); a, i = d.raw_decode(s); b, _ = d.raw_decode(s[i:]); print("\n".join((a or []) + (b or [])))')
image_env() { podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$1" | sed '/^$/d'; }
mapfile -t SERVING_ENV < <(image_env "$SERVING")
mapfile -t PROCESSING_ENV < <(image_env "$PROCESSING")
RECORDINGS=$WORK/recordings # the volume: written by the processing run, read-only to the server
mkdir -p "$RECORDINGS"
chgrp 0 "$RECORDINGS"
chmod 2775 "$RECORDINGS"

# in_image MNT LIMIT RECORDINGS_MODE ENV_ARRAY CMD...: runs CMD in the image filesystem MNT as
# UID $RUN_UID, GID 0, with a read-only root (readOnlyRootFilesystem in the manifests), the
# image's env (the array named ENV_ARRAY) plus any VAR=value at the start of CMD, in a private
# mount namespace (its mounts vanish when it exits), for at most LIMIT seconds. Mounts: the
# host's /dev, a fresh /proc and /tmp (the pods' emptyDir), $RECORDINGS at /data/recordings
# (RECORDINGS_MODE rw or ro, as the Job and the Deployment mount the volume) and $DEMO_FILE
# read-only in /data/uploads. The process's PID (the same in the host's PID namespace) goes to
# $WORK/pid.
in_image() {
    local mnt=$1 limit=$2 recordings_mode=$3
    local -n env_ref=$4
    shift 4
    # shellcheck disable=SC2016 # expanded by the inner sh, from its arguments
    local script='
        mnt=$1; demo=$2; pidfile=$3; userspec=$4; recordings=$5; recordings_mode=$6; shift 6
        target=$mnt/data/uploads/$(basename "$demo")
        mkdir -p "$mnt/data/uploads"
        touch "$target"
        mount --bind "$mnt" "$mnt"
        mount --bind -o ro "$demo" "$target"
        mount --bind "$recordings" "$mnt/data/recordings"
        if [ "$recordings_mode" = ro ]; then
            mount -o remount,bind,ro "$mnt/data/recordings"
        fi
        mount --rbind /dev "$mnt/dev"
        mount -t proc proc "$mnt/proc"
        mount -t tmpfs -o mode=1777 tmpfs "$mnt/tmp"
        mount -o remount,bind,ro "$mnt"
        echo $$ >"$pidfile"
        exec chroot --userspec="$userspec" "$mnt" "$@"'
    timeout --kill-after=5 "$limit" unshare --mount --propagation private --fork --kill-child \
        sh -c "$script" in_image "$mnt" "$DEMO_FILE" "$WORK/pid" "$RUN_UID:0" "$RECORDINGS" \
        "$recordings_mode" env -i "${env_ref[@]}" EEICT_HOST=127.0.0.1 "$@"
}

# --- process a demo as the Job does ------------------------------------------------------------
DEMOS=$(cd "$ROOT/.." && pwd)/shared/demos
# shellcheck disable=SC2012 # plain demo names; ls -S sorts by size
DEMO_FILE=${DEMO:-$(ls -S "$DEMOS"/*.dem 2>/dev/null | tail -1)}
[[ -f $DEMO_FILE ]] || die "no demo found (set DEMO=path or put the repo beside shared/)"
UPLOAD=/data/uploads/$(basename "$DEMO_FILE")

# The serving image has no demo parser: `eeict process` there must say what to install.
rc=0
in_image "$SERVING_MNT" 60 rw SERVING_ENV /opt/venv/bin/eeict process "$UPLOAD" \
    --out /data/recordings >"$WORK/no-parser.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "eeict-stream\[processing\]" "$WORK/no-parser.log" ||
    { cat "$WORK/no-parser.log"; die "serving image: eeict process gave status $rc without the install hint"; }
log "serving image: eeict process refuses with: $(head -1 "$WORK/no-parser.log")"

t=$(now)
log "processing image: eeict process $(basename "$DEMO_FILE") --shard 0/1 as $RUN_UID:0, read-only root"
in_image "$PROCESSING_MNT" 600 rw PROCESSING_ENV /opt/venv/bin/eeict process "$UPLOAD" \
    --out /data/recordings --shard 0/1 >"$WORK/process.log" 2>&1 ||
    { tail -20 "$WORK/process.log"; die "eeict process failed"; }
ls -l "$RECORDINGS"
compgen -G "$RECORDINGS/*.eeict" >/dev/null || die "no .eeict recording was written"
log "processed in $(since "$t")"
in_image "$PROCESSING_MNT" 600 rw PROCESSING_ENV /opt/venv/bin/eeict process "$UPLOAD" \
    --out /data/recordings >"$WORK/process-again.log" 2>&1 ||
    { tail -20 "$WORK/process-again.log"; die "eeict process (second run) failed"; }
grep -q "skipped" "$WORK/process-again.log" || die "a second run did not skip the finished demo"
log "second run skipped the finished demo"

# --- serve, configured as the Deployment does ----------------------------------------------------
# No EEICT_LIVE: the built-in generated match is the live stream, generated into /tmp.
RECORDING=$(basename "$(compgen -G "$RECORDINGS/*.eeict" | head -1)" .eeict)
t=$(now)
log "starting: ${ARGV[*]} (EEICT_PORT=$PORT EEICT_HTTP_PORT=$HTTP_PORT) as $RUN_UID:0, read-only root and recordings"
rm -f "$WORK/pid"
in_image "$SERVING_MNT" 300 ro SERVING_ENV EEICT_PORT="$PORT" EEICT_HTTP_PORT="$HTTP_PORT" \
    EEICT_LOOP=1 EEICT_LOG_LEVEL=INFO XDG_CACHE_HOME=/tmp/cache "${ARGV[@]}" \
    >"$WORK/server.log" 2>&1 &
NS_PID=$!
for _ in $(seq 50); do [[ -s $WORK/pid ]] && break; sleep 0.1; done
SERVER_PID=$(cat "$WORK/pid")
ready=0
for _ in $(seq 120); do
    if curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
done
((ready)) || { tail -30 "$WORK/server.log"; die "/readyz never answered 200"; }
log "ready in $(since "$t")"
for path in /healthz /metrics /streams /recordings /; do
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT$path")
    [[ $code == 200 ]] || die "GET $path answered $code"
done
log "GET /healthz /metrics /streams /recordings / all 200 on port $HTTP_PORT"

# --- the example client streams ticks from the container -----------------------------------------
t=$(now)
timeout 30 "$PY" "$ROOT/client_examples/subscribe.py" --url "ws://127.0.0.1:$PORT" \
    --stream generated --duration 4 > "$WORK/subscribe.out" 2>&1 \
    || { cat "$WORK/subscribe.out"; die "client_examples/subscribe.py failed"; }
ticks=$(grep -oE '^tick +[0-9]+' "$WORK/subscribe.out" | awk '{print $2}' | sort -un | wc -l)
[[ $ticks -ge 2 ]] || { cat "$WORK/subscribe.out"; die "subscribe.py saw no advancing ticks"; }
log "client_examples/subscribe.py: $ticks status lines with advancing ticks in $(since "$t")"

# --- WebSocket ticks, then SIGTERM while subscribed ---------------------------------------------
t=$(now)
timeout 60 "$PY" - "$PORT" "$HTTP_PORT" "$SERVER_PID" "$RECORDING" <<'EOF' || { tail -30 "$WORK/server.log"; die "WebSocket check failed"; }
"""The processed recording is listed; the first live stream sends ticks; SIGTERM closes 1001."""

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request

import msgpack
import websockets

port, http_port, server_pid, recording = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def get_json(path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as response:
        return json.load(response)


def first_stream(listing: object) -> str:
    """The first stream name in /streams, whichever JSON shape it uses."""
    if isinstance(listing, dict):
        listing = listing.get("streams", listing)
    if isinstance(listing, dict):
        return next(iter(listing))
    item = listing[0]
    return item if isinstance(item, str) else item.get("id") or item["name"]


async def main() -> None:
    listed = json.dumps(get_json("/recordings"))
    assert f'"{recording}"' in listed, f"{recording} is not in /recordings: {listed[:300]}"
    stream = first_stream(get_json("/streams"))
    async with websockets.connect(f"ws://127.0.0.1:{port}/live/{stream}", open_timeout=5) as ws:
        hello = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        assert hello.get("type") == "hello", hello
        await ws.send(msgpack.packb({"type": "subscribe", "buffer": 128}))
        ticks = 0
        while ticks < 5:
            message = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
            ticks += message.get("type") == "ticks"
        print(f"/live/{stream}: hello, then {ticks} 'ticks' messages")
        sent = time.monotonic()
        os.kill(server_pid, signal.SIGTERM)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        except websockets.ConnectionClosed:
            pass
        print(f"SIGTERM: closed with code {ws.close_code} after {time.monotonic() - sent:.2f} s")
        assert ws.close_code == 1001, ws.close_code


asyncio.run(main())
EOF
for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null && die "server still running 15 s after SIGTERM"
rc=0
wait "$NS_PID" || rc=$?
NS_PID=""
SERVER_PID=""
log "server exited with status $rc; WebSocket check and shutdown took $(since "$t")"
[[ $rc == 0 ]] || { tail -20 "$WORK/server.log"; die "server exit status $rc after SIGTERM"; }
log "PASS: container check"
