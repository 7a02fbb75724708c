#!/usr/bin/env bash
# Data-parallel scaling on this machine: the default run's recipe (configs/fashion_mnist_vf.yaml,
# VF loss against runs/fm's ViT, in fp32 as the README's numbers) for the same global batch, once as 1 rank x 1 thread and once as
# N ranks x 1 thread over Gloo on loopback (vavae train --nproc N), A B A B; prints the images/s of
# each, their ratio, and the nll loss of both runs at every logged step (one data order, so the
# curves should match up to the per-rank adaptive weights).
# Usage: bench/data_parallel.sh [--ranks N] [--steps S] [--batch GLOBAL] [--rounds K]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=2 steps=150 batch=32 rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ $((batch % ranks)) -eq 0 ] || { echo "error: --batch $batch is not divisible by --ranks $ranks" >&2; exit 2; }
bash scripts/build.sh >/dev/null
bash scripts/default-fm.sh
out=runs/bench_data_parallel
rm -rf "$out"
common=(--config configs/fashion_mnist_vf.yaml --max-steps "$steps"
        --set trainer.threads=1 trainer.mixed_precision=no trainer.log_every=10 trainer.val_every=100000 trainer.checkpoint_every=100000
              data.params.validation.limit=8)
rate() {  # images/s of the run's last logged step
  grep '"split":"train"' "$1/metrics.jsonl" | tail -1 | sed 's/.*"images_per_s":\([0-9.e+]*\).*/\1/'
}
for round in $(seq "$rounds"); do
  build/vavae train "${common[@]}" --set data.params.batch_size="$batch" --output "$out/one_$round" >/dev/null
  build/vavae train "${common[@]}" --set data.params.batch_size=$((batch / ranks)) --nproc "$ranks" --output "$out/many_$round" >/dev/null
  one=$(rate "$out/one_$round") many=$(rate "$out/many_$round")
  echo "round $round: 1 rank x 1 thread $one img/s, $ranks ranks x 1 thread $many img/s, ratio $(python3 -c "print(f'{$many / $one:.2f}')")"
done
echo "nll loss at the logged steps (round 1): step, 1 rank, $ranks ranks"
paste <(grep '"split":"train"' "$out/one_1/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*"train\/nll_loss":\([0-9.e+-]*\).*/\1 \2/') \
      <(grep '"split":"train"' "$out/many_1/metrics.jsonl" | sed 's/.*"train\/nll_loss":\([0-9.e+-]*\).*/\1/')
