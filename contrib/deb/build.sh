#!/bin/bash
# Build pipe's Debian package with dpkg-deb (no debhelper, no cargo-deb).
#
#   contrib/deb/build.sh                      a static release build (+crt-static), then pack: no Depends
#   contrib/deb/build.sh --dynamic            the same with a dynamically linked binary (plain
#                                             cargo build --release): Depends libc6, libgcc-s1
#   contrib/deb/build.sh --binary PATH        pack this binary instead of building one
#   contrib/deb/build.sh --out DIR            where the .deb goes (default target/deb)
#   contrib/deb/build.sh --fast               gzip -1 instead of xz (the tests: a debug binary)
#
# Prints the path of the .deb. What it contains:
#   /usr/bin/pipe
#   /usr/lib/cni/pipe -> ../../bin/pipe           the CNI entry point (CNI_COMMAND set)
#   /usr/share/man/man1/pipe.1.gz, pipe-VERB.1.gz  from man/ (generated from the clap definitions)
#   /usr/share/bash-completion/completions/pipe, /usr/share/zsh/vendor-completions/_pipe,
#   /usr/share/fish/vendor_completions.d/pipe.fish
#   /lib/systemd/system/pipe-watch.service         from contrib/ (installed, not enabled)
#   /lib/systemd/system/pipe-gc.{service,timer}    from contrib/ (installed, not enabled)
#   /etc/pipe/attachments.toml                     a conffile: a commented example
#   /usr/share/doc/pipe/{README.md.gz,copyright,changelog.Debian.gz}
# Static is the default because it is faster: without the dynamic loader an attach starts
# about 0.5 ms sooner (a third of pipe's own share of a 3 ms attach; docs/performance.md).
# The static build also places the functions an attach runs first in .text
# (contrib/hot-symbols.txt, written by contrib/hot-symbols.sh): about 0.5 ms more.
# Depends is computed from the binary's NEEDED libraries (dpkg -S on this machine, the glibc
# symbol versions it uses): libc6 (and libgcc-s1, which every Rust binary on the gnu target
# links for unwinding); a static binary depends on nothing. Recommends: iproute2 (`pipe tc`
# runs its tc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="" OUT=$ROOT/target/deb STATIC=1 COMPRESS=(-Zxz)
while [ $# -gt 0 ]; do
    case $1 in
        --binary) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --static) STATIC=1; shift ;;
        --dynamic) STATIC=0; shift ;;
        --fast) COMPRESS=(-Zgzip -z1); shift ;;
        -h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
