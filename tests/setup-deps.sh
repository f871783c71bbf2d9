#!/usr/bin/env bash
# Installs what the end-to-end tests and the demo need, only when missing:
# OpenSSH server and client, rsync, systemd-analyze (to check the unit),
# faketime (for the clock-skew tests), openssl (the https list test),
# nftables (the sshd-setup --nft-guard test),
# podman, runc, debootstrap and python3 (tests/containers.sh), and nginx
# (the fleet bench serves the revocation list with it), and prometheus
# (promtool tests the alert rules; the monitoring test scrapes a real
# proxy with it), and iproute2 and nftables (the soak bench's lossy,
# rate-limited client namespace), and mingw-w64 (the sidecar's Windows build,
# tests/cross.sh), plus rustup's macOS and Windows targets and, from PyPI,
# ziglang and cargo-zigbuild (the macOS type check's C compiler for ring).
# Debian/Ubuntu, run as root.
set -euo pipefail
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v scp >/dev/null && command -v sftp >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v systemd-analyze >/dev/null || need+=(systemd)
# libfaketime: the clock-skew tests run the real sidecar with its wall clock off.
command -v faketime >/dev/null || need+=(faketime)
# openssl: the https revocation-list test makes a CA and serves the list with s_server.
command -v openssl >/dev/null || need+=(openssl)
# podman runs the container test (tests/containers.sh) with runc (crun refuses
# a cgroup v1 hybrid layout); debootstrap makes its base image, since no public
# registry is assumed reachable.
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
# nftables: the sshd-setup --nft-guard test loads a table of its own.
command -v nft >/dev/null || need+=(nftables)
# softhsm2: a real PKCS#11 token for the CA's hardware-held roots
# (tests/tests/ca_signers.rs; its EdDSA works from Debian 12's 2.6.1);
# opensc's pkcs11-tool reads back the token key's attributes.
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
# python3: the container test's list server and manifest edits.
command -v python3 >/dev/null || need+=(python3)
# nginx: the fleet bench serves the revocation list from a private nginx
# (its own config, prefix and loopback port, in the foreground). The
# package's own site is not used; where an init system runs, Debian starts
# it on install unless policy-rc.d says otherwise.
[ -x /usr/sbin/nginx ] || need+=(nginx)
# prometheus: promtool checks and tests config-examples/prometheus-alerts.yml,
# and tests/tests/monitoring.rs runs a private Prometheus (its own config,
# storage dir and loopback port) against a real proxy. The package's own
# service is kept from starting by the policy-rc.d below.
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need+=(prometheus)
# prometheus-node-exporter: the same test scrapes a private node_exporter
# (textfile collector only) for the nftables guard's series, which
# `ztssh-proxy sshd-guard-check` writes for it.
[ -x /usr/bin/prometheus-node-exporter ] || need+=(prometheus-node-exporter)
# iproute2 and nftables: the soak bench puts its clients in a network
# namespace joined by a veth pair (ip netns, ip link), with a rate limit on
# both ends (tc tbf) and random packet loss (an nftables numgen rule).
{ command -v ip >/dev/null && command -v tc >/dev/null; } || need+=(iproute2)
# mingw-w64: the linker and C compiler (ring) for x86_64-pc-windows-gnu,
# the sidecar's Windows build in tests/cross.sh.
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(mingw-w64)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..."
  apt-get update -qq
  # The tests run private instances only: keep the packages' own services
  # (nginx on port 80, the system sshd) from starting where an init system
  # runs, with Debian's policy-rc.d, only for this install and only when
  # the machine has no policy of its own.
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
fi
# cargo-deb builds the Debian packages (packaging/build-debs.sh) that
# tests/packages.sh installs. Not a Debian package: from crates.io, pinned
# and --locked so that every machine builds the same packager (byte-identical
# packages depend on it).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  echo "installing cargo-deb $CARGO_DEB_VERSION ..."
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >/dev/null 2>&1 ||
    { echo "cargo install cargo-deb $CARGO_DEB_VERSION failed" >&2; exit 1; }
fi
# tests/cross.sh: the sidecar for macOS (type-checked) and Windows (built,
# its unit tests run under Wine in a Debian 13 container). rustup adds the
# targets to the toolchain in use; cargo-zigbuild drives zig (from the
# ziglang wheel) as the C compiler ring's build script needs for macOS.
# Pinned, like cargo-deb.
for t in aarch64-apple-darwin x86_64-apple-darwin x86_64-pc-windows-gnu; do
  rustup target list --installed 2>/dev/null | grep -qx "$t" ||
    rustup target add "$t" >/dev/null || { echo "rustup target add $t failed" >&2; exit 1; }
done
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
if ! { command -v cargo-zigbuild >/dev/null &&
  python3 -m pip show ziglang 2>/dev/null | grep -qx "Version: $ZIGLANG_VERSION" &&
  cargo-zigbuild --version 2>/dev/null | grep -q " $CARGO_ZIGBUILD_VERSION"; }; then
  echo "installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $CARGO_ZIGBUILD_VERSION ..."
  python3 -m pip install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" ||
    { echo "pip install ziglang cargo-zigbuild failed" >&2; exit 1; }
fi
# The zero-standing-keys tests create the local account ztsshe2e themselves
# (useradd/usermod from Debian's passwd package, always installed) and
# install a copy of ztssh-proxy under /usr/local/libexec/ztssh-tests-*/
# for the length of a test, because sshd runs AuthorizedKeysCommand only
# from root-owned paths.
# sshd's privilege-separation directory.
mkdir -p /run/sshd
# podman's default ulimits cannot be applied by runc on some hosts (nofile
# above the hard limit); an empty list keeps the host's. Written only when
# the file does not exist, so an operator's own containers.conf is kept.
if [ ! -e /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' > /etc/containers/containers.conf
fi
