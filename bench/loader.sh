#!/usr/bin/env bash
# One data-loader worker against Pillow: JPEG decode + resize + random crop + flip + to float
# tensor, images/s on one core, on ImageNet-like 500x375 JPEGs made from the photos Debian ships
# (python3-skimage). Rows: 256 and 128 px; full decode (Pillow's exact pixels on both sides) and
# DCT-scaled decode (ours --jpeg-dct-scaling, Pillow's draft()). Alternating rounds, medians.
# Usage: bench/loader.sh [--images N] [--rounds K]
set -euo pipefail
cd "$(dirname "$0")/.."
images=400 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --images) images=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
py=/usr/bin/python3
if ! $py -c 'import PIL, numpy' 2>/dev/null || [ ! -d /usr/lib/python3/dist-packages/skimage/data ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q python3-pil python3-numpy python3-skimage >/dev/null
fi
bash scripts/build.sh >/dev/null
photos=runs/bench_loader/photos/all
[ "$(ls "$photos" 2>/dev/null | wc -l)" = "$images" ] || { rm -rf "$photos"; $py bench/make_photos.py "$photos" "$images"; }
field() { sed "s/.*\"$1\": *\([0-9.e+]*\).*/\1/"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-5s %-12s %12s %12s %7s\n" res decode "vavae img/s" "Pillow img/s" ratio
for res in 256 128; do
  for mode in full dct; do
    ours=() theirs=()
    flag=""; [ $mode = dct ] && flag=--jpeg-dct-scaling
    draft=""; [ $mode = dct ] && draft=--draft
    for round in $(seq "$rounds"); do
      ours+=("$(build/vavae bench loader --data "${photos%/all}" --res $res --batch 8 --steps 3 --threads 1 $flag | field images_per_s)")
      theirs+=("$($py bench/loader_pillow.py "${photos%/all}" $res 8 3 $draft | field images_per_s)")
    done
    a=$(printf "%s\n" "${ours[@]}" | median) b=$(printf "%s\n" "${theirs[@]}" | median)
    printf "%-5s %-12s %12.0f %12.0f %7.2f\n" $res $mode "$a" "$b" "$($py -c "print($a / $b)")"
  done
done
