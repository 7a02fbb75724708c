#!/usr/bin/env bash
# The main job: installs, builds, pre-trains the foundation model (vavae train-fm, reused when
# runs/fm/fm.safetensors exists), trains a VA-VAE with the VF loss on Fashion-MNIST
# (configs/fashion_mnist_vf.yaml), evaluates it on the test split and writes runs/fashion_mnist/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
start=$(date +%s)
bash scripts/default-fm.sh
build/vavae train --config configs/fashion_mnist_vf.yaml --output runs/fashion_mnist "$@"
end=$(date +%s)
echo "default run: $(( (end - start) / 60 ))m$(( (end - start) % 60 ))s of training and evaluation"
echo "results: runs/fashion_mnist/report.html, reconstructions in runs/fashion_mnist/images/latest.png"
