#!/usr/bin/env bash
# The paper's reconstruction-generation dilemma on Fashion-MNIST (32 px: 28 padded by 2):
#   low   f8, 4 latent channels      (a real bottleneck: 4x4x4 = 64 numbers per image)
#   high  f8, 16 latent channels     (reconstructs better)
#   vf    f8, 16 channels + VF loss  (upstream's settings: vf_weight 0.1, margins 0.5 / 0.25)
# The same tokenizer recipe and steps for all three, then the same small LightningDiT for the same
# steps on each one's latents. Reconstruction: PSNR and rFD on the test split; generation: gFD of
# class-balanced samples against the training split, at several DiT lengths, without and with CFG
# (guiding every channel: upstream's 3-channel guidance would guide 3 of 4 channels in one latent
# and 3 of 16 in the others).
# FD here is a Frechet distance in the features of a classifier trained by this script on the
# training split (no Inception weights exist here): it is not Inception FID, and only numbers from
# this script compare with each other. The VF teacher is a separately trained MAE ViT, never the
# feature network. Results: runs/dilemma/results.md (and .json), sample grids runs/dilemma/grid_*.png.
# Usage: [VAVAE=binary] [DILEMMA_SEEDS="0 1"] experiments/dilemma.sh [--quick]   (--quick: a few steps of everything, to check the wiring)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = --quick ] && quick=1
out=${DILEMMA_OUT:-runs/dilemma}
[ $quick = 1 ] && out=${DILEMMA_OUT:-runs/dilemma_quick}
if [ $quick = 1 ]; then
  feat_steps=60 fm_steps=20 ae_steps=40 dit_steps=40 dit_ckpt=20 dit_batch=128 samples=200 eval_limit=200 sample_steps=6
  dit_seeds=(0 1) eval_steps=(20 40)
else
  # Sized for under two hours on 2 cores with one DiT seed (101 minutes measured at 26e1529).
  feat_steps=2000 fm_steps=3000 ae_steps=3000 dit_steps=10000 dit_ckpt=1000 dit_batch=64 samples=2000 eval_limit=0 sample_steps=25
  dit_seeds=(0) eval_steps=(1000 2000 3000 4000 6000 8000 10000)
fi
# DILEMMA_SEEDS="0 1": a DiT per tokenizer and seed (about 45 minutes more than one seed).
if [ -n "${DILEMMA_SEEDS:-}" ]; then read -r -a dit_seeds <<< "$DILEMMA_SEEDS"; fi
vavae=${VAVAE:-build/vavae}  # VAVAE=path: a binary built elsewhere (e.g. build-cuda/vavae), used as it is
[ -n "${VAVAE:-}" ] || bash scripts/build.sh >/dev/null
mkdir -p "$out"
start=$(date +%s)
stamp() { echo "[$(( ($(date +%s) - start) / 60 ))m] $*"; }
# A training stage is done when its last checkpoint exists; one stopped part way (Ctrl-C, a lost
# session) continues from its newest checkpoint.
finished() { [ -f "$1/checkpoints/step_$(printf %08d "$2").safetensors" ]; }
resume_flag() { [ -n "$(ls "$1/checkpoints" 2>/dev/null)" ] && echo --resume || true; }

# 1. The feature network for FD (a classifier; 32 px, padded as the tokenizers see the data).
[ -f $out/feature_net/feature_net.safetensors ] ||
  $vavae train-feature-net --resolution 32 --pad 2 --steps $feat_steps --output $out/feature_net | tail -1
feat=(--feature-net $out/feature_net/feature_net.safetensors)
# The training split's statistics once (the reference of every gFD), and the distance of the real
# test images to it: the floor any generator is measured against.
[ -f $out/train_stats.npz ] ||
  $vavae fid fashion-mnist:train fashion-mnist:test "${feat[@]}" --save-stats $out/train_stats.npz | tail -1 | awk '{printf "%.4g", $NF}' > $out/real_test_fd.txt
stamp "feature network ready; real test images at FD $(cat $out/real_test_fd.txt) from the training split"

# 2. The VF teacher: an MAE ViT whose 8-pixel patches give the 4x4 latent grid of f8 at 32 px.
[ -f $out/teacher/fm.safetensors ] ||
  $vavae train-fm --data fashion-mnist:train --resolution 32 --pad 2 --patch 8 --dim 128 --depth 4 --heads 4 \
    --epochs 1000 --max-steps $fm_steps --output $out/teacher | tail -3
stamp "teacher ready"

