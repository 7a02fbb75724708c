#!/usr/bin/env bash
# Installs the dependencies, builds, and runs every test (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build && ctest --output-on-failure --timeout 1500
