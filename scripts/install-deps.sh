#!/usr/bin/env bash
# Installs every Debian 12 package vavae needs to build, test and run.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev libopenblas0-openmp libdnnl-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libstb-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev
  libgtest-dev
  libgloo-dev
  clang libclang-rt-14-dev
  dataset-fashion-mnist
  python3-numpy
  chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
