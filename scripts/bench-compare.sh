#!/usr/bin/env bash
# Runs procpool's workloads beside the peers' in one comparison and writes docs/BENCHMARKS.md and
# docs/benchmarks.png. Each run: ../shared/peers/run_peers.sh, then bench/workloads unpinned, then
# W1/W2 under `taskset -c 0`. Usage: scripts/bench-compare.sh [runs=3]. Takes ~2.5 min per run.
# Needs scripts/install-bench-deps.sh (gnuplot, node, the Python peers).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
peers="${PEERS_DIR:-$(pwd)/../shared/peers}"
out="build/bench-compare"
rm -rf "$out" && mkdir -p "$out"
cmake --preset release >/dev/null
cmake --build --preset release --target workloads
{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r), cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "procpool: $(git describe --always --dirty), $(g++ --version | head -1), release preset"
  echo "boost: $(grep -m1 'define BOOST_LIB_VERSION' /usr/include/boost/version.hpp | cut -d'"' -f2)"
  echo "python: $(python3 --version 2>&1), node: $(node --version 2>/dev/null || echo none)"
  echo "commands per run: $peers/run_peers.sh; build/release/bench/workloads;"
  echo "  taskset -c 0 build/release/bench/workloads --workloads w1,w2 --prefix procpool_pinned1core"
} > "$out/meta.txt"
for i in $(seq 1 "$runs"); do
  echo "=== run $i of $runs ==="
  "$peers/run_peers.sh" > "$out/run$i.txt"
  ./build/release/bench/workloads >> "$out/run$i.txt"
  taskset -c 0 ./build/release/bench/workloads --workloads w1,w2 --prefix procpool_pinned1core \
    >> "$out/run$i.txt"
  grep '^procpool' "$out/run$i.txt"
done
python3 bench/make_report.py "$out" docs/BENCHMARKS.md docs/benchmarks.png
echo "wrote docs/BENCHMARKS.md and docs/benchmarks.png"
