#!/usr/bin/env bash
# The GPU speed table: vavae (build-cuda/, from scripts/cuda-test.sh) against
# ../shared/bench/torch_ref.py on the same GPU through bench/torch_ref_on.py, alternately, medians
# of the rounds; fp32 with both libraries' defaults (TF32 in cuDNN convolutions) and bf16 autocast.
# Prints the card's name, a table and one last line:
#   gpu ratios: train_f16d32=X train_f16d32_bf16=X train_small=X encode=X encode_bf16=X decode=X decode_bf16=X
# Usage: [VAVAE_PREFIX=...] [VAVAE_TORCH_REF=...] bench/gpu.sh [--rounds K] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
parse_round_args "$@"
export BENCH_PYTHON=python3  # the machine's PyTorch (with CUDA), not Debian's
ref=${VAVAE_TORCH_REF:-../shared/bench/torch_ref.py}
[ -f "$ref" ] || { echo "error: PyTorch reference $ref not found (set VAVAE_TORCH_REF)" >&2; exit 1; }
[ -x build-cuda/vavae ] || { echo "error: build-cuda/vavae missing (run scripts/cuda-test.sh first)" >&2; exit 1; }
[ -n "${VAVAE_PREFIX:-}" ] && export LD_LIBRARY_PATH="$VAVAE_PREFIX/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), torch $(python3 -c 'import torch; print(torch.__version__)')"

# name | subcommand | config | res | batch | steps | precision
cases=(
  "train_f16d32|train-step|f16d32|256|8|10|fp32"
  "train_f16d32_bf16|train-step|f16d32|256|8|10|bf16"
  "train_small|train-step|small|64|32|10|fp32"
  "encode|encode|f16d32|256|8|20|fp32"
  "encode_bf16|encode|f16d32|256|8|20|bf16"
  "decode|decode|f16d32|256|8|20|fp32"
  "decode_bf16|decode|f16d32|256|8|20|bf16"
)
printf '%-20s %11s %11s %7s\n' case "torch img/s" "vavae img/s" ratio
summary="gpu ratios:"
for c in "${cases[@]}"; do
  IFS='|' read -r name what config res batch steps precision <<<"$c"
  [ "$quick" -eq 1 ] && steps=3
  common=(--config "$config" --batch "$batch" --res "$res" --steps "$steps" --warmup 3 --threads "$threads")
  t_ips=() v_ips=()
  for _ in $(seq "$rounds"); do
    t=$(VAVAE_TORCH_REF="$ref" VAVAE_REF_DEVICE=cuda VAVAE_REF_PRECISION="$precision" python3 bench/torch_ref_on.py "$what" "${common[@]}" | tail -n 1)
    mixed=no
    [ "$precision" = bf16 ] && mixed=bf16
    v=$(build-cuda/vavae bench "$what" "${common[@]}" --device cuda --disc-start 0 --mixed-precision "$mixed" 2>/dev/null | tail -n 1)
    t_ips+=("$(field "$t" images_per_s)") v_ips+=("$(field "$v" images_per_s)")
  done
  ti=$(median "${t_ips[@]}") vi=$(median "${v_ips[@]}")
  printf '%-20s %11.1f %11.1f %6sx\n' "$name" "$ti" "$vi" "$(ratio "$vi" "$ti")"
  summary+=" $name=$(ratio "$vi" "$ti")"
done
echo "medians of $rounds alternating rounds; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "$summary"
