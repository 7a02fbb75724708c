#!/usr/bin/env bash
# Prepares what a GPU machine without our Debian packages needs to run scripts/cuda-test.sh:
#   .devdeps/  the headers, CMake configs and shared libraries of our dependencies, unpacked from
#              Debian 12's packages (a prefix for VAVAE_PREFIX; LibTorch comes from the machine's PyTorch)
#              and, in .devdeps/bench/, the PyTorch reference bench/gpu.sh times against
#   .devfix/   the fixtures, less those over the machine's transfer limit (inception/: 47 MB)
# Both are ignored by git (.git/info/exclude) and travel as carried folders. On the GPU machine:
#   export VAVAE_PREFIX=$PWD/.devdeps/usr VAVAE_FIXTURES=$PWD/.devfix VAVAE_TORCH_REF=$PWD/.devdeps/bench/torch_ref.py
#   VAVAE_CTEST_EXCLUDE='Inception|TokenizerEval.ItsFiles|TokenizerEval.TwoRanks|FeatureNet' bash scripts/cuda-test.sh
#   bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(libyaml-cpp-dev libyaml-cpp0.7 nlohmann-json3-dev libcli11-dev libgtest-dev libjpeg62-turbo-dev
  libjpeg62-turbo libpng-dev libpng16-16 zlib1g-dev libstb-dev libstb0 libgloo-dev)
for ignored in /.devdeps/ /.devfix/; do
  grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >>.git/info/exclude
done
downloads=$(mktemp -d)
trap 'rm -rf "$downloads"' EXIT
(cd "$downloads" && apt-get download "${packages[@]}")
rm -rf .devdeps && mkdir .devdeps
for deb in "$downloads"/*.deb; do dpkg -x "$deb" .devdeps; done
# What the build does not use, to stay within the machine's transfer limit: docs, sources, the
# static libraries (gtest's and zlib's excepted: no shared ones come with them), links that leave
# the prefix (zlib's libz.so names this machine's /lib).
rm -rf .devdeps/usr/share/doc .devdeps/usr/share/man .devdeps/usr/src
find .devdeps -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' ! -name 'libz.a' -delete
find .devdeps -type l -lname '/*' -delete

mkdir -p .devdeps/bench
cp "${VAVAE_TORCH_REF:-../shared/bench/torch_ref.py}" .devdeps/bench/

fixtures=${VAVAE_FIXTURES:-../shared/fixtures}
rm -rf .devfix && mkdir .devfix
cp -r "$fixtures"/. .devfix/
rm -rf .devfix/inception
du -sh .devdeps .devfix
