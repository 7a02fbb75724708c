#!/usr/bin/env bash
# LightningDiT's training step against PyTorch: `vavae bench dit-step` and bench/dit_ref.py (the same
# model and step in eager PyTorch, checked against fixtures/dit first) alternately on the same
# threads, medians of several rounds after warm-up. Cases: the dilemma experiment's DiT (16x4x4
# latents), configs/dit_fashion_mnist.yaml's (8x7x7), and LightningDiT-B/1 on the released
# tokenizer's latent shape (32x16x16). Last line: `ratios: dit_dilemma=X dit_fashion=X dit_b1=X`.
# Usage: bench/dit.sh [--threads N] [--rounds K] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
parse_round_args "$@"
need_python "import torch, numpy" python3-torch python3-numpy
vavae=${VAVAE:-build/vavae}
[ -n "${VAVAE:-}" ] || bash scripts/build.sh >/dev/null
fixtures=${VAVAE_FIXTURES:-../shared/fixtures}
/usr/bin/python3 bench/dit_ref.py check "$fixtures/dit/model/p1_release" >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name | depth | width | heads | channels | latent size | batch | steps
cases=(
  "dit_dilemma|4|128|4|16|4|64|20"
  "dit_fashion|4|128|4|8|7|128|10"
  "dit_b1|12|768|12|32|16|2|3"
)
printf '%-14s %11s %11s %7s %10s %10s\n' case "torch img/s" "vavae img/s" ratio "torch MB" "vavae MB"
declare -A result
for c in "${cases[@]}"; do
  IFS='|' read -r name depth width heads channels size batch steps <<<"$c"
  [ "$quick" -eq 1 ] && steps=2
  cat > "$work/$name.yaml" <<YAML
data: {data_path: unused, num_classes: 10}
model: {model_type: LightningDiT-B/1, depth: $depth, hidden_size: $width, num_heads: $heads, in_chans: $channels,
        use_qknorm: false, use_swiglu: true, use_rope: true, use_rmsnorm: true, wo_shift: false}
train: {ema_decay: 0.999, mixed_precision: "no"}
optimizer: {lr: 0.0005, beta2: 0.95}
transport: {use_cosine_loss: true, use_lognorm: true}
YAML
  t_ips=() v_ips=() t_rss=() v_rss=()
  for _ in $(seq "$rounds"); do
    t=$(/usr/bin/python3 bench/dit_ref.py step --depth "$depth" --width "$width" --heads "$heads" --channels "$channels" \
          --res "$size" --batch "$batch" --steps "$steps" --warmup 2 --threads "$threads" | tail -n 1)
    v=$($vavae bench dit-step --config "$work/$name.yaml" --res "$size" --batch "$batch" --steps "$steps" --warmup 2 \
          --threads "$threads" | tail -n 1)
    t_ips+=("$(field "$t" images_per_s)") v_ips+=("$(field "$v" images_per_s)")
    t_rss+=("$(field "$t" peak_rss_mb)") v_rss+=("$(field "$v" peak_rss_mb)")
  done
  ti=$(median "${t_ips[@]}") vi=$(median "${v_ips[@]}")
  printf '%-14s %11.1f %11.1f %6sx %10.0f %10.0f\n' "$name" "$ti" "$vi" "$(ratio "$vi" "$ti")" "$(median "${t_rss[@]}")" "$(median "${v_rss[@]}")"
  result[$name]=$(ratio "$vi" "$ti")
done
echo "$threads threads, medians of $rounds alternating rounds, commit $(git rev-parse --short HEAD)"
echo "ratios: dit_dilemma=${result[dit_dilemma]} dit_fashion=${result[dit_fashion]} dit_b1=${result[dit_b1]}"