# 3. Three tokenizers, one recipe.
tokenizer_config() {  # name channels use_vf
  cat <<YAML
model:
  base_learning_rate: 4.0e-04
  target: ldm.models.autoencoder.AutoencoderKL
  params:
    embed_dim: $2
    use_vf: $3
    reverse_proj: true
    lossconfig:
      target: ldm.modules.losses.LPIPSWithDiscriminator
      params: {disc_start: 100000000, kl_weight: 1.0e-06, disc_weight: 0.5, perceptual_weight: 0.0,
               vf_weight: 0.1, adaptive_vf: true, cos_margin: 0.5, distmat_margin: 0.25}
    ddconfig: {double_z: true, z_channels: $2, resolution: 32, in_channels: 3, out_ch: 3, ch: 32,
               ch_mult: [1, 2, 2, 4], num_res_blocks: 1, attn_resolutions: [4], dropout: 0.0}
data:
  params:
    batch_size: 32
    num_workers: 2
    train: {source: "fashion-mnist:train", resolution: 32, pad: 2, random_crop: true, flip: true}
    validation: {source: "fashion-mnist:test", resolution: 32, pad: 2, limit: 500}
trainer: {max_steps: $ae_steps, log_every: 50, val_every: 2000, checkpoint_every: 2000, keep_checkpoints: 1, val_images: 16, seed: 0}
YAML
}
dit_config() {  # tokenizer channels seed
  cat <<YAML
data: {data_path: $out/latents_$1, num_classes: 10, latent_norm: true, latent_multiplier: 1.0}
vae: {config: $out/ae_$1/config.yaml, weights: $out/ae_$1/autoencoder.safetensors}
model: {model_type: LightningDiT-B/1, depth: 4, hidden_size: 128, num_heads: 4, in_chans: $2,
        use_qknorm: false, use_swiglu: true, use_rope: true, use_rmsnorm: true, wo_shift: false}
train: {max_steps: $dit_steps, global_batch_size: $dit_batch, global_seed: $3, log_every: 100,
        ckpt_every: $dit_ckpt, keep_checkpoints: 1000, ema_decay: 0.999, mixed_precision: no}
optimizer: {lr: 0.0005, beta2: 0.95}
transport: {path_type: Linear, prediction: velocity, use_cosine_loss: true, use_lognorm: true}
sample: {mode: ODE, sampling_method: euler, num_sampling_steps: $sample_steps, cfg_scale: 1.0, cfg_interval: true,
         cfg_interval_start: 0.11, cfg_channels: 0, timestep_shift: 0.3, per_proc_batch_size: 250, fid_num: $samples}
YAML
}
names=(low high vf)
declare -A channels=([low]=4 [high]=16 [vf]=16) use_vf=([low]=none [high]=none [vf]=$out/teacher/fm.safetensors)
declare -A psnr rfd
for n in "${names[@]}"; do
  tokenizer_config $n ${channels[$n]} ${use_vf[$n]} > $out/ae_$n.yaml
  finished $out/ae_$n $ae_steps ||
    $vavae train --config $out/ae_$n.yaml --output $out/ae_$n $(resume_flag $out/ae_$n) | grep -E "^(evaluation|training)" || true
  model=(--config $out/ae_$n/config.yaml --weights $out/ae_$n/autoencoder.safetensors)
  limit=(); [ $eval_limit -gt 0 ] && limit=(--limit $eval_limit)
  [ -f $out/eval_$n/summary.json ] || $vavae eval "${model[@]}" --data fashion-mnist:test --resolution 32 --pad 2 --batch-size 100 "${limit[@]}" --output $out/eval_$n >/dev/null
  psnr[$n]=$(python3 -c "import json; print(round(json.load(open('$out/eval_$n/summary.json'))['psnr'], 2))")
  rfd[$n]=$($vavae fid $out/eval_$n/ref_images $out/eval_$n/decoded_images "${feat[@]}" | tail -1 | awk '{printf "%.4g", $NF}')
  if [ ! -f $out/latents_$n.complete ]; then
    rm -rf $out/latents_$n
    $vavae extract-latents "${model[@]}" --data fashion-mnist:train --resolution 32 --pad 2 --batch-size 500 --output $out/latents_$n >/dev/null
    touch $out/latents_$n.complete
  fi
  stamp "tokenizer $n: PSNR ${psnr[$n]} dB, rFD ${rfd[$n]}"
done