die() { echo "build.sh: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: run this on Debian or Ubuntu"

VERSION=$(awk -F'"' '/^version = / && v == "" { v = $2 } END { print v }' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || die "no version in Cargo.toml"
ARCH=$(dpkg --print-architecture)
if [ -z "$BIN" ]; then
    cd "$ROOT"
    if [ "$STATIC" = 1 ]; then
        triple=$(rustc -vV | sed -n 's/^host: //p')
        # The functions an attach runs go side by side at the start of .text
        # (contrib/hot-symbols.txt; about 0.5 ms per attach, docs/performance.md). The flag is
        # lld's: rustc links with its own lld on x86_64-unknown-linux-gnu since 1.90. Given to
        # the final link only (cargo rustc), so that every crate keeps the symbol names listed.
        # With it, when the static glibc linked in is 2.36 or newer (its start-up applies
        # DT_RELR; an older one would not, and the binary would crash at start), the relative
        # relocations are packed (-z pack-relative-relocs): a 2 KB table instead of 149 KB read
        # at every start, 3 page faults fewer.
        order=()
        minor=$(rustc -V | sed -n 's/^rustc 1\.\([0-9]*\).*/\1/p')
        libc_minor=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc 2\.\([0-9]*\).*/\1/p')
        if [ "$triple" = x86_64-unknown-linux-gnu ] && [ "${minor:-0}" -ge 90 ]; then
            order=(-- -C "link-arg=-Wl,--symbol-ordering-file=$ROOT/contrib/hot-symbols.txt"
                -C link-arg=-Wl,--no-warn-symbol-ordering)
            if [ "${libc_minor:-0}" -ge 36 ]; then
                order+=(-C link-arg=-Wl,-z,pack-relative-relocs)
            fi
        fi
        RUSTFLAGS='-C target-feature=+crt-static' cargo rustc --release --locked --target "$triple" \
            --bin pipe "${order[@]}" >&2
        BIN=$ROOT/target/$triple/release/pipe
        "$BIN" --version >/dev/null || die "$BIN was built but does not start (link flags: ${order[*]})"
        if [ ${#order[@]} -gt 0 ]; then
            have=$(nm --defined-only "$BIN" | awk '{ print $3 }' | LC_ALL=C sort -u |
                LC_ALL=C comm -12 - "$ROOT/contrib/hot-symbols.txt" | wc -l)
            echo "build.sh: $have of $(wc -l <"$ROOT/contrib/hot-symbols.txt") functions of" \
                "contrib/hot-symbols.txt placed first (if few: contrib/hot-symbols.sh $BIN)" >&2
        else
            echo "build.sh: no symbol ordering ($triple, rustc 1.${minor:-?}: not linked by lld)" >&2
        fi
    else
        cargo build --release --locked >&2
        BIN=$ROOT/target/release/pipe
    fi
fi
[ -x "$BIN" ] || die "$BIN is not an executable"

# Depends from the libraries the binary loads.
depends=""
needed=$(LC_ALL=C readelf -d "$BIN" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if [ -n "$needed" ]; then
    pkgs=()
    for lib in $needed; do
        # awk reads to the end: quitting early would kill ldconfig with SIGPIPE, and under
        # pipefail the script would stop here without a word (seen in CI).
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64|64bit/ && p == "" { p = $NF } END { print p }')
        [ -n "$path" ] || path=$(ldconfig -p | awk -v l="$lib" '$1 == l && p == "" { p = $NF } END { print p }')
        [ -n "$path" ] || die "cannot find $lib (needed by $BIN)"
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1) ||
            pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
        [ -n "$pkg" ] || die "no package owns $path ($lib, needed by $BIN)"
        pkgs+=("$pkg")
    done
    glibc=$(LC_ALL=C readelf -V --wide "$BIN" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    for pkg in $(printf '%s\n' "${pkgs[@]}" | sort -u); do
        case $pkg in
            libc6) d="libc6 (>= $glibc)" ;;
            *) d=$pkg ;;
        esac
        depends+="${depends:+, }$d"
    done
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/pipe_${VERSION}_$ARCH
umask 022
install -d "$P/DEBIAN" "$P/usr/bin" "$P/usr/lib/cni" "$P/usr/share/man/man1" \
    "$P/usr/share/bash-completion/completions" "$P/usr/share/zsh/vendor-completions" \
    "$P/usr/share/fish/vendor_completions.d" "$P/lib/systemd/system" "$P/etc/pipe" \
    "$P/usr/share/doc/pipe"
# Stripped of debug information, as Debian's binaries are (debug builds shrink ~20x).
strip --strip-debug -o "$P/usr/bin/pipe" "$BIN"
chmod 755 "$P/usr/bin/pipe"
ln -s ../../bin/pipe "$P/usr/lib/cni/pipe"
for page in "$ROOT"/man/*.1; do
    gzip -9n <"$page" >"$P/usr/share/man/man1/$(basename "$page").gz"
done
install -m644 "$ROOT/completions/pipe.bash" "$P/usr/share/bash-completion/completions/pipe"
install -m644 "$ROOT/completions/_pipe" "$P/usr/share/zsh/vendor-completions/_pipe"
install -m644 "$ROOT/completions/pipe.fish" "$P/usr/share/fish/vendor_completions.d/pipe.fish"
install -m644 "$ROOT/contrib/pipe-watch.service" "$P/lib/systemd/system/pipe-watch.service"
install -m644 "$ROOT/contrib/pipe-gc.service" "$P/lib/systemd/system/pipe-gc.service"
install -m644 "$ROOT/contrib/pipe-gc.timer" "$P/lib/systemd/system/pipe-gc.timer"
install -m644 "$ROOT/contrib/attachments.toml" "$P/etc/pipe/attachments.toml"
gzip -9n <"$ROOT/README.md" >"$P/usr/share/doc/pipe/README.md.gz"
cat >"$P/usr/share/doc/pipe/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pipe
Comment: Built from the pipe source tree by contrib/deb/build.sh. The Rust crates it is
 linked with are listed, with their licences, in the source tree's Cargo.lock.
COPY
printf 'pipe (%s) unstable; urgency=medium\n\n  * Built from the source tree by contrib/deb/build.sh.\n\n -- pipe developers <root@localhost>  %s\n' \
    "$VERSION" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(stat -c %Y "$ROOT/Cargo.toml")}")" |
    gzip -9n >"$P/usr/share/doc/pipe/changelog.Debian.gz"
echo /etc/pipe/attachments.toml >"$P/DEBIAN/conffiles"
install -m755 "$ROOT/contrib/deb/prerm" "$ROOT/contrib/deb/postinst" "$ROOT/contrib/deb/postrm" "$P/DEBIAN/"

size=$(du -sk --exclude=DEBIAN "$P" | cut -f1)
{
    echo "Package: pipe"
    echo "Version: $VERSION"
    echo "Architecture: $ARCH"
    echo "Maintainer: pipe developers <root@localhost>"
    echo "Installed-Size: $size"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Recommends: iproute2"
    echo "Section: net"
    echo "Priority: optional"
    echo "Description: give a running container another network interface"
    echo " pipe attaches extra network interfaces to running containers (Docker, Podman,"
    echo " any network namespace), as the pipework script did, but atomically: a veth"
    echo " into a Linux bridge, macvlan, ipvlan, 802.1Q VLANs, fixed MACs, MTU, default"
    echo " routes, DHCP, rate limits. It also runs as a service (pipe watch, a systemd"
    echo " unit) that re-applies attachments when containers start, and as a CNI plugin."
} >"$P/DEBIAN/control"
(cd "$P" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$P/DEBIAN/md5sums"

mkdir -p "$OUT"
deb=$OUT/pipe_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group "${COMPRESS[@]}" --build "$P" "$deb" >&2
echo "$deb"
