#!/bin/bash
# Runs INSIDE the systemd VM (tests/vm/systemd.sh), as pipe-systemd-test.service, with Debian's
# systemd as PID 1 and a Docker Engine (docker.service). Exercises the Debian package and
# pipe-watch.service for real; prints "SDTEST ..." lines on the console, ending with
# "SDTEST-RESULT pass" or "SDTEST-RESULT fail: REASON". Its unit powers the VM off afterwards.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "SDTEST $*"; }
fail() {
    say "FAILED: $*"
    echo "---- journalctl -u pipe-watch"
    journalctl -u pipe-watch --no-pager -o short-monotonic | tail -40
    echo "SDTEST-RESULT fail: $*"
    exit 1
}
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
prop() { systemctl show -p "$1" --value pipe-watch.service; }
# wait_for SECONDS COMMAND...: poll every 0.1 s
wait_for() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.1
    done
}
web_pid() { docker inspect -f '{{.State.Pid}}' web; }
# eth1 of container web exists, is up and has the address of the attachments file
web_attached() {
    local pid
    pid=$(web_pid) && [ "$pid" != 0 ] &&
        nsenter -t "$pid" -n ip -br addr show dev eth1 2>/dev/null | grep -q '10\.9\.0\.2/24'
}

say "booted: $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2), up $(cut -d' ' -f1 /proc/uptime) s"
say "systemd reached this unit at $(($(systemctl show -p ActiveEnterTimestampMonotonic --value sysinit.target) / 1000)) ms (sysinit.target), docker.service $(systemctl is-active docker.service)"
wait_for 180 docker info >/dev/null 2>&1 || fail "docker.service did not answer within 180 s"
say "docker: $(docker version -f '{{.Server.Version}}') answering at $(cut -d' ' -f1 /proc/uptime) s"

# An image from the static busybox (no registry here).
img=$(mktemp -d)
mkdir -p "$img/bin" && cp /bin/busybox "$img/bin/" && for a in sh sleep ip; do ln -s busybox "$img/bin/$a"; done
tar -C "$img" -cf - . | docker import - local/busybox:latest >/dev/null || fail "docker import"

# 1. The package, installed by dpkg under systemd.
dpkg -i /root/pipe.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail "dpkg -i pipe.deb"; }
say "dpkg -i: $(dpkg-query -W -f='${Package} ${Version} ${Status}' pipe)"
systemctl cat pipe-watch.service >/dev/null || fail "systemd does not see pipe-watch.service after dpkg -i"
[ "$(systemctl is-enabled pipe-watch.service)" = disabled ] || fail "the package enabled the unit"
# (Only our unit's lines: verify also loads docker.service & co., which have warnings of their own.)
verify=$(systemd-analyze verify --man=no /lib/systemd/system/pipe-watch.service 2>&1)
if grep -q 'pipe-watch' <<<"$verify"; then fail "systemd-analyze verify: $verify"; fi
say "systemd-analyze verify: no complaint about pipe-watch.service"
say "systemd-analyze security: $(systemd-analyze security pipe-watch.service 2>/dev/null | tail -1)"
[ -e /usr/share/man/man1/pipe-watch.1.gz ] || fail "no pipe-watch(1)"

# 2. A container and an attachments file.
docker run -d --net=none --name web local/busybox sleep 100000 >/dev/null || fail "docker run"
cat >/etc/pipe/attachments.toml <<'TOML'
[[attach]]
container = "web"
host = "br0"
addr = "10.9.0.2/24"
TOML

# 3. Start: systemctl start returns when pipe sent READY=1 (after the catch-up).
t=$(now)
systemctl start pipe-watch.service || fail "systemctl start pipe-watch"
start_ms=$(ms "$t")
[ "$(prop ActiveState)" = active ] || fail "not active after start: $(prop ActiveState)"
a=$(prop ExecMainStartTimestampMonotonic)
b=$(prop ActiveEnterTimestampMonotonic)
ready_ms=$(((b - a) / 1000))
web_attached || fail "eth1 of web not attached once the unit was ready (READY=1 came before the catch-up)"
say "start: active, web eth1 attached; exec-to-READY ${ready_ms} ms (systemd's timestamps), systemctl start took ${start_ms} ms"
say "START-TO-READY-MS $ready_ms"
pid=$(prop MainPID)
bnd=$(awk '/^CapBnd/ {print $2}' "/proc/$pid/status")
# CAP_DAC_OVERRIDE 1, FOWNER 3, KILL 5, NET_ADMIN 12, NET_RAW 13, SYS_PTRACE 19, SYS_ADMIN 21
[ "$bnd" = 000000000028302a ] || fail "CapBnd of pipe watch is $bnd, not the unit's set (000000000028302a)"
say "capabilities: CapBnd=$bnd (NET_ADMIN SYS_ADMIN SYS_PTRACE NET_RAW DAC_OVERRIDE FOWNER KILL)"
ls /run/netns/ >/dev/null || fail "/run/netns missing"

# 4. The container restarts: the running service re-attaches it.
t=$(now)
docker restart -t 0 web >/dev/null || fail "docker restart web"
wait_for 30 web_attached || fail "web not re-attached within 30 s of docker restart"
say "container restart: web eth1 re-attached by the service $(ms "$t") ms after docker restart began"

