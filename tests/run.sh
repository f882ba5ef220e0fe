#!/bin/bash
# The project's test command (CI runs it through .ci/run). Run as root from anywhere:
#
#     ./tests/run.sh
#
# On a fresh Debian bookworm machine with only the Rust toolchain, without stdin, it
#   1. installs what the tests need with apt-get (non-interactive; only what is missing);
#   2. starts a private Docker Engine inside netns `dockerhost`, and Podman's Docker-compatible
#      service inside netns `podmanhost` (tests/docker/up.sh); if that fails the run goes on, and
#      the Docker (Podman) tests fail with the reason recorded in target/docker-unavailable
#      (target/podman-unavailable);
#   3. runs cargo fmt --check, cargo clippy --all-targets -- -D warnings, cargo test (all tests);
#   4. runs the QEMU VM tier, tests/vm/run.sh, if it exists, and the systemd tier,
#      tests/vm/systemd.sh (the .deb and pipe-watch.service under Debian's systemd in a VM);
#   5. always stops both again (tests/docker/down.sh), even on failure or Ctrl-C.
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
#
# Env: PIPE_SKIP_VM=1 skips the VM tier (it is then reported as skipped, not as passed).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# What the tests call: ip/bridge, ping, arping, nsenter/unshare/setpriv, busybox (udhcpc/udhcpd
# and the Docker test image), docker/dockerd, curl (daemon readiness).
# binutils: readelf (the .deb's Depends, the static binary check); mmdebstrap and e2fsprogs: the
# systemd tier's root file system (tests/vm/systemd.sh). For the CNI tests (tests/cni.rs): podman
# (its CNI backend, with runc), containerd (ctr run --cni), the reference plugins and IPAM
# (containernetworking-plugins in /usr/lib/cni), jq; docker-compose 1.29 (labels from a compose file).
# zsh and fish: the generated completion scripts are run in them (tests/complete.rs).
PACKAGES=(iproute2 iputils-ping iputils-arping util-linux busybox-static docker.io curl
    ca-certificates binutils mmdebstrap e2fsprogs podman runc containerd containernetworking-plugins jq
    docker-compose zsh fish)

T0=$(date +%s)
failed=()
passed=()
skipped=()

say() { printf '\n=== %s\n' "$*"; }
step() { # step NAME COMMAND...: run it, record the outcome, never stop the run
    local name=$1 t
    shift
    say "$name"
    t=$(date +%s)
    if "$@"; then
        passed+=("$name ($(($(date +%s) - t)) s)")
    else
        local rc=$?
        failed+=("$name (exit $rc, $(($(date +%s) - t)) s)")
    fi
}

if [ "$(id -u)" != 0 ]; then
    echo "run: the tests create namespaces, links and a Docker Engine: run as root" >&2
    exit 1
fi

# The engines, their namespaces and /var/run/docker.sock are machine-wide: one run at a time
# (other checkouts or worktrees of the project on this machine wait here).
exec 9>/run/pipe-tests.lock
if ! flock -n 9; then
    echo "run: another tests/run.sh holds /run/pipe-tests.lock; waiting for it"
    flock 9
fi

cleanup() {
    say "docker: stop the test engines"
    tests/docker/down.sh || echo "run: tests/docker/down.sh failed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "run: all of ${PACKAGES[*]} are installed"
        return 0
    fi
    echo "run: installing ${missing[*]} (log: target/run-apt.log)"
    # Starts none of their services (docker.io would start dockerd in the root namespace).
    tests/apt-install.sh target/run-apt.log "${missing[@]}"
}

toolchain() {
    cargo --version && rustc --version || return 1
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        echo "run: adding rustfmt and clippy to the toolchain"
        rustup component add rustfmt clippy || return 1
    fi
}

docker_up() {
    rm -f target/docker-unavailable
    tests/docker/up.sh && return 0
    local rc=$?
    # up.sh writes the reason; make sure there is one whatever made it fail.
    [ -s target/docker-unavailable ] ||
        echo "tests/docker/up.sh failed (exit $rc) without a reason" >target/docker-unavailable
    return $rc
}

cargo_test() {
    # The Docker tests must run, and fail loudly with up.sh's reason if the Engine is missing.
    export PIPE_DOCKER_TESTS=1
    if [ -s target/docker-unavailable ]; then
        PIPE_DOCKER_UNAVAILABLE=$(cat target/docker-unavailable)
        export PIPE_DOCKER_UNAVAILABLE
    fi
    cargo test --no-fail-fast
}

mkdir -p target
step "apt-get install" install_packages
step "toolchain" toolchain
step "docker: start the test engines (netns dockerhost, podmanhost)" docker_up
step "cargo fmt --check" cargo fmt --check
step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
step "cargo test" cargo_test
if [ "${PIPE_SKIP_VM:-}" = 1 ]; then
    skipped+=("VM tier (PIPE_SKIP_VM=1)")
elif [ -f tests/vm/run.sh ]; then
    step "VM tier: tests/vm/run.sh" bash tests/vm/run.sh
    # The .deb and pipe-watch.service under Debian's systemd as PID 1 (this machine's init is not).
    step "VM tier: systemd unit (tests/vm/systemd.sh)" bash tests/vm/systemd.sh
else
    skipped+=("VM tier (no tests/vm/run.sh)")
fi

say "summary ($(($(date +%s) - T0)) s)"
for s in "${passed[@]}"; do echo "  ok       $s"; done
for s in "${skipped[@]}"; do echo "  SKIPPED  $s"; done
for s in "${failed[@]}"; do echo "  FAILED   $s"; done
if [ -s target/docker-unavailable ]; then
    echo "  Docker was unavailable: $(cat target/docker-unavailable)"
fi
[ ${#failed[@]} -eq 0 ]
