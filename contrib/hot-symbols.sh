#!/bin/bash
# Write contrib/hot-symbols.txt: the functions one attach runs (a veth into a bridge and a
# macvlan, each by PID, and a CNI ADD of a veth), for the linker to place side by side at the
# start of .text (`--symbol-ordering-file`, used by contrib/deb/build.sh). An attach then
# faults in about 15 windows of code instead of about 50 scattered over 6 MB
# (docs/performance.md).
#
#   contrib/hot-symbols.sh BIN       BIN: a release build of pipe (contrib/deb/build.sh gives one)
#
# Run it again when the list goes stale (build.sh prints how many of its functions the
# binary still has: a new Rust toolchain or new dependency versions rename them). Needs
# root and valgrind (callgrind counts every function the attach executes). Everything
# happens in namespaces made here and removed at exit; the root namespace is not touched.
set -euo pipefail
export LC_ALL=C # one sort order here and in build.sh (comm needs it)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(realpath "${1:?usage: contrib/hot-symbols.sh BIN}")
OUT=$ROOT/contrib/hot-symbols.txt
die() { echo "hot-symbols.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
command -v valgrind >/dev/null || die "valgrind not found (apt install valgrind)"
[ -x "$BIN" ] || die "$BIN is not an executable"

H=hs-host-$$ L=hs-lan-$$ G=hs-cni-$$ W=$(mktemp -d /tmp/pipe-hot-symbols.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$H" 2>/dev/null || true
    ip netns del "$L" 2>/dev/null || true
    ip netns del "$G" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$H" && ip netns add "$L"
ip -n "$H" link set lo up
ip -n "$H" link add hsbr0 type bridge && ip -n "$H" addr add 10.66.0.1/16 dev hsbr0 && ip -n "$H" link set hsbr0 up
ip -n "$H" link add phys0 type veth peer name lan0 netns "$L"
ip -n "$H" link set phys0 up && ip -n "$L" link set lan0 up && ip -n "$L" addr add 10.67.0.1/16 dev lan0

# A stand-in container (its PID in C): a process in a fresh network namespace.
container() {
    unshare --net sleep 300 </dev/null >/dev/null 2>&1 &
    C=$!
    PIDS+=("$C")
    local own
    own=$(readlink /proc/self/ns/net)
    for _ in $(seq 200); do
        [ "$(readlink "/proc/$C/ns/net" 2>/dev/null)" != "$own" ] && [ "$(cat "/proc/$C/comm" 2>/dev/null)" = sleep ] && return
        sleep 0.01
    done
    die "the stand-in container did not start"
}
profile() { # NAME HOST_IF ADDR
    container
    PIPE_STATE_DIR=$W/state nsenter --net=/var/run/netns/"$H" valgrind -q --tool=callgrind \
        --demangle=no --callgrind-out-file="$W/$1.out" "$BIN" --no-netns-link "$2" "$C" "$3" >/dev/null
}
profile bridge hsbr0 10.66.1.1/16@10.66.0.1
profile macvlan phys0 10.67.1.1/16@10.67.0.1
# A CNI ADD (host-local answered in process) into the same bridge, as a runtime makes it.
ip netns add "$G"
CNI_COMMAND=ADD CNI_CONTAINERID=hot-symbols CNI_NETNS=/var/run/netns/$G CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni PIPE_STATE_DIR=$W/state nsenter --net=/var/run/netns/"$H" \
    valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$W/cni.out" "$BIN" >/dev/null <<EOF
{"cniVersion": "1.0.0", "name": "hot", "type": "pipe", "host": "hsbr0",
 "ipam": {"type": "host-local", "dataDir": "$W/ipam", "ranges": [[{"subnet": "10.68.0.0/24"}]]}}
EOF

# Every function named in the profiles that is a function of the binary, sorted (stable diffs).
sed -n 's/^c\{0,1\}fn=([0-9]*) \(.*\)$/\1/p' "$W"/*.out | sort -u >"$W/ran"
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$W/text"
comm -12 "$W/ran" "$W/text" >"$OUT"
echo "hot-symbols.sh: $(wc -l <"$OUT") functions written to $OUT" >&2
