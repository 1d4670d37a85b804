# An Ubuntu 16.04 (xenial) berth node image, the classic AKS node OS: glibc 2.23, systemd 229, cgroup v1 only.
# Its archive's containerd is far too old, so the static runtime (containerd 2.x, runc, CNI plugins) from
# `tools/build.sh runtime` is installed with berth's own containerd unit; the kubelet gets failCgroupV1: false,
# the cgroupfs driver, and units without directives newer than systemd 229 (all decided by the distro profile).
# The build needs an Ubuntu archive (the `mirror` variable; berth's CI cannot reach one, so there the profile is
# covered by golden tests of everything it renders). It boots the image under qemu and fails unless every
# in-guest check passes.
#
#   packer build -var mirror=http://archive.example/ubuntu -var kubernetes_bin_dir=$(tools/build.sh k8s) \
#     -var runtime_dir=$(tools/build.sh runtime) -var agent=$(make -s agent) \
#     -var 'images=["pause.oci.tar","berth-logs.oci.tar","berth-agent.oci.tar"]' packer/ubuntu-16.04.pkr.hcl
packer {
  required_plugins {
    berth = {
      version = ">= 0.1.0"
      source  = "github.com/berth-dev/berth"
    }
  }
}

variable "mirror" {
  type        = string
  description = "An Ubuntu archive that carries xenial (main, universe; -updates and -security too), e.g. a local mirror or http://archive.ubuntu.com/ubuntu."
}

variable "kubernetes_version" {
  type        = string
  default     = "v1.37.2"
  description = "The version kubelet and kube-proxy in kubernetes_bin_dir report (checked at boot)."
}

variable "kubernetes_bin_dir" {
  type        = string
  description = "Directory holding the pinned kubelet and kube-proxy (`make tools` prints it)."
}

variable "runtime_dir" {
  type        = string
  description = "Directory of the static containerd, containerd-shim-runc-v2, ctr, runc and cni/<plugin> (`tools/build.sh runtime`)."
}

variable "agent" {
  type        = string
  description = "Path of the berth-agent binary (`make agent` builds it and prints the path)."
}

variable "images" {
  type        = list(string)
  description = "OCI image-layout tarballs to pre-cache; must include the pause image (and the log shipper's, `make -s logs-image`, for deploy/logs.yaml)."
}

variable "sandbox_image" {
  type    = string
  default = "berth.dev/pause:3.10"
}

variable "formats" {
  type    = list(string)
  default = ["vhd"]
}

variable "disk_size_mib" {
  type    = number
  default = 4096
}

variable "output_dir" {
  type    = string
  default = "output-ubuntu-16.04"
}

source "berth-disk" "ubuntu-16-04" {
  distro             = "ubuntu-16.04"
  mirror             = var.mirror
  kubelet            = "${var.kubernetes_bin_dir}/kubelet"
  kube_proxy         = "${var.kubernetes_bin_dir}/kube-proxy"
  agent              = var.agent
  runtime_dir        = var.runtime_dir
  kubernetes_version = var.kubernetes_version
  images             = var.images
  sandbox_image      = var.sandbox_image
  formats            = var.formats
  disk_size_mib      = var.disk_size_mib
  output_dir         = var.output_dir
}

build {
  sources = ["source.berth-disk.ubuntu-16-04"]
}
