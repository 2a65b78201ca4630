#!/bin/bash
# Turn a Debian bookworm root filesystem (a debootstrap chroot, a
# systemd-nspawn rootfs or a packer VM) into a fleetpy host.
#
#   provision.sh --wheels DIR [--unit FILE] [--docker]
#
#   --wheels DIR  wheels of fleetpy's Python dependencies, installed with
#                 pip --no-index (no package index is reachable from inside a
#                 rootfs). A fleetpy-*.whl in DIR is installed too (packer);
#                 without one, fleetpy's source is expected at
#                 /opt/fleetpy/src (bind-mounted by fleetpy/cluster/nspawn.py).
#   --unit FILE   the agent's systemd unit (default: ../agent/fleetpy-agent.service
#                 next to this script).
#   --docker      also install docker.io (VMs; nspawn hosts bind the
#                 machine's docker CLI and socket instead).
#
# Runs as root, non-interactively, and is idempotent.
set -euo pipefail

wheels=""
unit="$(cd "$(dirname "$0")" && pwd)/../agent/fleetpy-agent.service"
docker=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --unit) unit="$2"; shift 2 ;;
        --docker) docker=1; shift ;;
        *) echo "provision: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -n "$wheels" ] && [ -d "$wheels" ] || { echo "provision: --wheels DIR is required" >&2; exit 2; }
[ -f "$unit" ] || { echo "provision: no unit file at $unit" >&2; exit 2; }

log() { echo "provision: $*" >&2; }

export DEBIAN_FRONTEND=noninteractive
packages=(
    systemd systemd-sysv dbus          # the host's init and the bus the agent talks to
    python3 python3-venv               # the agent's interpreter
    python3-dbus python3-gi            # D-Bus + GLib main loop from Debian, not built from source
    ca-certificates                    # etcd over TLS
    iproute2 procps                    # debugging, and later netns/veth setups
    openssh-server                     # fleetpy status/journal/ssh reach hosts over ssh
)
[ "$docker" = 1 ] && packages+=(docker.io)
log "step=apt packages=${#packages[@]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
apt-get clean
rm -rf /var/lib/apt/lists/*

# --system-site-packages: Debian's python3-dbus and python3-gi are visible.
venv=/opt/fleetpy/venv
log "step=venv path=$venv"
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
shopt -s nullglob
wheel_files=("$wheels"/*.whl)
[ ${#wheel_files[@]} -gt 0 ] || { echo "provision: no wheels in $wheels" >&2; exit 2; }
"$venv/bin/pip" install -q --no-index --no-cache-dir --find-links "$wheels" "${wheel_files[@]}"

if [ ! -x "$venv/bin/fleetpy" ]; then
    # No fleetpy wheel: the venv imports fleetpy from the source directory
    # bind-mounted at run time (a .pth entry), so code changes need no rebuild.
    log "step=source-launcher source=/opt/fleetpy/src"
    mkdir -p /opt/fleetpy/src
    purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    echo /opt/fleetpy/src > "$purelib/fleetpy-src.pth"
    cat > "$venv/bin/fleetpy" <<'EOF'
#!/opt/fleetpy/venv/bin/python
import sys
from fleetpy.cli import main
sys.exit(main())
EOF
    cat > "$venv/bin/fleetpy-agent" <<'EOF'
#!/opt/fleetpy/venv/bin/python
import sys
from fleetpy.daemons import agent_entry
agent_entry()
EOF
    chmod 755 "$venv/bin/fleetpy" "$venv/bin/fleetpy-agent"
fi
ln -sf "$venv/bin/fleetpy" /usr/local/bin/fleetpy

mkdir -p /etc/fleetpy
install -m 644 "$unit" /etc/systemd/system/fleetpy-agent.service
systemctl enable fleetpy-agent.service

# sshd: keys only; every host makes its own host keys at its first boot (an image
# carries none, so no two hosts share them).
mkdir -p /etc/ssh/sshd_config.d /etc/systemd/system/ssh.service.d
printf '%s\n' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' \
    'PermitRootLogin prohibit-password' > /etc/ssh/sshd_config.d/fleetpy.conf
# The empty line resets the list, so keys exist before sshd -t checks them.
printf '%s\n' '[Service]' 'ExecStartPre=' 'ExecStartPre=/usr/bin/ssh-keygen -A' \
    'ExecStartPre=/usr/sbin/sshd -t' \
    > /etc/systemd/system/ssh.service.d/fleetpy-host-keys.conf
rm -f /etc/ssh/ssh_host_*
systemctl enable ssh.service

# Image hygiene: every host made from this image must get its own machine id
# (fleet identifies machines by it) and hostname.
: > /etc/machine-id
ln -sf /etc/machine-id /var/lib/dbus/machine-id
rm -f /etc/hostname
[ -f /etc/hosts ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' > /etc/hosts
# /etc is writable on every host we make, so there is never a transient
# machine id to commit; in nspawn hosts (machine id bind-mounted) it fails.
systemctl mask systemd-machine-id-commit.service
log "step=done"
