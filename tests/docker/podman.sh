#!/bin/bash
# Podman's Docker-compatible API for the tests: `tests/docker/podman.sh up` | `down`.
#
# up:   installs podman (Debian's 4.3) if missing, creates netns `podmanhost` (lo up) and starts
#       `podman system service` INSIDE it on unix:///run/pipe-test-podman/podman.sock, with a
#       storage root and run root of its own, then imports local/busybox:latest from the static
#       busybox. On failure it exits non-zero and writes the reason to target/podman-unavailable
#       (the Podman test then fails with it); on success it removes that file.
# down: removes the test containers, stops exactly the service PID that `up` started (checked
#       against its command line), removes the netns. Both are idempotent.
#
# Called by tests/docker/up.sh and tests/docker/down.sh. Containers must be run with
# `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`: Podman's defaults (1048576) exceed the
# hard limits of sandboxed machines like this one, and runc then fails with "error setting
# rlimits ... operation not permitted".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NETNS=podmanhost
NAME=pipe-test-podman
RUN=/run/$NAME
SOCKET=$RUN/podman.sock
PIDFILE=/run/$NAME.pid
STATE=$ROOT/target/docker
UNAVAILABLE=$ROOT/target/podman-unavailable
IMAGE=local/busybox:latest

log() { printf 'podman-%s: %s\n' "$ACTION" "$*"; }
fail() {
    printf 'podman-%s: FAIL: %s\n' "$ACTION" "$*" >&2
    [ "$ACTION" = up ] && printf '%s\n' "$*" >"$UNAVAILABLE"
    exit 1
}
# The PID in our pidfile, if it is alive and is the service we started (not a reused PID).
our_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
        grep -q -- "^podman --root /var/lib/$NAME --runroot $RUN/run system service" || return 1
    echo "$pid"
}
# Alive and not a zombie (a zombie's PID stays until its parent, maybe PID 1, reaps it).
alive() { [ -e "/proc/$1" ] && [ "$(sed -E 's/^.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
answers() { curl -sf --max-time 2 --unix-socket "$SOCKET" http://podman/_ping >/dev/null 2>&1; }
remote() { podman --remote --url "unix://$SOCKET" "$@"; }

up() {
    mkdir -p "$STATE"
    [ "$(id -u)" = 0 ] || fail "must run as root"
    if ! command -v podman >/dev/null; then
        [ "${PIPE_DOCKER_NO_INSTALL:-}" = 1 ] && fail "podman is missing and PIPE_DOCKER_NO_INSTALL=1"
        log "installing podman"
        "$ROOT/tests/apt-install.sh" "$STATE/podman-apt.log" podman >/dev/null ||
            fail "apt-get install podman failed (log: $STATE/podman-apt.log)"
    fi
    [ -e /var/run/netns/$NETNS ] || ip netns add $NETNS || fail "ip netns add $NETNS failed"
    ip -n $NETNS link set lo up || fail "cannot bring lo up in netns $NETNS"
    local pid
    if pid=$(our_pid); then
        log "service already running (PID $pid)"
    else
        mkdir -p "$RUN"
        rm -f "$SOCKET"
        log "starting podman system service in netns $NETNS (log: $STATE/podman.log)"
        # nsenter execs setsid, which execs podman: $! is the service. runc, not crun
        # (installed with podman and preferred by it): crun refuses a host with cgroup v1
        # controllers and a v2 mount at once ("cgroups in hybrid mode not supported").
        nsenter --net=/var/run/netns/$NETNS setsid podman --root /var/lib/$NAME \
            --runroot $RUN/run system service --time=0 "unix://$SOCKET" \
            --runtime runc --cgroup-manager cgroupfs \
            </dev/null >>"$STATE/podman.log" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
        for _ in $(seq 1 300); do
            answers && break
            alive "$pid" ||
                fail "podman system service exited: $(tail -n 3 "$STATE/podman.log" | tr '\n' ' ')"
            sleep 0.1
        done
        answers || fail "podman system service did not answer on $SOCKET within 30 s"
    fi
    if ! remote image exists $IMAGE 2>/dev/null; then
        log "importing $IMAGE"
        local tmp
        tmp=$(mktemp -d)
        mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp"
        cp /bin/busybox "$tmp/rootfs/bin/"
        for applet in $(/bin/busybox --list); do
            [ "$applet" = busybox ] || ln -s busybox "$tmp/rootfs/bin/$applet"
        done
        tar -C "$tmp/rootfs" -cf "$tmp/busybox.tar" .
        remote import "$tmp/busybox.tar" $IMAGE >/dev/null 2>"$tmp/err" ||
            fail "podman import failed: $(cat "$tmp/err")"
        rm -rf "$tmp"
    fi
    remote run --rm --network=none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        $IMAGE true >/dev/null 2>"$STATE/podman-run.err" ||
        fail "cannot run a Podman container: $(tr '\n' ' ' <"$STATE/podman-run.err")"
    rm -f "$UNAVAILABLE"
    log "ready: service PID $pid in netns $NETNS, DOCKER_HOST=unix://$SOCKET"
}

down() {
    local pid status=0
    if pid=$(our_pid); then
        remote rm -f --all -t 0 >/dev/null 2>&1 || true
        log "stopping podman system service (PID $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "service (PID $pid) did not stop within 10 s; sending SIGKILL"
            kill -KILL "$pid"
            status=1
        fi
    fi
    # conmon of `podman exec` sessions lingers (--exit-delay 300) after its container is gone;
    # ours are found by their bundle path under our storage root.
    local d
    for d in /proc/[0-9]*; do
        if [ "$(cat "$d/comm" 2>/dev/null)" = conmon ] &&
            tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q -- " -b /var/lib/$NAME/"; then
            kill -TERM "${d#/proc/}" 2>/dev/null
        fi
    done
    rm -f "$PIDFILE" "$SOCKET"
    if [ -e /var/run/netns/$NETNS ]; then
        log "removing netns $NETNS"
        ip netns del $NETNS || status=1
    fi
    return $status
}

ACTION=${1:-}
case "$ACTION" in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
