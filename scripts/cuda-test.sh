#!/usr/bin/env bash
# Builds vavae against the CUDA LibTorch of the installed PyTorch into build-cuda/, runs every test,
# then runs the fixture-driven model, loss and trainer tests again on the GPU
# (VAVAE_TEST_DEVICE=cuda: same fixtures, same tolerances, TF32 off).
# VAVAE_PREFIX adds CMake prefixes (dependencies installed outside /usr); extra arguments go to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "cuda-test: LibTorch from $torch_prefix ($(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)'))"
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix${VAVAE_PREFIX:+;$VAVAE_PREFIX}" "$@"
cmake --build build-cuda --parallel "$(nproc)"
cd build-cuda
status=0
ctest --output-on-failure --timeout 900 -j "$(( $(nproc) / 2 ))" || status=1
echo "cuda-test: the fixture suites on the GPU"
VAVAE_TEST_DEVICE=cuda ./vavae_tests \
  --gtest_filter='AutoencoderFixture.*:ObjectiveFixture.*:Variants/ViTFixture.*:LPIPSFixture.*:Training.*' || status=1
exit $status
