#!/usr/bin/env bash
# Build the Containerfile and smoke-test the image the way OpenShift runs it: an arbitrary
# non-root UID with GID 0, the image's own entrypoint, env and /data/recordings.
#
# Run by hand as root from anywhere (not in CI: it installs packages and takes minutes):
#   scripts/container-check.sh
# Knobs (environment): REBUILD_BASE=1 rebuilds the cached base image; DEMO=path picks the demo
# to process (default: the smallest in ../shared/demos); PORT (default 18080).
#
# Why not `podman run`: sandboxes like CI's refuse the OCI runtime's setrlimit, so the image's
# filesystem is mounted and its entrypoint run with chroot in a private mount namespace instead.
# The production base (UBI) needs a registry this machine cannot reach, so the build uses a
# local Debian bookworm base (python3 3.11 + venv) made with debootstrap and cached in podman.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=localhost/eeict-base-python
IMAGE=localhost/eeict-stream:check
PORT=${PORT:-18080}
RUN_UID=1000870000 # the kind of UID OpenShift's restricted SCC assigns
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d /tmp/eeict-container-check.XXXXXX)
CONTAINER=""
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
    if [[ -n $CONTAINER ]]; then
        podman umount "$CONTAINER" >/dev/null 2>&1
        podman rm --force "$CONTAINER" >/dev/null 2>&1
    fi
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

