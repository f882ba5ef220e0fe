#!/bin/bash
# Start a private Docker Engine for the tests, inside its own network namespace.
#
#   1. installs docker.io and busybox-static with apt-get if they are missing;
#   2. creates the network namespace `dockerhost` (lo up) if it is missing;
#   3. starts dockerd INSIDE it (nsenter --net=...), with a data-root, exec-root and pidfile of its
#      own, listening on the default socket /var/run/docker.sock and on tcp://127.0.0.1:2375 (the
#      loopback of `dockerhost`, unreachable from anywhere else: for the DOCKER_HOST=tcp:// test),
#      unless our dockerd already runs;
#   4. waits until it answers, then builds local/busybox:latest from the static busybox with
#      `docker import` (there is no registry);
#   5. starts Podman's Docker-compatible API the same way (tests/docker/podman.sh up), in netns
#      `podmanhost`; its failure does not fail this script (see target/podman-unavailable).
#
# Why a namespace: dockerd with default options in the root namespace rewrites the host firewall
# and turns on ip_forward. Inside `dockerhost`, docker0, its iptables rules and ip_forward belong
# to that namespace only; the script checks that the root namespace's ip_forward did not change.
#
# Idempotent: a second run finds the daemon running and the image present and does nothing.
# On failure it exits non-zero, prints the reason and writes it to target/docker-unavailable, so
# the Docker tests fail with that reason instead of passing silently; on success it removes that
# file. tests/docker/down.sh stops exactly the dockerd PID this script started.
#
# Usage (as root): tests/docker/up.sh          Env: PIPE_DOCKER_NO_INSTALL=1 never runs apt-get.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

NETNS=dockerhost
NAME=pipe-test-docker                   # marks everything of ours: paths and the dockerd cmdline
DATA_ROOT=/var/lib/$NAME
EXEC_ROOT=/run/$NAME
PIDFILE=/run/$NAME.pid                  # written by dockerd itself (--pidfile)
SOCKET=/var/run/docker.sock
STATE=$ROOT/target/docker               # log and our own record of the PID
UNAVAILABLE=$ROOT/target/docker-unavailable
IMAGE=local/busybox:latest

mkdir -p "$STATE"
log() { printf 'docker-up: %s\n' "$*"; }
fail() {
    printf 'docker-up: FAIL: %s\n' "$*" >&2
    printf '%s\n' "$*" >"$UNAVAILABLE"
    exit 1
}

[ "$(id -u)" = 0 ] || fail "tests/docker/up.sh must run as root (it creates a netns and starts dockerd)"

# --- 1. packages -------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker >/dev/null || need+=(docker.io)
# The image needs a static busybox: a dynamic one would find no libc in the container.
if ! { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }; then need+=(busybox-static); fi
command -v nsenter >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    [ "${PIPE_DOCKER_NO_INSTALL:-}" = 1 ] && fail "missing ${need[*]} and PIPE_DOCKER_NO_INSTALL=1"
    log "installing ${need[*]}"
    # Starts none of their services: docker.io would start dockerd in the root namespace.
    "$ROOT/tests/apt-install.sh" "$STATE/apt.log" "${need[@]}" >/dev/null ||
        fail "apt-get install ${need[*]} failed: $(grep -E '^(E|W):' "$STATE/apt.log" | tail -n 3 | tr '\n' ' ')(log: $STATE/apt.log)"
fi
command -v dockerd >/dev/null || fail "dockerd is not installed (apt-get install docker.io)"

