#!/bin/bash
# Turn a Debian bookworm root filesystem (a debootstrap chroot, a
# systemd-nspawn rootfs or a packer/vagrant VM) into a fleetpy host.
#
#   provision.sh --wheels DIR [--unit FILE] [--docker] [--etcd]      (the image)
#                [--ip IP] [--endpoint URLS] [--metadata K=V,...]    (this machine)
#                [--etcd-name NAME --etcd-cluster NAME=URL,...] [--root DIR]
#
# The image (each step runs only with --wheels):
#   --wheels DIR  wheels of fleetpy's Python dependencies, installed with
#                 pip --no-index (no package index is reachable from inside a
#                 rootfs). A fleetpy-*.whl in DIR is installed too (packer);
#                 without one, fleetpy's source is expected at
#                 /opt/fleetpy/src (bind-mounted by fleetpy/cluster/nspawn.py).
#                 packer/wheels.sh makes such a directory.
#   --unit FILE   the agent's systemd unit (default: fleetpy-agent.service next to
#                 this script, both in fleetpy/share/).
#   --docker      also install docker.io (VMs; nspawn hosts bind the
#                 machine's docker CLI and socket instead).
#   --etcd        also install etcd (disabled: membership is per machine, below).
#
# One machine made from the image (vagrant; packer images get the same from
# cloud-init by running this script again without --wheels):
#   --ip IP            the address other machines reach this one at.
#   --endpoint URLS    etcd client URLs: writes /etc/fleetpy/agent.yaml (with
#                      --ip and --metadata) and starts the agent.
#   --metadata K=V,... the machine's metadata (MachineMetadata= selects by it).
#   --etcd-name NAME, --etcd-cluster NAME=PEER_URL,...
#                      this machine is the etcd member NAME of a new cluster of
#                      those members: writes /etc/default/etcd, starts etcd.
#   --root DIR         write the machine's files under DIR and start nothing
#                      (tests).
#
# Runs as root, non-interactively, and is idempotent.
set -euo pipefail

wheels=""
unit="$(cd "$(dirname "$0")" && pwd)/fleetpy-agent.service"
docker=0
etcd=0
ip=""
endpoint=""
metadata=""
etcd_name=""
etcd_cluster=""
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --docker|--etcd) ;;
        --wheels|--unit|--ip|--endpoint|--metadata|--etcd-name|--etcd-cluster|--root)
            [ $# -ge 2 ] || { echo "provision: $1 needs a value" >&2; exit 2; } ;;
    esac
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --unit) unit="$2"; shift 2 ;;
        --docker) docker=1; shift ;;
        --etcd) etcd=1; shift ;;
        --ip) ip="$2"; shift 2 ;;
        --endpoint) endpoint="$2"; shift 2 ;;
        --metadata) metadata="$2"; shift 2 ;;
        --etcd-name) etcd_name="$2"; shift 2 ;;
        --etcd-cluster) etcd_cluster="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        *) echo "provision: unknown argument: $1" >&2; exit 2 ;;
    esac
done
fail() { echo "provision: $*" >&2; exit 2; }
if [ -z "$wheels" ] && [ -z "$endpoint" ] && [ -z "$etcd_name" ]; then
    fail "nothing to do: give --wheels DIR (the image), --endpoint or --etcd-name (this machine)"
fi
[ -z "$wheels" ] || [ -d "$wheels" ] || fail "--wheels $wheels is not a directory"
[ -z "$wheels" ] || [ -f "$unit" ] || fail "no unit file at $unit"
ip_re='^[0-9]{1,3}(\.[0-9]{1,3}){3}$'
[ -z "$ip" ] || [[ "$ip" =~ $ip_re ]] || fail "--ip $ip is not an IPv4 address"
if [ -n "$endpoint" ] || [ -n "$etcd_name" ]; then
    [ -n "$ip" ] || fail "--endpoint and --etcd-name need --ip"
