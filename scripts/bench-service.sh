#!/usr/bin/env bash
# Load run for the reference service: bench/service_load in several configurations; writes the
# "reference service under load" section of docs/BENCHMARKS.md. Usage: scripts/bench-service.sh
# [seconds per configuration = 10]. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
out="build/bench-service"
rm -rf "$out" && mkdir -p "$out"
cmake --preset release >/dev/null
cmake --build --preset release --target service_load procpool-service
{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r), cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "procpool: $(git describe --always --dirty), $(g++ --version | head -1), release preset"
  echo "command: build/release/bench/service_load --seconds $seconds --clients N [--sync normal]"
} > "$out/meta.txt"
run() {  # file description args...
  local file="$1" desc="$2"
  shift 2
  echo "# $desc" > "$out/$file.txt"
  ./build/release/bench/service_load --seconds "$seconds" "$@" | tee -a "$out/$file.txt"
}
run 1-c1 "sync=full, 1 client" --clients 1
run 2-c16 "sync=full, 16 clients" --clients 16
run 3-c64 "sync=full, 64 clients" --clients 64
run 4-c16-normal "sync=normal, 16 clients" --clients 16 --sync normal
python3 bench/service_report.py "$out" docs/BENCHMARKS.md
echo "wrote the service section of docs/BENCHMARKS.md"
