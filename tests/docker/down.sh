#!/bin/bash
# Stop the private Docker Engine started by tests/docker/up.sh and remove its network namespace.
#
# Stops exactly the dockerd PID that up.sh started (read from its pidfile, checked against the
# process's name and command line so a reused PID is never signalled), after removing the test
# containers left in that private daemon. Then removes the `dockerhost` netns, and with it any
# bridge a test created there; then stops Podman's service (tests/docker/podman.sh down). Idempotent: with nothing running it does nothing and succeeds.
#
# Usage (as root): tests/docker/down.sh
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NETNS=dockerhost
NAME=pipe-test-docker
EXEC_ROOT=/run/$NAME
PIDFILE=/run/$NAME.pid
SOCKET=/var/run/docker.sock
STATE=$ROOT/target/docker

log() { printf 'docker-down: %s\n' "$*"; }
# Alive and not a zombie (a zombie's PID stays until its parent, maybe PID 1, reaps it).
alive() { [ -e "/proc/$1" ] && [ "$(sed -E 's/^.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
status=0

pid=
for f in "$PIDFILE" "$STATE/dockerd.pid"; do
    p=$(cat "$f" 2>/dev/null) || continue
    [[ $p =~ ^[0-9]+$ ]] || continue
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = dockerd ] || continue
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "--exec-root $EXEC_ROOT" || continue
    pid=$p
    break
done

if [ -n "$pid" ]; then
    # Containers first: a daemon with nothing to stop exits at once.
    ids=$(DOCKER_HOST=unix://$SOCKET timeout 20 docker ps -aq 2>/dev/null)
    if [ -n "$ids" ]; then
        log "removing container(s) left in the test daemon: $(DOCKER_HOST=unix://$SOCKET timeout 20 docker ps -a --format '{{.Names}} ({{.Status}})' 2>/dev/null | tr '\n' ' ')"
        # shellcheck disable=SC2086
        DOCKER_HOST=unix://$SOCKET timeout 60 docker rm -f $ids >/dev/null 2>&1 || true
    fi
    log "stopping dockerd (PID $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do # up to 30 s
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "dockerd (PID $pid) did not stop within 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
        status=1
        # Its managed containerd outlives a SIGKILL; it is ours too: find it by its config path.
        for d in /proc/[0-9]*; do
            if tr '\0' ' ' <"$d/cmdline" 2>/dev/null |
                grep -q -- "^containerd --config $EXEC_ROOT/containerd/"; then
                log "stopping its containerd (PID ${d#/proc/})"
                kill -TERM "${d#/proc/}" 2>/dev/null
            fi
        done
    fi
else
    log "no dockerd of ours is running"
fi
rm -f "$PIDFILE" "$STATE/dockerd.pid"

if [ -e /var/run/netns/$NETNS ]; then
    log "removing netns $NETNS"
    ip netns del $NETNS || status=1
fi
"$ROOT/tests/docker/podman.sh" down || status=1
exit $status