fi
url_re='^https?://[A-Za-z0-9.:-]+(,https?://[A-Za-z0-9.:-]+)*$'
[ -z "$endpoint" ] || [[ "$endpoint" =~ $url_re ]] || fail "--endpoint $endpoint: want URL[,URL...]"
meta_re='^[A-Za-z0-9_.-]+=[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+=[A-Za-z0-9_.-]+)*$'
[ -z "$metadata" ] || [[ "$metadata" =~ $meta_re ]] || fail "--metadata $metadata: want KEY=VALUE[,KEY=VALUE...]"
member_re='^[A-Za-z0-9_.-]+=https?://[A-Za-z0-9.:-]+(,[A-Za-z0-9_.-]+=https?://[A-Za-z0-9.:-]+)*$'
if [ -n "$etcd_name" ]; then
    [[ "$etcd_cluster" =~ $member_re ]] || fail "--etcd-cluster $etcd_cluster: want NAME=PEER_URL[,...]"
    [[ ",$etcd_cluster" == *",$etcd_name="* ]] || fail "--etcd-cluster has no member $etcd_name"
fi

log() { echo "provision: $*" >&2; }

provision_image() {
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
[ "$etcd" = 1 ] && packages+=(etcd-server etcd-client)
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
try:
    from fleetpy.entrypoints import agent_entry
except ImportError:  # a fleetpy from before the rename (a rollback of an upgrade)
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

if [ "$etcd" = 1 ]; then
    # The package starts a one-member etcd of its own; a machine joins the
    # cluster it is told to (below), with nothing left from that one.
    systemctl stop etcd.service 2>/dev/null || true
    systemctl disable etcd.service
    rm -rf /var/lib/etcd/default
fi
log "step=image-done"
}

# A YAML string, quoted: values here are checked above, quoting keeps them strings.
q() { printf "'%s'" "$1"; }

configure_machine() {
    if [ -z "$root" ] && [ ! -s /etc/machine-id ]; then
        # A machine provisioned where it runs (vagrant) never reboots from the
        # image: it gets its machine id now (from the VM's uuid, else random).
        systemd-machine-id-setup
    fi
    if [ -n "$etcd_name" ]; then
        local peer="http://$ip:2380" client="http://$ip:2379"
        mkdir -p "$root/etc/default"
        cat > "$root/etc/default/etcd" <<CONF
# Written by fleetpy's provision.sh: member $etcd_name of a new cluster.
ETCD_NAME=$etcd_name
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_PEER_URLS=$peer
ETCD_LISTEN_CLIENT_URLS=$client,http://127.0.0.1:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=$peer
ETCD_ADVERTISE_CLIENT_URLS=$client
ETCD_INITIAL_CLUSTER=$etcd_cluster
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=fleetpy
CONF
        log "step=etcd name=$etcd_name"
        if [ -z "$root" ]; then
            systemctl enable etcd.service
            # --no-block: a member is ready only once a quorum is up, and the
            # other members may not exist yet (vagrant makes them one by one).
            systemctl start --no-block etcd.service
        fi
    fi
    if [ -n "$endpoint" ]; then
        mkdir -p "$root/etc/fleetpy"
        {
            echo "# Written by fleetpy's provision.sh; all settings: fleetpy agent-files config"
            echo "endpoint: $(q "$endpoint")"
            echo "public_ip: $(q "$ip")"
            if [ -n "$metadata" ]; then
                echo "metadata:"
                local pair
                IFS=, read -ra pairs <<< "$metadata"
                for pair in "${pairs[@]}"; do
                    echo "  $(q "${pair%%=*}"): $(q "${pair#*=}")"
                done
            fi
        } > "$root/etc/fleetpy/agent.yaml.tmp"
        mv "$root/etc/fleetpy/agent.yaml.tmp" "$root/etc/fleetpy/agent.yaml"
        log "step=agent-config endpoint=$endpoint ip=$ip"
        [ -n "$root" ] || systemctl restart --no-block fleetpy-agent.service
    fi
}

[ -z "$wheels" ] || provision_image
[ -z "$endpoint$etcd_name" ] || configure_machine
log "step=done"
