#!/bin/bash
# CNI ADD and DEL time of pipe against the reference `bridge` plugin, for the same network:
# a veth into an existing bridge, host-local IPAM, a default route. Whole process (exec to
# exit), as a runtime sees it; median of N runs each (default 20). pipe answers host-local
# in process; the "pipe, host-local exec'd" line is pipe with an ipam key it does not read,
# which makes it run the plugin (as the bridge plugin always does).
#
# usage: bench/cni.sh [PIPE_BINARY] [N]     (root; default target/release/pipe)
#
# Everything happens in two namespaces made here (a host and a container), removed at exit;
# the reference plugins come from containernetworking-plugins (/usr/lib/cni).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIPE=$(realpath "${1:-$ROOT/target/release/pipe}")
N=${2:-20}
REF=/usr/lib/cni

if [ "${BENCH_INNER:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "bench/cni.sh: run as root" >&2; exit 1; }
    [ -x "$PIPE" ] || { echo "bench/cni.sh: no $PIPE (cargo build --release)" >&2; exit 1; }
    [ -x $REF/bridge ] || { echo "bench/cni.sh: no $REF/bridge (apt install containernetworking-plugins)" >&2; exit 1; }
    H=pbh$$ C=pbc$$ D=$(mktemp -d /tmp/pipe-cni-bench.XXXXXX)
    trap 'ip netns del $H 2>/dev/null; ip netns del $C 2>/dev/null; rm -rf "$D"' EXIT
    ip netns add $H && ip netns add $C
    ip -n $H link set lo up
    # An existing bridge for both (pipe would otherwise create and remove its own each time).
    ip -n $H link add brbench type bridge && ip -n $H link set brbench up
    mkdir -p "$D/bin" && ln -s "$PIPE" "$D/bin/pipe"
    BENCH_INNER=1 D=$D C=$C nsenter --net=/var/run/netns/$H bash "$0" "$PIPE" "$N"
    exit
fi

export CNI_PATH=$D/bin:$REF CNI_NETNS=/var/run/netns/$C CNI_IFNAME=eth0 CNI_CONTAINERID=bench
export PIPE_STATE_DIR=$D/state
ipam='"ipam": {"type": "host-local", "dataDir": "'$D'/ipam",
  "ranges": [[{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}'
conf_pipe='{"cniVersion": "1.0.0", "name": "benchp", "type": "pipe", "host": "brbench", '$ipam'}'
# An ipam key pipe does not read (the plugin ignores it): pipe runs the host-local plugin.
conf_pipe_exec='{"cniVersion": "1.0.0", "name": "benche", "type": "pipe", "host": "brbench", '${ipam/\"type\": \"host-local\",/\"type\": \"host-local\", \"benchExec\": true,}'}'
conf_bridge='{"cniVersion": "1.0.0", "name": "benchb", "type": "bridge", "bridge": "brbench",
  "isGateway": false, "ipMasq": false, '$ipam'}'

median() { sort -n | awk '{a[NR]=$1} END {m = NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

# time_one VERB BIN CONF -> microseconds on stdout; fails loudly if the plugin fails. Timed
# from spawn to exit with the configuration on a pipe, as a runtime calls a plugin (a shell's
# $(...) and here-string added a fork and a temporary file, a few ms, to every figure).
time_one() {
    python3 "$ROOT/bench/spawn_time.py" "$1" "$2" "$3" || { echo "bench/cni.sh: $1 by $2 failed" >&2; exit 1; }
}

med_ms() { printf '%s\n' "$@" | median | awk '{printf "%.1f", $1/1000}'; }

# round NAME BIN CONF: one ADD and one DEL, checked; appends to the NAME_add/NAME_del arrays
round() {
    local -n add=$1_add del=$1_del
    add+=("$(time_one ADD "$2" "$3")")
    ip -n "$C" -br addr show eth0 | grep -q 10.99.0. || { echo "bench/cni.sh: $1 ADD gave no address" >&2; exit 1; }
    del+=("$(time_one DEL "$2" "$3")")
    ! ip -n "$C" link show eth0 >/dev/null 2>&1 || { echo "bench/cni.sh: $1 DEL left eth0" >&2; exit 1; }
}

echo "# $(uname -r), $(nproc) cores; pipe $PIPE; bridge $(dpkg-query -W -f '${Version}' containernetworking-plugins 2>/dev/null)"
pipe_add=() pipe_del=() bridge_add=() bridge_del=() pexec_add=() pexec_del=()
# Warm the page cache, then alternate them so that all see the same machine load.
round pipe "$D/bin/pipe" "$conf_pipe"; round bridge "$REF/bridge" "$conf_bridge"
round pexec "$D/bin/pipe" "$conf_pipe_exec"
pipe_add=() pipe_del=() bridge_add=() bridge_del=() pexec_add=() pexec_del=()
for ((i = 0; i < N; i++)); do
    round pipe "$D/bin/pipe" "$conf_pipe"
    round bridge "$REF/bridge" "$conf_bridge"
    round pexec "$D/bin/pipe" "$conf_pipe_exec"
done
# The IPAM plugin alone, which both run inside their ADD and DEL.
ipam_add=() ipam_del=()
conf_ipam='{"cniVersion": "1.0.0", "name": "benchi", '$ipam'}'
for ((i = 0; i < N; i++)); do
    ipam_add+=("$(time_one ADD "$REF/host-local" "$conf_ipam")")
    ipam_del+=("$(time_one DEL "$REF/host-local" "$conf_ipam")")
done
printf '%-24s ADD %6s ms   DEL %6s ms   (median of %d, whole process)\n' \
    "host-local alone" "$(med_ms "${ipam_add[@]}")" "$(med_ms "${ipam_del[@]}")" "$N" \
    pipe "$(med_ms "${pipe_add[@]}")" "$(med_ms "${pipe_del[@]}")" "$N" \
    "pipe, host-local exec'd" "$(med_ms "${pexec_add[@]}")" "$(med_ms "${pexec_del[@]}")" "$N" \
    "bridge (reference)" "$(med_ms "${bridge_add[@]}")" "$(med_ms "${bridge_del[@]}")" "$N"
