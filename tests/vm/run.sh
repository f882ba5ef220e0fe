#!/bin/bash
# VM test tier: runs the project's VM tests inside Debian's stock kernel under QEMU (TCG).
#
# The build machine's kernel lacks 802.1Q VLAN, ipvlan, dummy, bonding and bridge VLAN
# filtering. Tests that need them are integration tests named `vm_*` and marked
# `#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]`. This script
#   1. installs the host tools it needs (apt-get, non-interactive) if they are missing;
#   2. downloads Debian's kernel package (the one `linux-image-amd64` depends on) with
#      `apt-get download` and unpacks it with `dpkg-deb -x` into target/vm-cache/ (reused across
#      runs) -- nothing is installed on the machine;
#   3. builds the test binaries and the `pipe` binary statically into target/vm-build/;
#   4. packs a busybox initramfs with iproute2, util-linux unshare/nsenter, ping, the kernel
#      modules and the binaries (at the same absolute paths, so env!("CARGO_BIN_EXE_pipe") works);
#   5. boots ONE VM that runs every test binary with `--ignored vm_ --test-threads=2` and
#      PIPE_IN_VM=1, then powers off;
#   6. reports per binary, the number of tests run and the wall time; exits non-zero if a test
#      failed, the VM timed out or crashed, or the kernel/tools could not be obtained.
#
# Usage (as root, from anywhere): tests/vm/run.sh
# Env (all optional):
#   PIPE_VM_FILTER       libtest filter passed with --ignored (default vm_)
#   PIPE_VM_TIMEOUT      seconds for the whole VM run (default 1500)
#   PIPE_VM_BIN_TIMEOUT  seconds for one test binary inside the VM (default 600)
#   PIPE_VM_SMP / PIPE_VM_MEM   vCPUs (default 2) / MiB (default 1536)
#   PIPE_VM_TEST_THREADS libtest --test-threads inside the VM (default 2)
#   PIPE_VM_TEST_ARGS    extra libtest arguments inside the VM, e.g. "--nocapture" or "--exact"
#   PIPE_VM_CACHE        kernel cache folder (default target/vm-cache)
#   PIPE_VM_TARGET_DIR   cargo target dir for the static build (default target/vm-build)
#   PIPE_VM_KERNEL_PKG   kernel package to use, e.g. linux-image-6.1.0-56-amd64
#   PIPE_VM_BZIMAGE=1    boot the compressed vmlinuz instead of the unpacked vmlinux (PVH entry)
#   PIPE_VM_NO_INSTALL=1 never call apt-get install (fail if a tool is missing)
set -euo pipefail

