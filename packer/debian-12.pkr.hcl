# A Debian 12 berth node image: containerd + runc + CNI plugins from Debian, the pinned kubelet and kube-proxy,
# berth's units, sysctls and pre-cached images. The build boots the image under qemu and fails unless every
# in-guest check passes.
#
#   pause=$(make -s plugin)   # the plugin where required_plugins finds it, the pinned packer, the pause image
#   logs=$(make -s logs-image) # the log shipper's image (deploy/logs.yaml runs it)
#   agentimage=$(make -s agent-image) # the agent's image (deploy/shares.yaml's provisioner runs it)
#   packer build -var kubernetes_bin_dir=$(tools/build.sh k8s) -var agent=$(make -s agent) \
#     -var "images=[\"$pause\",\"$logs\",\"$agentimage\"]" packer/debian-12.pkr.hcl
packer {
  required_plugins {
    berth = {
      version = ">= 0.1.0"
      source  = "github.com/berth-dev/berth"
    }
  }
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

variable "mirror" {
  type        = string
  default     = ""
  description = "A Debian mirror to use instead of deb.debian.org."
}

variable "formats" {
  type    = list(string)
  default = ["qcow2", "vhd"]
}

variable "disk_size_mib" {
  type    = number
  default = 4096
}

variable "output_dir" {
  type    = string
  default = "output-debian-12"
}

source "berth-disk" "debian-12" {
  distro             = "debian-12"
  mirror             = var.mirror
  kubelet            = "${var.kubernetes_bin_dir}/kubelet"
  kube_proxy         = "${var.kubernetes_bin_dir}/kube-proxy"
  agent              = var.agent
  kubernetes_version = var.kubernetes_version
  images             = var.images
  sandbox_image      = var.sandbox_image
  formats            = var.formats
  disk_size_mib      = var.disk_size_mib
  output_dir         = var.output_dir
}

build {
  sources = ["source.berth-disk.debian-12"]
}
