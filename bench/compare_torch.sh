#!/usr/bin/env bash
# Runs vavae's benchmarks side by side with the PyTorch reference (A B A B, same machine, same
# threads, same config) and prints the speed and peak-memory ratios.
# Needs Debian's PyTorch for the reference: apt-get install -y python3-torch python3-torchvision
# Usage: bench/compare_torch.sh [encode] [decode] [train-step] [--config f16d32|small|tiny]
#        [--res R] [--batch B] [--threads N] [--steps S] [--rounds K] [--disc-start N] [-- flags for both]
# Defaults: encode and decode of f16d32 at 256 px, batch 1, all cores. --disc-start N (vavae only)
# times the phase before the GAN starts, where the original still does all of its GAN work.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
threads=$(nproc) res=256 batch=1 steps=5 rounds=2 config=f16d32 disc_start=0 what=() shared=()
while [ $# -gt 0 ]; do
  case "$1" in
    encode|decode|train-step) what+=("$1"); shift ;;
    --threads) threads=$2; shift 2 ;;
    --res) res=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --disc-start) disc_start=$2; shift 2 ;;
    --) shift; shared=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#what[@]} -gt 0 ] || what=(encode decode)
ref=${VAVAE_TORCH_REF:-../shared/bench/torch_ref.py}
[ -f "$ref" ] || { echo "error: PyTorch reference $ref not found (set VAVAE_TORCH_REF)" >&2; exit 1; }
/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null ||
  { echo "error: /usr/bin/python3 lacks torch/torchvision: apt-get install -y python3-torch python3-torchvision" >&2; exit 1; }
[ -x build/vavae ] || bash scripts/build.sh


printf '%-11s %12s %12s %8s %14s %14s\n' what "torch img/s" "vavae img/s" speedup "torch RSS MB" "vavae RSS MB"
for w in "${what[@]}"; do
  common=(--config "$config" --batch "$batch" --res "$res" --steps "$steps" --threads "$threads" "${shared[@]}")
  extra=()
  [ "$w" = train-step ] && extra=(--warmup 2 --disc-start "$disc_start")
  t_ips=() v_ips=() t_rss=() v_rss=()
  for _ in $(seq "$rounds"); do
    t=$(/usr/bin/python3 "$ref" "$w" "${common[@]}" | tail -n 1)
    v=$(build/vavae bench "$w" "${common[@]}" "${extra[@]}" | tail -n 1)
    t_ips+=("$(field "$t" images_per_s)") v_ips+=("$(field "$v" images_per_s)")
    t_rss+=("$(field "$t" peak_rss_mb)") v_rss+=("$(field "$v" peak_rss_mb)")
  done
  ti=$(median "${t_ips[@]}") vi=$(median "${v_ips[@]}") tr=$(median "${t_rss[@]}") vr=$(median "${v_rss[@]}")
  printf '%-11s %12.4f %12.4f %7.2fx %14.0f %14.0f\n' "$w" "$ti" "$vi" "$(awk -v a="$vi" -v b="$ti" 'BEGIN { print a / b }')" "$tr" "$vr"
done
echo "$config, ${res} px, batch ${batch}, ${threads} threads, medians of ${rounds} alternating rounds of ${steps} steps${shared:+, flags ${shared[*]}}"
