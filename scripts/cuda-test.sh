#!/usr/bin/env bash
# Builds vavae against the CUDA LibTorch of the installed PyTorch into build-cuda/, runs the
# fixture-driven model, loss and trainer tests on the GPU (VAVAE_TEST_DEVICE=cuda: same fixtures,
# same tolerances, TF32 off), then every test (the GPU suites first: device time is short).
# VAVAE_PREFIX adds CMake prefixes (dependencies installed outside /usr); VAVAE_CTEST_EXCLUDE, a regex of
# tests to leave out (e.g. those whose fixtures were not copied); VAVAE_GPU_ONLY=1 stops after the GPU
# suites; extra arguments go to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
if [ -n "${VAVAE_PREFIX:-}" ]; then
  # A prefix of unpacked packages (scripts/cuda-deps.sh): its headers before the system's (a
  # libjpeg of another version there would otherwise supply jconfig.h), its libraries at run time.
  export CXXFLAGS="-isystem $VAVAE_PREFIX/include -isystem $VAVAE_PREFIX/include/x86_64-linux-gnu ${CXXFLAGS:-}"
  export LD_LIBRARY_PATH="$VAVAE_PREFIX/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "cuda-test: LibTorch from $torch_prefix ($(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)'))"
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix${VAVAE_PREFIX:+;$VAVAE_PREFIX}" "$@"
# -k 0: one build reports every translation unit that fails, not only the first.
cmake --build build-cuda --parallel "$(nproc)" -- -k 0
cd build-cuda
status=0
echo "cuda-test: the fixture suites on the GPU"
VAVAE_TEST_DEVICE=cuda ./vavae_tests \
  --gtest_filter='AutoencoderFixture.*:ObjectiveFixture.*:Variants/ViTFixture.*:LPIPSFixture.*:Training.*:AdamStep.*:Variants/DiTModel.*:DiTModel.Cfg*:Cases/DiTTransport.*:Cases/DiTSampler.*:DiTSampling.*' || status=1
[ -n "${VAVAE_GPU_ONLY:-}" ] && exit $status
echo "cuda-test: every test"
ctest --output-on-failure --timeout 900 -j "$(( $(nproc) / 2 ))" ${VAVAE_CTEST_EXCLUDE:+-E "$VAVAE_CTEST_EXCLUDE"} || status=1
exit $status
