# Shared by the benchmark scripts (sourced): arguments, Debian's Python packages for the references,
# and the arithmetic of the tables.

# --threads N, --rounds K and --quick into $threads, $rounds and $quick (defaults: all cores, 3, 0).
parse_round_args() {
  threads=$(nproc) rounds=3 quick=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --threads) threads=$2; shift 2 ;;
      --rounds) rounds=$2; shift 2 ;;
      --quick) quick=1; rounds=1; shift ;;
      *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
  done
}

# need_python "import torch, numpy" python3-torch python3-numpy: installs the packages when the
# import fails in Debian's /usr/bin/python3.
need_python() {
  local imports=$1; shift
  /usr/bin/python3 -c "$imports" 2>/dev/null && return
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "bench: installing $* for the reference"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

field() { "${BENCH_PYTHON:-/usr/bin/python3}" -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 'nan'))" "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
