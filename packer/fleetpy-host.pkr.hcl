# A fleetpy host image: Debian bookworm with docker, the fleetpy agent as an
# enabled systemd service and, with -var etcd=true, etcd ready to be a member.
# Provisioned by fleetpy/share/provision.sh, the script that builds the nspawn hosts
# the tests boot, so what is tested is what is shipped.
#
#   packer/wheels.sh build/wheels     # or let the shell-local step below do it
#   packer init packer/ && packer build packer/
#
# A machine made from the image joins a cluster when its agent gets a config:
# run provision.sh again with --ip/--endpoint/--metadata (and --etcd-name/
# --etcd-cluster for an etcd member), e.g. from cloud-init; see packer/README.md.

packer {
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}

variable "base_image_url" {
  type        = string
  description = "Debian bookworm's generic cloud image (qcow2)."
  default     = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

variable "base_image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

variable "etcd" {
  type        = bool
  description = "Install etcd too (disabled until a machine is told its membership)."
  default     = false
}

variable "wheels_dir" {
  type        = string
  description = "Wheels of fleetpy and its dependencies for bookworm's python3 (packer/wheels.sh)."
  default     = "build/wheels"
}

variable "disk_size" {
  type    = string
  default = "8G"
}

locals {
  stage = "/tmp/fleetpy"
  provision_args = concat(
    ["--wheels", "${local.stage}/wheels", "--unit", "${local.stage}/fleetpy-agent.service", "--docker"],
    var.etcd ? ["--etcd"] : [],
  )
}

source "qemu" "bookworm" {
  iso_url      = var.base_image_url
  iso_checksum = var.base_image_checksum
  disk_image   = true
  disk_size    = var.disk_size
  format       = "qcow2"
  accelerator  = "kvm"
  headless     = true
  # cloud-init's NoCloud seed: the build user packer logs in as (removed at the end).
  cd_files         = ["${path.root}/cloud-init/meta-data", "${path.root}/cloud-init/user-data"]
  cd_label         = "cidata"
  ssh_username     = "packer"
  ssh_password     = "packer"
  ssh_timeout      = "10m"
  # The build user goes last, with the shutdown (sudo must still know it).
  shutdown_command = "sudo sh -c 'userdel --remove --force packer; shutdown -P now'"
  output_directory = "build/fleetpy-host"
  vm_name          = "fleetpy-host.qcow2"
}

build {
  sources = ["source.qemu.bookworm"]

  provisioner "shell-local" {
    inline = ["${path.root}/wheels.sh ${var.wheels_dir}"]
  }

  provisioner "shell" {
    inline = ["mkdir -p ${local.stage}"]
  }

  provisioner "file" {
    sources     = ["${path.root}/../fleetpy/share/provision.sh", "${path.root}/../fleetpy/share/fleetpy-agent.service"]
    destination = "${local.stage}/"
  }

  provisioner "file" {
    source      = "${var.wheels_dir}/"
    destination = "${local.stage}/wheels"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} {{ .Path }}"
    inline = [
      "${local.stage}/provision.sh ${join(" ", local.provision_args)}",
      # No cloud-init state and no staging files: every machine made from the
      # image starts clean (the build user is removed by shutdown_command).
      "rm -rf ${local.stage}",
      "cloud-init clean --logs --seed",
    ]
  }
}
