#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer (clang) into build-asan/ and
# runs the tests of every reader of user files: weight files (safetensors, torch zip and legacy,
# the pickle machine), the crafted hostile inputs, images, IDX, configs, checkpoints and the
# crash-safety tests. Any sanitizer report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVAVAE_SANITIZE=ON >/dev/null
cmake --build build-asan --parallel "$(nproc)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
filter='Safetensors.*:TorchCheckpoint.*:*CheckpointTwin*:Weights.*:Hostile.*:Robustness.*:Data.*:Loader.*:Image.*:AutoencoderConfig.*:UpstreamConfigs.*:ConfigSchema.*:Training.ConfigErrorsNameTheKey:Training.ShippedConfigsParse'
build-asan/vavae_tests --gtest_filter="$filter"