# --- build ------------------------------------------------------------------------------------
t=$(now)
log "podman build -> $IMAGE"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# No layer cache: every source change invalidates the pip layer anyway, and it leaves no
# untagged builder-stage images behind.
(cd "$ROOT" && timeout 1200 podman build --isolation=chroot --layers=false \
    --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" -f Containerfile . >"$WORK/build.log" 2>&1) ||
    { tail -30 "$WORK/build.log"; die "podman build failed"; }
log "image built in $(since "$t")"
if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$IMAGE") ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true # the last run's image, now untagged
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
log "image size: $((size / 1000000)) MB (base $((base_size / 1000000)) MB, project layers $(((size - base_size) / 1000000)) MB)"

# --- static checks on the image ---------------------------------------------------------------
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[[ $user =~ ^[1-9][0-9]*$ ]] || die "image USER is '$user', expected a numeric non-root UID"
CONTAINER=$(podman create "$IMAGE")
MNT=$(podman mount "$CONTAINER")
perm=$(stat -c '%g %A' "$MNT/data/recordings")
[[ $perm == "0 drwxrwx"* ]] || die "/data/recordings is '$perm', expected group 0 with rwx"
[[ ! -e $MNT/opt/venv/bin/pip ]] || die "pip was left in /opt/venv"
! compgen -G "$MNT/root/.cache/pip" >/dev/null || die "a pip cache was left in the image"
log "image: USER $user, /data/recordings '$perm', no pip in /opt/venv"

# The image's own entrypoint, command and environment, as a container runtime would use them.
mapfile -t ARGV < <(podman image inspect --format '{{json .Config.Entrypoint}}{{json .Config.Cmd}}' "$IMAGE" |
    "$PY" -c 'import json, sys; d = json.JSONDecoder(); s = sys.stdin.read().strip(); a, i = d.raw_decode(s); b, _ = d.raw_decode(s[i:]); print("\n".join((a or []) + (b or [])))')
mapfile -t ENV < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')

# Runs "$@" in the image's filesystem as UID $RUN_UID, GID 0, with the image's env plus the
# given VAR=value overrides, in a private mount namespace (its mounts vanish when it exits), for
# at most $1 seconds; $2 = ro makes the root filesystem read-only (readOnlyRootFilesystem in
# openshift/deployment.yaml). Mounts: the host's /dev, a fresh /proc and /tmp (the Deployment's
# emptyDir), and (read-write runs) $DEMO_FILE read-only in /data/uploads. The process's PID
# (the same in the host's PID namespace) goes to $WORK/pid.
in_image() {
    local limit=$1 root_mode=$2
    shift 2
    # shellcheck disable=SC2016 # expanded by the inner sh, from its arguments
    local script='
        mnt=$1; demo=$2; pidfile=$3; userspec=$4; root_mode=$5; shift 5
        if [ "$root_mode" = ro ]; then
            mount --bind "$mnt" "$mnt"
            mount -o remount,bind,ro "$mnt"
        else
            target=$mnt/data/uploads/$(basename "$demo")
            mkdir -p "$mnt/data/uploads"
            touch "$target"
            mount --bind -o ro "$demo" "$target"
        fi
        mount --rbind /dev "$mnt/dev"
        mount -t proc proc "$mnt/proc"
        mount -t tmpfs -o mode=1777 tmpfs "$mnt/tmp"
        echo $$ >"$pidfile"
        exec chroot --userspec="$userspec" "$mnt" "$@"'
    timeout --kill-after=5 "$limit" unshare --mount --propagation private --fork --kill-child \
        sh -c "$script" in_image "$MNT" "$DEMO_FILE" "$WORK/pid" "$RUN_UID:0" "$root_mode" \
        env -i "${ENV[@]}" EEICT_HOST=127.0.0.1 "$@"
}

# --- process a demo as the Job does -----------------------------------------------------------
DEMOS=$(cd "$ROOT/.." && pwd)/shared/demos
# shellcheck disable=SC2012 # plain demo names; ls -S sorts by size
DEMO_FILE=${DEMO:-$(ls -S "$DEMOS"/*.dem 2>/dev/null | tail -1)}
[[ -f $DEMO_FILE ]] || die "no demo found (set DEMO=path or put the repo beside shared/)"
t=$(now)
log "eeict process $(basename "$DEMO_FILE") as $RUN_UID:0 into the image's /data/recordings"
in_image 600 rw /opt/venv/bin/eeict process "/data/uploads/$(basename "$DEMO_FILE")" \
    --out /data/recordings >"$WORK/process.log" 2>&1 || { tail -20 "$WORK/process.log"; die "eeict process failed"; }
ls -l "$MNT/data/recordings"
compgen -G "$MNT/data/recordings/*.eeict" >/dev/null || die "no .eeict recording was written"
log "processed in $(since "$t")"

# --- serve, configured as openshift/deployment.yaml does ---------------------------------------
# No EEICT_LIVE: the built-in generated match is the live stream, generated into /tmp.
RECORDING=$(basename "$(compgen -G "$MNT/data/recordings/*.eeict" | head -1)" .eeict)
t=$(now)
log "starting: ${ARGV[*]} (EEICT_PORT=$PORT) as $RUN_UID:0, read-only root"
rm -f "$WORK/pid"
in_image 300 ro EEICT_PORT="$PORT" EEICT_LOOP=1 EEICT_LOG_LEVEL=INFO XDG_CACHE_HOME=/tmp/cache "${ARGV[@]}" \
    >"$WORK/server.log" 2>&1 &
NS_PID=$!
for _ in $(seq 50); do [[ -s $WORK/pid ]] && break; sleep 0.1; done
SERVER_PID=$(cat "$WORK/pid")
ready=0
for _ in $(seq 120); do
    if curl -fsS --max-time 2 "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
done
((ready)) || { tail -30 "$WORK/server.log"; die "/readyz never answered 200"; }
log "ready in $(since "$t")"
for path in /healthz /metrics /streams /recordings /; do
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$path")
    [[ $code == 200 ]] || die "GET $path answered $code"
done
log "GET /healthz /metrics /streams /recordings / all 200"

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
timeout 60 "$PY" - "$PORT" "$SERVER_PID" "$RECORDING" <<'EOF' || { tail -30 "$WORK/server.log"; die "WebSocket check failed"; }
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

port, server_pid, recording = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = f"127.0.0.1:{port}"


def get_json(path: str) -> object:
    with urllib.request.urlopen(f"http://{base}{path}", timeout=5) as response:
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
    async with websockets.connect(f"ws://{base}/live/{stream}", open_timeout=5) as ws:
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