T_START=$(date +%s%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

FILTER=${PIPE_VM_FILTER:-vm_}
VM_TIMEOUT=${PIPE_VM_TIMEOUT:-1500}
BIN_TIMEOUT=${PIPE_VM_BIN_TIMEOUT:-600}
VM_SMP=${PIPE_VM_SMP:-2}
VM_MEM=${PIPE_VM_MEM:-1536}
TEST_THREADS=${PIPE_VM_TEST_THREADS:-2}
TEST_ARGS=${PIPE_VM_TEST_ARGS:-}
CACHE=${PIPE_VM_CACHE:-$ROOT/target/vm-cache}
BUILD_DIR=${PIPE_VM_TARGET_DIR:-$ROOT/target/vm-build}
TRIPLE=x86_64-unknown-linux-gnu
# Kernel modules loaded in the VM (with their dependencies, found by modprobe on the unpacked
# tree), as "name[:param=value,...]". Missing optional ones only warn.
MODULES=(
    8021q ipvlan dummy:numdummies=0 macvlan macvtap veth bridge
    bonding:max_bonds=0 ifb:numifbs=0 vxlan tun
    sch_tbf sch_htb sch_netem sch_ingress cls_u32 cls_matchall act_mirred act_vlan
    openvswitch
)
REQUIRED_MODULES=(8021q ipvlan dummy macvlan veth bridge)

log() { printf 'vm: %s\n' "$*"; }
die() {
    printf 'vm: FAIL: %s\n' "$*"
    printf 'vm: VM tier FAILED after %s s\n' "$(elapsed "$T_START")"
    exit 1
}
elapsed() { # ns-timestamp -> seconds with one decimal
    local d=$(($(date +%s%N) - $1))
    printf '%d.%d' $((d / 1000000000)) $((d % 1000000000 / 100000000))
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and boots a VM)"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported"

# ---------------------------------------------------------------- 1. host tools
APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
apt_updated=0
apt_update() {
    [ "$apt_updated" = 1 ] && return 0
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null \
        || log "apt-get update failed (continuing with the lists there are)"
    apt_updated=1
}
apt_install() {
    [ "${PIPE_VM_NO_INSTALL:-0}" = 1 ] && die "missing packages: $* (PIPE_VM_NO_INSTALL=1)"
    log "installing host packages: $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" "$@" >/tmp/vm-apt.$$ 2>&1; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" "$@" >/tmp/vm-apt.$$ 2>&1 \
            || { tail -20 /tmp/vm-apt.$$; rm -f /tmp/vm-apt.$$; die "apt-get install $* failed"; }
    fi
    rm -f /tmp/vm-apt.$$
}
is_static() { # ldd fails on static binaries, or says "statically linked" (static-pie)
    local out
    out=$(ldd "$1" 2>&1) || return 0
    case $out in *"statically linked"* | *"not a dynamic executable"*) return 0 ;; esac
    return 1
}

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
{ [ -x /bin/busybox ] && is_static /bin/busybox; } || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v ip >/dev/null && command -v tc >/dev/null && command -v bridge >/dev/null || need+=(iproute2)
command -v depmod >/dev/null && command -v modprobe >/dev/null || need+=(kmod)
command -v unshare >/dev/null && command -v nsenter >/dev/null || need+=(util-linux)
command -v ping >/dev/null || need+=(iputils-ping)
command -v arping >/dev/null || need+=(iputils-arping)
command -v xz >/dev/null || need+=(xz-utils)
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: a Debian host is required"
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
for t in qemu-system-x86_64 cpio ip depmod modprobe; do
    command -v "$t" >/dev/null || die "$t still missing after installing packages"
done
{ [ -x /bin/busybox ] && is_static /bin/busybox; } || die "/bin/busybox is not a static busybox"

# ---------------------------------------------------------------- 2. kernel and modules
mkdir -p "$CACHE"
# leftovers of runs that were killed
find "$CACHE" -mindepth 1 -maxdepth 1 \( -name 'run.*' -o -name 'dl.*' \) -mmin +180 -exec rm -rf {} + || true
newest_cached() { # newest unpacked kernel in the cache, or nothing
    local d
    for d in "$CACHE"/linux-image-*; do [ -e "$d/.complete" ] && echo "$d"; done | sort -V | tail -1
}
resolve_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && k == "" { k = $2 } END { print k }'
}
KPKG=${PIPE_VM_KERNEL_PKG:-}
if [ -z "$KPKG" ]; then
    KPKG=$(resolve_kernel_pkg)
    if [ -z "$KPKG" ]; then apt_update; KPKG=$(resolve_kernel_pkg); fi
fi
KDIR=""
if [ -n "$KPKG" ] && [ -e "$CACHE/$KPKG/.complete" ]; then
    KDIR=$CACHE/$KPKG
    log "kernel: $KPKG (cached in ${KDIR#"$ROOT"/})"
