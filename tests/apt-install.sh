#!/bin/bash
# apt-get install PACKAGES for the tests: non-interactive, no recommends, and WITHOUT starting any
# service they ship. Usage: tests/apt-install.sh LOGFILE PACKAGE...
#
# Why: on a machine with systemd, installing docker.io starts dockerd in the root network
# namespace with default options, which rewrites the host firewall, turns on ip_forward and takes
# /var/run/docker.sock; the tests run their own dockerd inside netns `dockerhost` instead
# (tests/docker/up.sh). A policy-rc.d that denies every start (the Debian mechanism that
# invoke-rc.d and deb-systemd-invoke obey) is in place during the install, and the units it
# enabled are disabled again, so nothing starts at the next boot either.
#
# A stale package index (404s on a fresh machine) is refreshed once and the install retried.
set -uo pipefail

log=$1
shift
export DEBIAN_FRONTEND=noninteractive
opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)

policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e $policy ]; then
    printf '#!/bin/sh\n# temporary, tests/apt-install.sh: start no service\nexit 101\n' >$policy
    chmod +x $policy
    ours=1
fi
cleanup() { [ -n "$ours" ] && rm -f $policy; }
trap cleanup EXIT

units=(docker.service docker.socket containerd.service podman.service podman.socket)
enabled_before=()
if [ -d /run/systemd/system ]; then
    for unit in "${units[@]}"; do
        systemctl is-enabled --quiet "$unit" 2>/dev/null && enabled_before+=("$unit")
    done
fi

rc=0
if ! apt-get install "${opts[@]}" "$@" >>"$log" 2>&1; then
    apt-get -q -o DPkg::Lock::Timeout=600 update >>"$log" 2>&1
    apt-get install "${opts[@]}" "$@" >>"$log" 2>&1 || rc=$?
fi

# Units this install enabled for the next boot (never ones enabled before): the tests start
# what they need themselves.
if [ -d /run/systemd/system ]; then
    for unit in "${units[@]}"; do
        [[ " ${enabled_before[*]} " == *" $unit "* ]] && continue
        if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl disable --quiet "$unit" >>"$log" 2>&1 || true
        fi
    done
fi

if [ $rc -ne 0 ]; then
    grep -E '^(E|W):' "$log" | tail -n 3
fi
exit $rc
