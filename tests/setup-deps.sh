#!/usr/bin/env bash
# Installs what the end-to-end tests and the demo need, only when missing:
# OpenSSH server and client, rsync, systemd-analyze (to check the unit),
# faketime (for the clock-skew tests), openssl (the https list test) and
# nginx (the fleet bench serves the revocation list with it).
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
# nginx: the fleet bench serves the revocation list from a private nginx
# (its own config, prefix and loopback port, in the foreground). The
# package's own site is not used; where an init system runs, Debian starts
# it on install unless policy-rc.d says otherwise.
[ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The zero-standing-keys tests create the local account ztsshe2e themselves
# (useradd/usermod from Debian's passwd package, always installed) and
# install a copy of ztssh-proxy under /usr/local/libexec/ztssh-tests-*/
# for the length of a test, because sshd runs AuthorizedKeysCommand only
# from root-owned paths.
# sshd's privilege-separation directory.
mkdir -p /run/sshd