elif [ -n "$KPKG" ]; then
    log "kernel: downloading $KPKG (apt-get download; nothing is installed)"
    dl=$(mktemp -d "$CACHE/dl.XXXXXX")
    chmod 755 "$dl"
    got=0
    for attempt in 1 2; do
        if (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >"$dl/log" 2>&1); then
            got=1
            break
        fi
        [ "$attempt" = 1 ] && apt_update
    done
    if [ "$got" = 1 ]; then
        rm -rf "$dl/x"
        dpkg-deb -x "$dl"/"$KPKG"_*.deb "$dl/x" || die "dpkg-deb -x of $KPKG failed"
        kvs=("$dl"/x/lib/modules/*/)
        kv=$(basename "${kvs[0]}")
        depmod -b "$dl/x" "$kv" || die "depmod on the unpacked $KPKG failed"
        rm -rf "${CACHE:?}/$KPKG"
        mv "$dl/x" "$CACHE/$KPKG"
        touch "$CACHE/$KPKG/.complete"
        for d in "$CACHE"/linux-image-*; do # keep one kernel: the one linux-image-amd64 wants
            [ "$d" = "$CACHE/$KPKG" ] || rm -rf "$d"
        done
        KDIR=$CACHE/$KPKG
        log "kernel: unpacked into ${KDIR#"$ROOT"/} ($(du -sh "$KDIR" | cut -f1))"
    else
        cat "$dl/log"
        log "kernel: apt-get download $KPKG failed"
    fi
    rm -rf "$dl"
fi
if [ -z "$KDIR" ]; then
    KDIR=$(newest_cached)
    [ -n "$KDIR" ] || die "cannot obtain a kernel: package '${KPKG:-?}' (what linux-image-amd64 depends on) could not be resolved or downloaded, and no kernel is cached in $CACHE"
    log "kernel: using the cached $(basename "$KDIR") instead"
fi
KVERS=("$KDIR"/lib/modules/*/)
KVER=$(basename "${KVERS[0]}")
VMLINUZ=$KDIR/boot/vmlinuz-$KVER
[ -r "$VMLINUZ" ] || die "no $VMLINUZ in the unpacked kernel package"
# Under TCG, the bzImage's own xz decompression takes ~8 s of emulated time. The kernel is
# built with CONFIG_PVH, so qemu can boot the uncompressed ELF directly: unpack it once.
extract_vmlinux() { # bzImage out: find the compressed payload by its magic, keep the ELF
    local img=$1 out=$2 magic tool pos
    for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${magic%%:*}
        command -v "$tool" >/dev/null || continue
        # shellcheck disable=SC2013 # byte offsets, one word each
        for pos in $(LC_ALL=C grep -aboP "${magic#*:}" "$img" 2>/dev/null | cut -d: -f1); do
            # the payload is followed by other data: decompressors complain, the ELF is whole
            tail -c +$((pos + 1)) "$img" | "$tool" -dc >"$out.$$" 2>/dev/null
            if elf_complete "$out.$$"; then
                mv "$out.$$" "$out"
                return 0
            fi
        done
    done
    rm -f "$out.$$"
    return 1
}
elf_complete() { # an ELF64 file that reaches the end of its section header table
    local f=$1 shoff shentsize shnum
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || return 1
    shoff=$(od -An -t u8 -j 40 -N 8 "$f" | tr -d ' ')
    shentsize=$(od -An -t u2 -j 58 -N 2 "$f" | tr -d ' ')
    shnum=$(od -An -t u2 -j 60 -N 2 "$f" | tr -d ' ')
    [ "$(stat -c %s "$f")" -ge $((shoff + shentsize * shnum)) ]
}
BOOT_IMAGE=$VMLINUZ
if [ "${PIPE_VM_BZIMAGE:-0}" != 1 ] && grep -qx 'CONFIG_PVH=y' "$KDIR/boot/config-$KVER" 2>/dev/null; then
    if elf_complete "$KDIR/vmlinux" 2>/dev/null || extract_vmlinux "$VMLINUZ" "$KDIR/vmlinux"; then
        BOOT_IMAGE=$KDIR/vmlinux
    else
        log "note: could not unpack vmlinux from $VMLINUZ; booting the bzImage (slower)"
    fi
fi

log "kernel ready after $(elapsed "$T_START") s: $(basename "$BOOT_IMAGE") $KVER"

