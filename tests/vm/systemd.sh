#!/bin/bash
# The systemd tier: pipe's Debian package and pipe-watch.service under a REAL systemd.
#
# This machine's PID 1 is not systemd, so the test boots a VM whose PID 1 is Debian's systemd:
#   1. installs the host tools it needs if missing (tests/apt-install.sh: starts no service):
#      qemu-system-x86, mmdebstrap, e2fsprogs;
#   2. builds (once, then cached in target/vm-cache/) a Debian bookworm root file system with
#      mmdebstrap from Debian's packages: minbase + systemd-sysv, udev, linux-image-amd64 (the
#      kernel and initramfs the VM boots), docker.io, iproute2, busybox-static;
#   3. builds pipe (debug) and its .deb (contrib/deb/build.sh), copies it and test.sh into a
#      copy of that root, makes an ext4 image of it (mke2fs -d; nothing is mounted on the host);
#   4. boots it under qemu (TCG): systemd starts docker.service, then pipe-systemd-test.service,
#      which runs test.sh (dpkg -i, systemctl start/stop/restart, docker restart, SIGKILL,
#      purge) and powers the VM off;
#   5. prints the console and exits non-zero unless test.sh printed "SDTEST-RESULT pass".
# Measured on the 2-core machines: the root file system takes ~2-4 min to make the first time
# (download + unpack), then boot to power-off ~1-2 min under TCG.
#
# Usage (as root): tests/vm/systemd.sh      Env: PIPE_VM_CACHE (default target/vm-cache),
# PIPE_SYSTEMD_TIMEOUT (seconds, default 900), PIPE_VM_NO_INSTALL=1 (never run apt-get).
set -euo pipefail

T_START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CACHE=${PIPE_VM_CACHE:-$ROOT/target/vm-cache}
TIMEOUT=${PIPE_SYSTEMD_TIMEOUT:-900}
SUITE=bookworm
INCLUDE=systemd-sysv,udev,linux-image-amd64,docker.io,iproute2,busybox-static,kmod
log() { printf 'systemd-vm: %s\n' "$*"; }
die() {
    printf 'systemd-vm: FAIL: %s\n' "$*"
    exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap, qemu)"

# ---------------------------------------------------------------- 1. host tools
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
    [ "${PIPE_VM_NO_INSTALL:-0}" = 1 ] && die "missing ${need[*]} (PIPE_VM_NO_INSTALL=1)"
    log "installing ${need[*]}"
    mkdir -p "$CACHE"
    tests/apt-install.sh "$CACHE/systemd-apt.log" "${need[@]}" || die "apt-get install ${need[*]} failed (log: $CACHE/systemd-apt.log)"
fi

# ---------------------------------------------------------------- 2. the root file system
mkdir -p "$CACHE"
key=$(printf '%s %s' "$SUITE" "$INCLUDE" | md5sum | cut -c1-12)
TARBALL=$CACHE/systemd-rootfs-$key.tar
if [ ! -f "$TARBALL" ] || [ ! -s "$TARBALL" ]; then
    log "making a Debian $SUITE root file system with mmdebstrap (once; cached as ${TARBALL#"$ROOT"/})"
    t=$(date +%s)
    rm -rf "$CACHE"/systemd-rootfs-*.tar
    # mmdebstrap picks the output format from the name: it must end in .tar
    partial=$CACHE/systemd-rootfs-$key.partial.tar
    mmdebstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$partial" >"$CACHE/systemd-mmdebstrap.log" 2>&1 ||
        { tail -20 "$CACHE/systemd-mmdebstrap.log"; rm -rf "$partial"; die "mmdebstrap failed (log: $CACHE/systemd-mmdebstrap.log)"; }
    mv "$partial" "$TARBALL"
    log "root file system: $(du -h "$TARBALL" | cut -f1) in $(($(date +%s) - t)) s"
fi

# ---------------------------------------------------------------- 3. pipe, its package, the image
log "building pipe and its .deb"
cargo build --bin pipe >&2 || die "cargo build failed"
WORK=$(mktemp -d "$CACHE/systemd-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEB=$(contrib/deb/build.sh --fast --binary "$ROOT/target/debug/pipe" --out "$WORK") || die "contrib/deb/build.sh failed"
R=$WORK/root
mkdir "$R"
tar -C "$R" -xf "$TARBALL"
cp "$DEB" "$R/root/pipe.deb"
install -m755 tests/vm/systemd/test.sh "$R/usr/local/sbin/pipe-systemd-test"
install -m644 tests/vm/systemd/pipe-systemd-test.service "$R/etc/systemd/system/"
ln -s ../pipe-systemd-test.service "$R/etc/systemd/system/multi-user.target.wants/"
echo pipe-vm >"$R/etc/hostname"
# The VM has no network: dockerd without iptables rules or docker0 (containers use --net=none).
mkdir -p "$R/etc/docker"
echo '{"iptables": false, "ip6tables": false, "bridge": "none"}' >"$R/etc/docker/daemon.json"
# No login prompt on the console, and no waiting for a network that does not exist.
rm -f "$R"/etc/systemd/system/getty.target.wants/* "$R"/etc/systemd/system/*.wants/systemd-networkd-wait-online.service
KERNEL=$(find "$R/boot" -name 'vmlinuz-*' | sort -V | tail -1)
INITRD=$(find "$R/boot" -name 'initrd.img-*' | sort -V | tail -1)
[ -n "$KERNEL" ] && [ -n "$INITRD" ] || die "no kernel or initramfs in the root file system"
cp "$KERNEL" "$INITRD" "$WORK/"
mke2fs -q -t ext4 -L root -d "$R" "$WORK/root.img" 3G || die "mke2fs -d failed"
rm -rf "$R"

# ---------------------------------------------------------------- 4. boot
CONSOLE=$CACHE/systemd-console.log
log "booting systemd under qemu TCG (timeout ${TIMEOUT}s); console follows"
echo "---------------------------------------------------------------- VM console"
T_VM=$(date +%s)
set +e
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -smp 2 -m 2048 \
    -nographic -no-reboot -nodefaults -display none -serial stdio \
    -kernel "$WORK/$(basename "$KERNEL")" -initrd "$WORK/$(basename "$INITRD")" \
    -drive file="$WORK/root.img",format=raw,if=virtio \
    -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off systemd.show_status=0 net.ifnames=0 apparmor=0" \
    </dev/null 2>&1 | sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' | tee "$CONSOLE"
QRC=${PIPESTATUS[0]}
set -e
echo "---------------------------------------------------------------- end of VM console"
log "VM: boot to power-off $(($(date +%s) - T_VM)) s; whole tier $(($(date +%s) - T_START)) s"
[ "$QRC" = 124 ] && die "the VM timed out after ${TIMEOUT}s"
# The unit's output reaches the console as "[ uptime] pipe-systemd-test[PID]: LINE".
grep -q 'SDTEST-RESULT pass' "$CONSOLE" || die "$(grep -o 'SDTEST-RESULT.*' "$CONSOLE" || echo "the test did not finish (qemu exit $QRC)")"
log "unit start-to-ready: $(sed -n 's/.*SDTEST START-TO-READY-MS //p' "$CONSOLE") ms (under TCG emulation)"
log "systemd tier OK"
