#!/usr/bin/env bash
# The main job: installs, builds, and runs the tokenizer end to end on sample photos
# (inspect -> reconstruct with PSNR/SSIM and a grid -> encode -> decode), writing runs/demo/.
# Until the trainer lands it uses the autoencoder weights of the golden fixtures (random, so the
# reconstructions are not meant to look like the inputs); point VAVAE_CONFIG/VAVAE_WEIGHTS at a
# trained model (e.g. the released vavae-imagenet256-f16d32-dinov2.pt) to see real ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh

fixtures=${VAVAE_FIXTURES:-../shared/fixtures}
config=${VAVAE_CONFIG:-$fixtures/autoencoder/config.json}
weights=${VAVAE_WEIGHTS:-$fixtures/autoencoder/weights.safetensors}
resolution=${VAVAE_RESOLUTION:-64}
out=runs/demo
rm -rf "$out" && mkdir -p "$out/images"
for f in "$fixtures"/vit/input_*.png "$fixtures"/lpips/in0_*.png "$fixtures"/discriminator/input_*.png; do
  [ -f "$f" ] && cp "$f" "$out/images/$(basename "$(dirname "$f")")_$(basename "$f")"
done

build/vavae inspect --summary "$weights"
build/vavae reconstruct --config "$config" --weights "$weights" --input "$out/images" --resolution "$resolution" \
  --output "$out/reconstruct"
build/vavae encode --config "$config" --weights "$weights" --input "$out/images" --resolution "$resolution" \
  --output "$out/latents.safetensors"
build/vavae decode --config "$config" --weights "$weights" --input "$out/latents.safetensors" --output "$out/decoded"
echo "demo: inputs above reconstructions in $out/reconstruct/grid.png, metrics in $out/reconstruct/metrics.json"
