#!/usr/bin/env bash
# What the VF loss does at the default run's scale: the default run's recipe
# (configs/fashion_mnist_vf.yaml) trained with and without the VF loss for the same steps,
# then both tokenizers judged the same way on the 10,000 Fashion-MNIST test images:
# reconstruction (vavae eval) and latent space (vavae extract-latents + vavae latent-report).
# Reuses runs/fm, runs/fashion_mnist (the default run's output) and runs/fashion_mnist_novf when
# they hold a finished model. Results: runs/vf_ablation/ (latent_report/latent_report.html,
# eval_*/summary.json and worst.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
vavae=build/vavae
out=runs/vf_ablation
start=$(date +%s)
bash scripts/default-fm.sh
[ -f runs/fashion_mnist/autoencoder.safetensors ] ||
  $vavae train --config configs/fashion_mnist_vf.yaml --output runs/fashion_mnist
[ -f runs/fashion_mnist_novf/autoencoder.safetensors ] ||
  $vavae train --config configs/fashion_mnist_vf.yaml --set model.params.use_vf=none --output runs/fashion_mnist_novf
for run in fashion_mnist fashion_mnist_novf; do
  model=(--config runs/$run/config.yaml --weights runs/$run/autoencoder.safetensors)
  $vavae extract-latents "${model[@]}" --data fashion-mnist:test --resolution 28 --batch-size 250 --output $out/latents_$run
  $vavae eval "${model[@]}" --data fashion-mnist:test --resolution 28 --batch-size 50 --no-images --output $out/eval_$run |
    tee $out/eval_$run.txt
done
$vavae latent-report $out/latents_fashion_mnist $out/latents_fashion_mnist_novf --name "VF loss" --name "no VF loss" \
  --output $out/latent_report
end=$(date +%s)
echo "vf_ablation: $(( (end - start) / 60 ))m$(( (end - start) % 60 ))s; open $out/latent_report/latent_report.html"
for run in fashion_mnist fashion_mnist_novf; do echo "== $run"; grep -E "PSNR|SSIM" $out/eval_$run.txt; done
