#!/usr/bin/env bash
# The default run's foundation model: a small ViT pre-trained as a masked autoencoder on the
# Fashion-MNIST training split (vavae train-fm), in bf16 where the CPU or GPU computes it natively.
# Kept in runs/fm/fm.safetensors and reused when it exists (delete it to train a new one).
# Usage: scripts/default-fm.sh [vavae binary]
set -euo pipefail
cd "$(dirname "$0")/.."
vavae=${1:-build/vavae}
if [ -f runs/fm/fm.safetensors ]; then
  echo "reusing the foundation model runs/fm/fm.safetensors (delete it to train a new one)"
else
  $vavae train-fm --data fashion-mnist:train --resolution 28 --pad 0 --mixed-precision auto --output runs/fm
fi
