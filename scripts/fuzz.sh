#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) into build-fuzz/ and runs each for SECONDS
# (default 60), seeded from the fixtures and tests/hostile. New crashes land in fuzz/findings/;
# once fixed, a crashing input is kept under tests/hostile/fuzz/ as a regression input, which the
# test suite replays (Hostile.FuzzRegressionInputs).
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors torch_checkpoint pickle idx image config)
bash scripts/install-deps.sh
command -v clang++ >/dev/null || { apt-get install -y -qq clang libclang-rt-14-dev >/dev/null; }
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVAVAE_FUZZ=ON >/dev/null
cmake --build build-fuzz --parallel "$(nproc)"

fixtures=${VAVAE_FIXTURES:-../shared/fixtures}
seed() {  # seed corpus of one harness from the fixtures and the hostile inputs
  local name=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $name in
    safetensors) find "$fixtures" tests/hostile -name '*.safetensors' -size -2M -exec cp {} "$dir" \; ;;
    torch_checkpoint) find "$fixtures/checkpoints" tests/hostile -maxdepth 1 \( -name '*.pt' -o -name '*.pth' -o -name '*.ckpt' \) -size -2M -exec cp {} "$dir" \; ;;
    pickle) for f in "$fixtures"/checkpoints/*.pt tests/hostile/*.pt; do unzip -p "$f" '*/data.pkl' > "$dir/$(basename "$f").pkl" 2>/dev/null || true; done ;;
    idx) printf '\x00\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x02abcdefgh' > "$dir/plain" ;;
    image) find "$fixtures" tests/hostile/images \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' \) -size -256k -exec cp {} "$dir" \; ;;
    config) cp configs/*.yaml tests/hostile/*.yaml "$dir" ;;
  esac
}
mkdir -p fuzz/findings
status=0
for name in "${harnesses[@]}"; do
  seed "$name"
  echo "fuzz: $name for ${seconds}s ($(ls "fuzz/corpus/$name" | wc -l) seeds)"
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
    build-fuzz/fuzz_"$name" "fuzz/corpus/$name" -max_total_time="$seconds" -rss_limit_mb=3072 -malloc_limit_mb=3072 \
      -timeout=20 -artifact_prefix="fuzz/findings/${name}-" -print_final_stats=1 2>&1 |
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY|Test unit written" || true
  if ls fuzz/findings/"$name"-* >/dev/null 2>&1; then status=1; echo "fuzz: $name found crashes: fuzz/findings/$name-*"; fi
done
exit $status
