#!/usr/bin/env bash
# Idempotent setup on Debian 12: system packages and a venv with fleetpy installed.
# Usage: scripts/setup.sh            (run as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# etcd (server + etcdctl), real hosts (nspawn, debootstrap), docker, ssh to the hosts,
# ruby to check vagrant/Vagrantfile, chromium and its driver for the dashboard's browser
# test. The agent's D-Bus bindings are Debian's python3-dbus inside each host, not needed here.
PACKAGES=(etcd-server etcd-client systemd-container debootstrap docker.io busybox-static
          iproute2 python3-venv openssl openssh-client ruby chromium chromium-driver)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts etcd as a service on install; fleetpy's tests start their own.
$SUDO systemctl disable --now etcd >/dev/null 2>&1 || true

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
echo "setup: done (.venv ready)" >&2