# Open vSwitch userspace (ovsdb-server, ovs-vswitchd, ovs-vsctl) for the OVS tests, unpacked
# like the kernel: Debian's openvswitch-switch/-common plus libraries a build host may lack.
OVS_PKGS=(openvswitch-switch openvswitch-common libxdp1 libbpf1 libunbound8 libnuma1 libcap-ng0 libevent-2.1-7)
OVS_DIR=$CACHE/openvswitch
if [ ! -e "$OVS_DIR/.complete" ]; then
    log "openvswitch: downloading ${OVS_PKGS[*]} (apt-get download; nothing is installed)"
    dl=$(mktemp -d "$CACHE/dl.XXXXXX")
    chmod 755 "$dl"
    if ! (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "${OVS_PKGS[@]}" >"$dl/log" 2>&1); then
        apt_update
        (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "${OVS_PKGS[@]}" >"$dl/log" 2>&1) \
            || { cat "$dl/log"; die "apt-get download of the Open vSwitch packages failed"; }
    fi
    for d in "$dl"/*.deb; do dpkg-deb -x "$d" "$dl/x" || die "dpkg-deb -x $d failed"; done
    rm -rf "$OVS_DIR"
    mv "$dl/x" "$OVS_DIR"
    touch "$OVS_DIR/.complete"
    rm -rf "$dl"
fi

# ---------------------------------------------------------------- 3. static build
if command -v rustup >/dev/null; then
    rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE" \
        || rustup target add "$TRIPLE" || die "rustup target add $TRIPLE failed"
fi
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || apt_install libc6-dev
export CARGO_TARGET_DIR=$BUILD_DIR
export RUSTFLAGS='-C target-feature=+crt-static'
# smaller binaries and a faster build; panics still report file:line
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
export CARGO_TERM_COLOR=never
mkdir -p "$BUILD_DIR"
T_BUILD=$(date +%s%N)
log "building test binaries statically into ${BUILD_DIR#"$ROOT"/} (cargo test --no-run)"
cargo test --no-run --target "$TRIPLE" --message-format=json-render-diagnostics \
    >"$BUILD_DIR/vm-tests.json" || die "static build of the test binaries failed (cargo test --no-run)"
log "building the pipe binary statically (cargo build)"
cargo build --bins --target "$TRIPLE" --message-format=json-render-diagnostics \
    >"$BUILD_DIR/vm-bins.json" || die "static build of the binaries failed (cargo build)"
log "build took $(elapsed "$T_BUILD") s"
artifact_executables() { # file.json test|bin: executables from cargo's JSON messages
    local profile_test=true
    [ "$2" = bin ] && profile_test=false
    grep '"reason":"compiler-artifact"' "$1" \
        | grep -E "\"profile\":\\{[^}]*\"test\":$profile_test" \
        | grep -v '"executable":null' \
        | sed -E 's/.*"executable":"([^"]*)".*/\1/' | sort -u || true
}
mapfile -t TEST_BINS < <(artifact_executables "$BUILD_DIR/vm-tests.json" test)
mapfile -t BINS < <(artifact_executables "$BUILD_DIR/vm-bins.json" bin)
[ ${#BINS[@]} -gt 0 ] || die "cargo build produced no binary"

# Which binaries have VM tests (listing runs on the host: the binaries are static).
VM_BINS=()
EXPECTED=0
for b in "${TEST_BINS[@]}"; do
    # shellcheck disable=SC2086 # TEST_ARGS holds separate words (e.g. --exact)
    n=$("$b" --list --ignored "$FILTER" $TEST_ARGS 2>/dev/null </dev/null | grep -c ': test$' || true)
    if [ "$n" -gt 0 ]; then
        VM_BINS+=("$b")
        EXPECTED=$((EXPECTED + n))
        log "  $(basename "$b"): $n VM test(s)"
    fi
done
[ ${#VM_BINS[@]} -gt 0 ] || die "no test binary has ignored tests matching '$FILTER'"

# ---------------------------------------------------------------- 4. initramfs
T_INITRD=$(date +%s%N)
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/usr/{bin,sbin,lib,lib64} "$R"/{proc,sys,dev,tmp,run,etc,root,var/tmp,mnt}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
ln -s ../run "$R/var/run"

# copy a program and (if dynamic) the libraries ldd reports, keeping their paths
copy_with_libs() {
    local src=$1 dst=$2 lib
    mkdir -p "$R$(dirname "$dst")"
    cp -L "$src" "$R$dst"
    is_static "$src" && return 0
    { ldd "$src" | grep -oE '/[^ ]+' || true; } | while read -r lib; do
        # libraries of unpacked packages go where the VM's loader looks
        local to=${lib#"${OVS_DIR:-/nonexistent}"}
        [ -e "$R$to" ] && continue
        mkdir -p "$R$(dirname "$to")"
        cp -L "$lib" "$R$to"
    done
}
copy_tool() { # name destdir [required]
    local p
    p=$(command -v "$1" 2>/dev/null) || { [ "${3:-}" = required ] && die "host tool $1 missing"; return 0; }
    copy_with_libs "$p" "$2/$1"
}
cp /bin/busybox "$R/usr/bin/busybox"
# iproute2's ip/tc/bridge (busybox's ip can't do vlan/ipvlan/netns), a real /bin/sh (Debian's
# busybox sh runs its own `ip` applet even when PATH has iproute2's), util-linux, iputils.
copy_tool ip /usr/sbin required
copy_tool tc /usr/sbin
copy_tool bridge /usr/sbin
copy_tool dash /usr/bin
copy_tool bash /usr/bin
copy_tool unshare /usr/bin
copy_tool nsenter /usr/bin
copy_tool ping /usr/bin
copy_tool arping /usr/bin
if [ -e "$R/usr/bin/dash" ]; then ln -s dash "$R/usr/bin/sh"; fi
for d in /etc/iproute2 /usr/share/iproute2 /usr/lib/iproute2; do
    if [ -d "$d" ]; then mkdir -p "$R$(dirname "$d")" && cp -a "$d" "$R$d"; fi
done
# every other command: a busybox applet, never shadowing a real tool
for a in $(/bin/busybox --list); do
    case $a in init | linuxrc | busybox) continue ;; esac
    [ -e "$R/usr/bin/$a" ] || [ -e "$R/usr/sbin/$a" ] || ln -s busybox "$R/usr/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"

# modules, in dependency order, with their parameters
MODDIR=$KDIR/lib/modules/$KVER
: >"$R/etc/vm-modules"
declare -A seen=()
for spec in "${MODULES[@]}"; do
    m=${spec%%:*}
    params=""
    [ "$spec" != "$m" ] && params=${spec#*:} && params=${params//,/ }
    if ! deps=$(modprobe -d "$KDIR" -S "$KVER" --show-depends "$m" 2>&1); then
        for r in "${REQUIRED_MODULES[@]}"; do
            [ "$r" = "$m" ] && die "module $m not in $KPKG: $deps"
        done
        log "module $m not available (optional): $deps"
        continue
    fi
    while read -r kind ko _; do
        [ "$kind" = insmod ] || continue # "builtin NAME": nothing to load
        # an accelerated alternative (softdep of libcrc32c, for openvswitch) that needs SSE4.2,
        # which qemu's TCG CPU lacks: crc32c_generic, loaded next, does the work
        case $ko in */crc32c-intel.ko*) continue ;; esac
        [ -n "${seen[$ko]:-}" ] && continue
        seen[$ko]=1
        rel=${ko#"$MODDIR"/}
        dst=/lib/modules/$KVER/${rel%.ko*}.ko
        mkdir -p "$R$(dirname "$dst")"
        case $ko in
            *.ko) cp "$ko" "$R$dst" ;;
            *.ko.xz) xz -dc "$ko" >"$R$dst" ;;
            *.ko.zst) zstd -qdc "$ko" >"$R$dst" ;;
            *.ko.gz) gzip -dc "$ko" >"$R$dst" ;;
            *) die "unknown module format $ko" ;;
        esac
        p=""
        [ "$(basename "$dst" .ko)" = "$m" ] && p=$params
        echo "$dst $p" >>"$R/etc/vm-modules"
    done <<<"$deps"
