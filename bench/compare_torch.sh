#!/usr/bin/env bash
# Runs vavae's inference benchmarks side by side with the PyTorch reference (A B A B, same
# machine, same threads) and prints the speed and peak-memory ratios.
# Needs Debian's PyTorch for the reference: apt-get install -y python3-torch
# Usage: bench/compare_torch.sh [--threads N] [--res R] [--batch B] [--steps S] [--rounds K]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc) res=256 batch=1 steps=5 rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --res) res=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ref=${VAVAE_TORCH_REF:-../shared/bench/torch_ref.py}
[ -f "$ref" ] || { echo "error: PyTorch reference $ref not found (set VAVAE_TORCH_REF)" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "error: /usr/bin/python3 has no torch: apt-get install -y python3-torch" >&2; exit 1; }
[ -x build/vavae ] || bash scripts/build.sh

field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-8s %12s %12s %8s %14s %14s\n' what "torch img/s" "vavae img/s" speedup "torch RSS MB" "vavae RSS MB"
for what in encode decode; do
  t_ips=() v_ips=() t_rss=() v_rss=()
  for _ in $(seq "$rounds"); do
    t=$(/usr/bin/python3 "$ref" "$what" --config f16d32 --batch "$batch" --res "$res" --steps "$steps" --threads "$threads" | tail -n 1)
    v=$(build/vavae bench "$what" --batch "$batch" --res "$res" --steps "$steps" --threads "$threads" | tail -n 1)
    t_ips+=("$(field "$t" images_per_s)") v_ips+=("$(field "$v" images_per_s)")
    t_rss+=("$(field "$t" peak_rss_mb)") v_rss+=("$(field "$v" peak_rss_mb)")
  done
  ti=$(median "${t_ips[@]}") vi=$(median "${v_ips[@]}") tr=$(median "${t_rss[@]}") vr=$(median "${v_rss[@]}")
  printf '%-8s %12.4f %12.4f %7.2fx %14.0f %14.0f\n' "$what" "$ti" "$vi" "$(echo "$vi / $ti" | bc -l)" "$tr" "$vr"
done
echo "f16d32, ${res} px, batch ${batch}, ${threads} threads, medians of ${rounds} alternating rounds of ${steps} steps"
