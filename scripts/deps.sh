# Sourced by build.sh and test.sh: installs the Debian packages that are missing (a no-op when all
# are present). Uses sudo when not root.
BUILD_PACKAGES=(cmake g++ make pkg-config git libcli11-dev libfmt-dev nlohmann-json3-dev libxxhash-dev liburing-dev scdoc)
TEST_PACKAGES=(libgtest-dev util-linux acl attr e2fsprogs xfsprogs procps dosfstools fusefat exfatprogs exfat-fuse bindfs strace)

ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing missing packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