done

# Open vSwitch: the daemons and ovs-vsctl, with libraries from the unpacked packages first
OVS_LIBS=$OVS_DIR/usr/lib/x86_64-linux-gnu:$OVS_DIR/lib/x86_64-linux-gnu
for t in usr/sbin/ovsdb-server usr/lib/openvswitch-switch/ovs-vswitchd usr/bin/ovsdb-tool \
    usr/bin/ovs-vsctl usr/bin/ovs-appctl usr/bin/ovs-ofctl; do
    [ -x "$OVS_DIR/$t" ] || die "$t missing from the unpacked Open vSwitch packages"
    LD_LIBRARY_PATH=$OVS_LIBS copy_with_libs "$OVS_DIR/$t" "/usr/sbin/$(basename "$t")"
done
mkdir -p "$R/usr/share/openvswitch"
cp "$OVS_DIR/usr/share/openvswitch/vswitch.ovsschema" "$R/usr/share/openvswitch/"

# binaries at their absolute host paths (CARGO_BIN_EXE_* are compile-time absolute paths)
for b in "${BINS[@]}" "${VM_BINS[@]}"; do copy_with_libs "$b" "$b"; done
printf '%s\n' "${VM_BINS[@]}" >"$R/etc/vm-tests"
mkdir -p "$R$ROOT"
# tmpfs on /run and /tmp, unless that would hide the project or its binaries
TMPFS_MOUNTS=""
for d in /run /tmp; do
    case "$ROOT/ $BUILD_DIR/" in "$d"/* | *" $d"/*) log "note: no tmpfs on $d in the VM (the project lives there)" ;; *) TMPFS_MOUNTS+=" $d" ;; esac
done
{
    printf 'PROJECT_ROOT=%q\n' "$ROOT"
    printf 'TEST_FILTER=%q\n' "$FILTER"
    printf 'TEST_THREADS=%q\n' "$TEST_THREADS"
    printf 'PER_BINARY_TIMEOUT=%q\n' "$BIN_TIMEOUT"
    printf 'TMPFS_MOUNTS=%q\n' "$TMPFS_MOUNTS"
    printf 'TEST_ARGS=%q\n' "$TEST_ARGS"
} >"$R/etc/vm.conf"
cp "$ROOT/tests/vm/init.sh" "$R/init"
chmod 755 "$R/init"
[ -e "$R/usr/bin/sh" ] || ln -s busybox "$R/usr/bin/sh"
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) >"$WORK/initrd.cpio"
log "initramfs: $(du -h "$WORK/initrd.cpio" | cut -f1), $(wc -l <"$R/etc/vm-modules") modules, ${#VM_BINS[@]} test binaries, $EXPECTED VM tests (packed in $(elapsed "$T_INITRD") s)"

# ---------------------------------------------------------------- 5. boot
CONSOLE=$CACHE/console.log
log "booting $KVER under qemu TCG (smp=$VM_SMP, mem=${VM_MEM}M, timeout ${VM_TIMEOUT}s); console follows"
echo "---------------------------------------------------------------- VM console"
T_VM=$(date +%s%N)
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -smp "$VM_SMP" -m "$VM_MEM" \
    -nographic -no-reboot -nodefaults -display none -serial stdio \
    -kernel "$BOOT_IMAGE" -initrd "$WORK/initrd.cpio" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off" \
    </dev/null 2>&1 | sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[A-Za-z]//g' | tee "$CONSOLE"
QRC=${PIPESTATUS[0]}
set -e
VM_SECS=$(elapsed "$T_VM")
echo "---------------------------------------------------------------- end of VM console"

# ---------------------------------------------------------------- 6. report
failed=0
reasons=()
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    failed=1
    reasons+=("the VM timed out after ${VM_TIMEOUT}s")
elif [ "$QRC" != 0 ]; then
    failed=1
    reasons+=("qemu exited with $QRC")
fi
grep -q '^VMTEST-BOOTED' "$CONSOLE" || { failed=1; reasons+=("the VM did not boot to /init"); }
grep -q '^VMTEST-DONE' "$CONSOLE" || { failed=1; reasons+=("the VM did not finish its test list"); }
if grep -q '^VMTEST-WARN insmod' "$CONSOLE"; then log "warning: some modules failed to load (see console)"; fi
log "per-binary results:"
for b in "${VM_BINS[@]}"; do
    rc=$(sed -n "s|^VMTEST-END $b rc=\([0-9]*\)\$|\1|p" "$CONSOLE" | tail -1)
    if [ -z "$rc" ]; then
        rc="none (did not finish)"
        failed=1
    elif [ "$rc" = 143 ] || [ "$rc" = 137 ]; then
        rc="$rc (killed: over PIPE_VM_BIN_TIMEOUT=${BIN_TIMEOUT}s)"
        failed=1
    elif [ "$rc" != 0 ]; then
        failed=1
    fi
    log "  VMTEST-RESULT $(basename "$b") rc=$rc"
    [ "$rc" = 0 ] || reasons+=("$(basename "$b") rc=$rc")
done
# libtest: "test result: ok. 3 passed; 0 failed; 5 ignored; 0 measured; 12 filtered out; ..."
read -r PASSED FAILED < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed;.*/\1 \2/p' "$CONSOLE" \
    | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
RAN=$((PASSED + FAILED))
[ "$FAILED" = 0 ] || reasons+=("$FAILED test(s) failed")
if [ "$RAN" != "$EXPECTED" ]; then
    failed=1
    reasons+=("$RAN of $EXPECTED VM tests reported a result")
fi
log "kernel $KVER ($(basename "$KDIR"), booted as $(basename "$BOOT_IMAGE")), qemu TCG smp=$VM_SMP"
log "VM wall time (boot to power-off): $VM_SECS s; whole tier: $(elapsed "$T_START") s"
log "tests run inside the VM: $RAN ($PASSED passed, $FAILED failed) of $EXPECTED expected, in ${#VM_BINS[@]} binaries"
if [ "$failed" != 0 ]; then
    log "VM tier FAILED: $(printf '%s; ' "${reasons[@]}" | sed 's/; $//')"
    exit 1
fi
log "VM tier OK"