# 5. The service restarts on failure (SIGKILL), and catches up on what happened while it was down.
systemctl stop pipe-watch.service || fail "systemctl stop"
docker restart -t 0 web >/dev/null || fail "docker restart web (service stopped)"
web_attached && fail "eth1 present without the service: the test cannot tell re-attachment apart"
systemctl start pipe-watch.service || fail "systemctl start (2)"
web_attached || fail "the restarted service did not catch up on web (started while it was stopped)"
say "service restart: caught up on web, which restarted while the service was stopped"
old=$(prop MainPID)
kill -KILL "$old"
wait_for 30 sh -c '[ "$(systemctl show -p NRestarts --value pipe-watch)" -ge 1 ] && [ "$(systemctl is-active pipe-watch)" = active ]' ||
    fail "not restarted after SIGKILL: $(prop ActiveState)/$(prop SubState), NRestarts=$(prop NRestarts)"
new=$(prop MainPID)
[ "$new" != "$old" ] || fail "same MainPID after restart"
docker restart -t 0 web >/dev/null || fail "docker restart web (3)"
wait_for 30 web_attached || fail "web not re-attached by the service restarted after SIGKILL"
say "restart on failure: SIGKILL of $old, back as $new (NRestarts=$(prop NRestarts)), web re-attached after another docker restart"

# 6. Stop cleanly: inactive (not failed), no process left, its lines in the journal.
t=$(now)
systemctl stop pipe-watch.service || fail "systemctl stop (2)"
stop_ms=$(ms "$t")
[ "$(prop ActiveState)" = inactive ] || fail "after stop: $(prop ActiveState) (Result=$(prop Result))"
[ "$(prop Result)" = success ] || fail "stop Result=$(prop Result)"
for c in /proc/[0-9]*/cmdline; do
    tr '\0' ' ' <"$c" 2>/dev/null | grep -q '^/usr/bin/pipe watch' && fail "a pipe watch process survived systemctl stop: $c"
done
web_attached || fail "stopping the service removed web's interface"
journal=$(journalctl -u pipe-watch --no-pager -o cat)
grep -q 'web eth1' <<<"$journal" || fail "the journal has no pipe watch output: $journal"
say "stop: inactive, Result=success in ${stop_ms} ms; no process left; web keeps eth1; journal has $(grep -c 'web eth1' <<<"$journal") attach lines"

# 6b. pipe-gc.timer / pipe-gc.service: a guest by PID has no Docker event; the timer's gc
#     collects what it left once it is gone.
systemctl cat pipe-gc.timer >/dev/null || fail "systemd does not see pipe-gc.timer"
[ "$(systemctl is-enabled pipe-gc.timer)" = disabled ] || fail "the package enabled pipe-gc.timer"
verify=$(systemd-analyze verify --man=no /lib/systemd/system/pipe-gc.service /lib/systemd/system/pipe-gc.timer 2>&1)
if grep -q 'pipe-gc' <<<"$verify"; then fail "systemd-analyze verify: $verify"; fi
records() { find /run/pipe/attachments -name '*.json' | wc -l; }
before=$(records)
unshare --net sleep 100000 &
gpid=$!
wait_for 5 sh -c "[ \"\$(readlink /proc/$gpid/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]" || fail "unshare --net"
pipe brgc "$gpid" 10.7.0.2/24 >/dev/null || fail "pipe attach of PID $gpid"
[ "$(records)" = $((before + 1)) ] || fail "no record for PID $gpid"
kill -KILL "$gpid"
wait "$gpid" 2>/dev/null
systemctl start pipe-gc.service || fail "systemctl start pipe-gc.service: $(journalctl -u pipe-gc --no-pager -o cat | tail -5)"
[ "$(systemctl show -p Result --value pipe-gc.service)" = success ] || fail "pipe-gc.service Result=$(systemctl show -p Result --value pipe-gc.service)"
[ "$(records)" = "$before" ] || fail "pipe-gc.service left the dead guest's record"
ip link show "veth1pl$gpid" >/dev/null 2>&1 && fail "pipe-gc.service left veth1pl$gpid"
ip link show brgc >/dev/null 2>&1 && fail "pipe-gc.service left bridge brgc"
[ -e "/run/netns/$gpid" ] && fail "pipe-gc.service left /run/netns/$gpid"
web_attached || fail "pipe-gc.service touched web's live interface"
say "pipe-gc.service: collected PID $gpid's record, veth, bridge and netns link; web untouched; $(journalctl -u pipe-gc --no-pager -o cat | grep -c removed) removals in the journal"

# 7. Purge: the unit goes with the package.
dpkg --purge pipe >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; fail "dpkg --purge"; }
[ ! -e /usr/bin/pipe ] && [ ! -e /etc/pipe ] && [ ! -e /lib/systemd/system/pipe-watch.service ] &&
    [ ! -e /lib/systemd/system/pipe-gc.timer ] ||
    fail "files left after purge"
systemctl cat pipe-watch.service >/dev/null 2>&1 && fail "systemd still knows pipe-watch.service after purge"
say "purge: files gone, unit unknown to systemd"
echo "---- journalctl -u pipe-watch (first lines)"
journalctl -u pipe-watch --no-pager -o short-monotonic | head -12
echo "SDTEST-RESULT pass"
