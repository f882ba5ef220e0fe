#!/bin/sh
# /init of the VM test tier's initramfs (see tests/vm/run.sh, which writes /etc/vm.conf,
# /etc/vm-modules and /etc/vm-tests next to it). Runs as PID 1 under Debian's stock kernel:
# mounts the pseudo file systems, loads the modules, runs every test binary with the VM filter
# and PIPE_IN_VM=1, prints a marker line per binary, and powers the VM off.
# Markers read by run.sh: "VMTEST-END <binary> rc=<code>" and "VMTEST-DONE".
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
[ -d /sys/fs/cgroup ] && mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

# shellcheck source=/dev/null # written by run.sh
. /etc/vm.conf
for d in $TMPFS_MOUNTS; do mount -t tmpfs tmpfs "$d"; done
chmod 1777 /tmp
mkdir -p /run/netns /run/lock
hostname pipe-vm

echo

echo "VMTEST-BOOTED kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB, up $(cut -d' ' -f1 /proc/uptime) s"
while read -r ko args; do
    # shellcheck disable=SC2086 # module parameters are separate words
    insmod "$ko" $args </dev/null || echo "VMTEST-WARN insmod $ko failed"
done </etc/vm-modules
ip link set lo up
echo "VMTEST-MODULES loaded at $(cut -d' ' -f1 /proc/uptime) s"

export PIPE_IN_VM=1 RUST_BACKTRACE=1
cd "$PROJECT_ROOT" || echo "VMTEST-WARN cannot cd to $PROJECT_ROOT"
while read -r bin; do
    echo "VMTEST-BEGIN $bin"
    # shellcheck disable=SC2086 # TEST_ARGS holds separate words
    timeout -k 5 "$PER_BINARY_TIMEOUT" "$bin" --ignored "$TEST_FILTER" \
        --test-threads="$TEST_THREADS" $TEST_ARGS </dev/null 2>&1
    echo "VMTEST-END $bin rc=$?"
done </etc/vm-tests
echo "VMTEST-DONE"
sync
poweroff -f
# poweroff should not return; if it does, make the kernel reboot (qemu -no-reboot then exits)
echo b >/proc/sysrq-trigger
