#!/usr/bin/env bash
# Installs the dependencies, builds, runs the parser and robustness tests under the sanitizers, and
# runs every test (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# The readers of user files and the crash-safety tests again under ASan + UBSan (build-asan/).
bash scripts/sanitize.sh
cd build && ctest --output-on-failure --timeout 1500