# --- helpers -----------------------------------------------------------------------------------
# The PID in our pidfile, if it is alive and is the dockerd we started (not a reused PID).
our_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--exec-root $EXEC_ROOT" || return 1
    echo "$pid"
}
# Alive and not a zombie.
alive() { [ -e "/proc/$1" ] && [ "$(sed -E 's/^.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
answers() { curl -sf --max-time 2 --unix-socket "$SOCKET" http://docker/_ping >/dev/null 2>&1; }
docker_() { DOCKER_HOST=unix://$SOCKET docker "$@"; }

# --- 2. the namespace --------------------------------------------------------------------------
if [ ! -e /var/run/netns/$NETNS ]; then
    log "creating netns $NETNS"
    ip netns add $NETNS || fail "ip netns add $NETNS failed"
fi
ip -n $NETNS link set lo up || fail "cannot bring lo up in netns $NETNS"

# --- 3. the daemon -----------------------------------------------------------------------------
if pid=$(our_pid); then
    log "dockerd already running (PID $pid)"
else
    rm -f "$PIDFILE"
    if answers; then
        fail "another Docker daemon (not started by this script) answers on $SOCKET; stop it first: the tests need dockerd inside netns $NETNS"
    fi
    [ -S "$SOCKET" ] && rm -f "$SOCKET" # stale socket of a daemon that died
    fwd_before=$(cat /proc/sys/net/ipv4/ip_forward)
    log "starting dockerd in netns $NETNS (log: $STATE/dockerd.log)"
    # nsenter execs setsid, which execs dockerd: $! is dockerd. setsid keeps it out of the
    # caller's process group, so the daemon outlives this script until down.sh stops it.
    nsenter --net=/var/run/netns/$NETNS setsid dockerd \
        --host unix://$SOCKET \
        --host tcp://127.0.0.1:2375 \
        --data-root $DATA_ROOT \
        --exec-root $EXEC_ROOT \
        --pidfile $PIDFILE \
        --shutdown-timeout 1 \
        </dev/null >>"$STATE/dockerd.log" 2>&1 &
    started=$!
    echo "$started" >"$STATE/dockerd.pid"
    for _ in $(seq 1 300); do # up to 30 s; ready in ~0.5 s here
        answers && break
        alive "$started" ||
            fail "dockerd exited at start: $(tail -n 3 "$STATE/dockerd.log" | tr '\n' ' ')"
        sleep 0.1
    done
    answers || fail "dockerd (PID $started) did not answer on $SOCKET within 30 s (log: $STATE/dockerd.log)"
    pid=$(our_pid) || fail "dockerd answers but its pidfile $PIDFILE is missing or not ours"
    log "dockerd is up (PID $pid)"
    if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$fwd_before" ]; then
        fail "root namespace ip_forward changed after starting dockerd; stop it with tests/docker/down.sh"
    fi
fi
echo "$pid" >"$STATE/dockerd.pid"

# --- 4. the image ------------------------------------------------------------------------------
if ! docker_ image inspect $IMAGE >/dev/null 2>&1; then
    log "building $IMAGE from /bin/busybox"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp" "$tmp/rootfs/proc" \
        "$tmp/rootfs/sys" "$tmp/rootfs/dev"
    cp /bin/busybox "$tmp/rootfs/bin/"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$tmp/rootfs/bin/$applet"
    done
    tar -C "$tmp/rootfs" -cf "$tmp/busybox.tar" .
    docker_ import --change 'CMD ["/bin/sh"]' "$tmp/busybox.tar" $IMAGE >/dev/null ||
        fail "docker import of $IMAGE failed"
fi
docker_ run --rm --net=none $IMAGE true ||
    fail "cannot run a container from $IMAGE (see $STATE/dockerd.log)"

rm -f "$UNAVAILABLE"
log "ready: dockerd PID $pid in netns $NETNS, socket $SOCKET, image $IMAGE"

# --- 5. Podman's Docker-compatible API (its own netns and socket) -----------------------------
# Optional for this script's exit status: a failure is recorded in target/podman-unavailable,
# and the Podman test fails with it. PIPE_PODMAN=0 skips it (the Podman test then fails too).
if [ "${PIPE_PODMAN:-1}" = 1 ]; then
    "$ROOT/tests/docker/podman.sh" up || log "Podman is unavailable: $(cat "$ROOT/target/podman-unavailable" 2>/dev/null)"
else
    echo "PIPE_PODMAN=0: Podman was not started" >"$ROOT/target/podman-unavailable"
fi
