#!/usr/bin/env bash
# The speed table in one command: builds in Release, installs Debian's PyTorch for the reference
# when missing, then runs `vavae bench` and ../shared/bench/torch_ref.py alternately (A B A B, same
# threads, same config), each after its own warm-up, and prints medians per case: images/s of
# both, the ratio, peak RSS of both, and achieved GFLOP/s (FLOPs counted analytically by
# torch_ref.py flops) against this machine's measured fp32 matmul peak. The last line is
#   ratios: train_small=X train_tiny=X train_f16d32=X encode=X decode=X rss=X
# (ours over PyTorch's: throughput ratios, then the peak-memory ratio of the worst case).
# Usage: bench/run.sh [--threads N] [--rounds K] [--quick] [--reference-huge-pages]
#   (--quick: fewer steps, for a smoke test; --reference-huge-pages: the reference on huge pages too)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
# --reference-huge-pages: the reference starts with the glibc tunable vavae sets for itself.
reference_env=() args=()
for a in "$@"; do
  if [ "$a" = --reference-huge-pages ]; then reference_env=("GLIBC_TUNABLES=glibc.malloc.hugetlb=1"); else args+=("$a"); fi
done
parse_round_args "${args[@]}"
ref=${VAVAE_TORCH_REF:-../shared/bench/torch_ref.py}
[ -f "$ref" ] || { echo "error: PyTorch reference $ref not found (set VAVAE_TORCH_REF)" >&2; exit 1; }
need_python "import torch, torchvision" python3-torch python3-torchvision
bash scripts/build.sh >/dev/null

peak=$(field "$(/usr/bin/python3 "$ref" peak --threads "$threads" | tail -n 1)" matmul2048_gflops)

# name | subcommand | config | res | batch | steps | vavae-only flags | reference-only flags | bf16
# (before disc_start the original still runs all of its GAN passes and multiplies them by 0: the
# reference's full step is what it does then). bf16 rows: both sides under bf16 autocast (the
# reference through bench/torch_ref_on.py), run where the CPU computes bf16 natively.
cases=(
  "train_tiny|train-step|tiny|32|8|7|--disc-start 0|"
  "train_small|train-step|small|64|4|5|--disc-start 0|"
  "train_small_before_gan|train-step|small|64|4|5|--disc-start 1000000|"
  "train_f16d32|train-step|f16d32|256|1|3|--disc-start 0|"
  "encode|encode|f16d32|256|1|5||"
  "decode|decode|f16d32|256|1|5||"
)
if grep -qw avx512_bf16 /proc/cpuinfo; then
  cases+=(
    "train_tiny_bf16|train-step|tiny|32|8|7|--disc-start 0 --mixed-precision bf16||bf16"
    "train_small_bf16|train-step|small|64|4|5|--disc-start 0 --mixed-precision bf16||bf16"
    "encode_bf16|encode|f16d32|256|1|5|--mixed-precision bf16||bf16"
    "decode_bf16|decode|f16d32|256|1|5|--mixed-precision bf16||bf16"
  )
fi
printf '%-24s %11s %11s %7s %10s %10s %9s %9s %6s\n' case "torch img/s" "vavae img/s" ratio "torch MB" "vavae MB" "torch GF/s" "vavae GF/s" "%peak"
declare -A result
worst_rss=0
for c in "${cases[@]}"; do
  IFS='|' read -r name what config res batch steps vflags tflags bf16 <<<"$c"
  case_ref=$ref
  [ -n "$bf16" ] && case_ref=bench/torch_ref_on.py
  [ "$quick" -eq 1 ] && steps=2
  common=(--config "$config" --batch "$batch" --res "$res" --steps "$steps" --threads "$threads")
  warm=()
  [ "$what" = train-step ] && warm=(--warmup 2)
  t_ips=() v_ips=() t_rss=() v_rss=()
  for _ in $(seq "$rounds"); do
    # shellcheck disable=SC2086
    t=$(env "${reference_env[@]}" VAVAE_TORCH_REF="$ref" VAVAE_REF_PRECISION=${bf16:-fp32} /usr/bin/python3 "$case_ref" "$what" "${common[@]}" "${warm[@]}" $tflags | tail -n 1)
    # shellcheck disable=SC2086
    v=$(build/vavae bench "$what" "${common[@]}" "${warm[@]}" $vflags | tail -n 1)
    t_ips+=("$(field "$t" images_per_s)") v_ips+=("$(field "$v" images_per_s)")
    t_rss+=("$(field "$t" peak_rss_mb)") v_rss+=("$(field "$v" peak_rss_mb)")
  done
  ti=$(median "${t_ips[@]}") vi=$(median "${v_ips[@]}") tr=$(median "${t_rss[@]}") vr=$(median "${v_rss[@]}")
  # FLOPs per image of the case, from the reference's analytic count.
  flops=$(/usr/bin/python3 "$ref" flops --config "$config" --batch "$batch" --res "$res" | tail -n 1)
  case "$what" in
    train-step) per_batch=$(field "$flops" train_step_gflop) ;;
    encode) per_batch=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['fwd_gflop']['encoder'])" "$flops") ;;
    decode) per_batch=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['fwd_gflop']['decoder'])" "$flops") ;;
  esac
  [ "$name" = train_small_before_gan ] && per_batch=nan  # the count assumes the GAN passes
  tg=$(awk -v g="$per_batch" -v i="$ti" -v b="$batch" 'BEGIN { printf "%.1f", g * i / b }')
  vg=$(awk -v g="$per_batch" -v i="$vi" -v b="$batch" 'BEGIN { printf "%.1f", g * i / b }')
  pct=$(awk -v v="$vg" -v p="$peak" 'BEGIN { printf "%.0f", 100 * v / p }')
  printf '%-24s %11.3f %11.3f %6sx %10.0f %10.0f %9s %9s %5s%%\n' "$name" "$ti" "$vi" "$(ratio "$vi" "$ti")" "$tr" "$vr" "$tg" "$vg" "$pct"
  result[$name]=$(ratio "$vi" "$ti")
  [ -n "$bf16" ] && continue  # the summary line compares fp32 with fp32
  rss=$(ratio "$vr" "$tr")
  worst_rss=$(awk -v a="$rss" -v b="$worst_rss" 'BEGIN { print (a > b) ? a : b }')
done
[ ${#reference_env[@]} -gt 0 ] && echo "reference run with ${reference_env[*]} (huge pages, as vavae)"
echo "$threads threads, medians of $rounds alternating rounds; fp32 matmul peak of this machine: $peak GFLOP/s; commit $(git rev-parse --short HEAD)"
echo "ratios: train_small=${result[train_small]} train_tiny=${result[train_tiny]} train_f16d32=${result[train_f16d32]} encode=${result[encode]} decode=${result[decode]} rss=${worst_rss}"
if [ -n "${result[train_small_bf16]:-}" ]; then
  echo "bf16 ratios (both sides under bf16 autocast): train_small=${result[train_small_bf16]} train_tiny=${result[train_tiny_bf16]} encode=${result[encode_bf16]} decode=${result[decode_bf16]}"
fi