# 4. The same LightningDiT on each latent space, for each seed (seed 0 in dit_<tokenizer>, seed s in
# dit_<tokenizer>_seed<s>). This DiT is too small to gain from a second thread (each step's matrices
# are 1024x128), so the trainings run side by side, one thread each, as many at once as there are cores.
run_name() { [ "$2" = 0 ] && echo "$1" || echo "$1_seed$2"; }
runs=()
for s in "${dit_seeds[@]}"; do for n in "${names[@]}"; do runs+=("$n $s"); done; done
parallel=$(nproc)
for run in "${runs[@]}"; do
  read -r n s <<< "$run"; r=$(run_name $n $s)
  dit_config $n ${channels[$n]} $s > $out/dit_$r.yaml
  finished $out/dit_$r $dit_steps && continue
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  $vavae dit train --config $out/dit_$r.yaml --set train.threads=1 --output $out/dit_$r $(resume_flag $out/dit_$r) > $out/dit_$r.log 2>&1 &
done
wait
for run in "${runs[@]}"; do
  read -r n s <<< "$run"; r=$(run_name $n $s)
  finished $out/dit_$r $dit_steps || { echo "dit train $r did not finish: see $out/dit_$r.log" >&2; exit 1; }
done
stamp "DiTs trained"
# gFD at the evaluated steps, without CFG, and with CFG 2 at the last.
declare -A gfd
for run in "${runs[@]}"; do
  read -r n s <<< "$run"; r=$(run_name $n $s)
  for step in "${eval_steps[@]}"; do
    ckpt=$out/dit_$r/checkpoints/step_$(printf %08d $step).safetensors
    cfgs=(1.0); [ $step = $dit_steps ] && cfgs=(1.0 2.0)
    for cfg in "${cfgs[@]}"; do
      folder=$out/samples_${r}_${step}_cfg$cfg
      [ -f $folder/labels.txt ] || $vavae dit sample --config $out/dit_$r.yaml --weights $ckpt --num $samples --cfg-scale $cfg --output $folder >/dev/null
      gfd[$r,$step,$cfg]=$($vavae fid $out/train_stats.npz $folder "${feat[@]}" | tail -1 | awk '{printf "%.4g", $NF}')
    done
    stamp "dit $r step $step: gFD ${gfd[$r,$step,1.0]} (no CFG)${gfd[$r,$step,2.0]:+, ${gfd[$r,$step,2.0]} (CFG 2)}"
  done
  if [ $s = 0 ]; then $vavae dit sample --config $out/dit_$r.yaml --weights $out/dit_$r/ema.safetensors --num 100 \
    --labels 0,1,2,3,4,5,6,7,8,9 --cfg-scale 2.0 --grid $out/grid_$n.png >/dev/null; fi
done

# 5. The table: one row per tokenizer and seed, then each tokenizer's mean over the seeds.
mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print('%.4g' % (sum(v)/len(v)))" "$@"; }
{
  echo "| tokenizer | latent | DiT seed | PSNR (dB) | rFD | $(for s in "${eval_steps[@]}"; do printf 'gFD @%s | ' $s; done)gFD @$dit_steps, CFG 2 |"
  echo "|---|---|---|---:|---:|$(for s in "${eval_steps[@]}"; do printf -- '---:|'; done)---:|"
  for n in "${names[@]}"; do
    latent="4x4x${channels[$n]}$([ $n = vf ] && echo ' + VF' || true)"
    for s in "${dit_seeds[@]}"; do
      r=$(run_name $n $s); row="| $n | $latent | $s | ${psnr[$n]} | ${rfd[$n]} |"
      for step in "${eval_steps[@]}"; do row="$row ${gfd[$r,$step,1.0]} |"; done
      echo "$row ${gfd[$r,$dit_steps,2.0]} |"
    done
    if [ ${#dit_seeds[@]} -gt 1 ]; then
      row="| **$n** | $latent | mean | ${psnr[$n]} | ${rfd[$n]} |"
      for step in "${eval_steps[@]}" last; do
        key=$step cfg=1.0; [ $step = last ] && key=$dit_steps cfg=2.0
        row="$row **$(mean $(for s in "${dit_seeds[@]}"; do echo ${gfd[$(run_name $n $s),$key,$cfg]}; done))** |"
      done
      echo "$row"
    fi
  done
  echo
  echo "FD: Frechet distance in the features of $out/feature_net (a classifier trained here), not Inception FID."
  echo "Real test images are at FD $(cat $out/real_test_fd.txt) from the training split."
  echo "gFD: $samples class-balanced samples against the training split. Run time: $(( ($(date +%s) - start) / 60 )) minutes."
} > $out/results.md
cat $out/results.md
