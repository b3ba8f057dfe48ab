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
  echo "command: build/release/bench/service_load --seconds $seconds --clients N [--sync normal] [--task sleep --ms M] [--db postgresql://... --instances I]"
} > "$out/meta.txt"
run() {  # file description args...
  local file="$1" desc="$2"
  shift 2
  echo "# $desc" > "$out/$file.txt"
  ./build/release/bench/service_load --seconds "$seconds" "$@" 2>>"$out/stderr.log" | tee -a "$out/$file.txt"
}
run 01-c1 "SQLite sync=full, 1 client" --clients 1
run 02-c16 "SQLite sync=full, 16 clients" --clients 16
run 03-c64 "SQLite sync=full, 64 clients" --clients 64
run 04-c16-normal "SQLite sync=normal, 16 clients" --clients 16 --sync normal
run 05-c16-prefetch "SQLite sync=full, 16 clients, --prefetch 2" --clients 16 --prefetch 2
run 06-c16-sleep0 "SQLite, sleep 0 ms jobs, 16 clients" --clients 16 --task sleep --ms 0

# PostgreSQL: a throwaway server on a Unix socket; a fresh database per row.
source scripts/lib/throwaway-pg.sh
trap pg_down EXIT
pg_up
echo "postgresql: $(psql "$PG_URL" -Atc 'SHOW server_version'), throwaway server, Unix socket, defaults + shared_buffers=128MB" >> "$out/meta.txt"
row=0
pg_run() {  # file description instances args...
  local file="$1" desc="$2" instances="$3"
  shift 3
  row=$((row + 1))
  psql "$PG_URL" -qc "CREATE DATABASE bench_$row"
  run "$file" "$desc" --db "postgresql://procpool@/bench_$row?host=$PG_DIR" --instances "$instances" "$@"
}
pg_run 10-pg-c1 "PostgreSQL, 1 instance, 1 client" 1 --clients 1
pg_run 11-pg-i1-c16 "PostgreSQL, 1 instance, 16 clients" 1 --clients 16
pg_run 12-pg-i2-c16 "PostgreSQL, 2 instances, 16 clients" 2 --clients 16
pg_run 13-pg-i3-c16 "PostgreSQL, 3 instances, 16 clients" 3 --clients 16
pg_run 13b-pg-i1-c16-prefetch "PostgreSQL, 1 instance, 16 clients, --prefetch 2" 1 --clients 16 --prefetch 2
pg_run 14-pg-i1-sleep0 "PostgreSQL, 1 instance, sleep 0 ms, 16 clients" 1 --clients 16 --task sleep --ms 0
pg_run 15-pg-i2-sleep0 "PostgreSQL, 2 instances, sleep 0 ms, 16 clients" 2 --clients 16 --task sleep --ms 0
pg_run 16-pg-i3-sleep0 "PostgreSQL, 3 instances, sleep 0 ms, 16 clients" 3 --clients 16 --task sleep --ms 0
pg_run 17-pg-i1-sleep50 "PostgreSQL, 1 instance, sleep 50 ms, 48 clients" 1 --clients 48 --task sleep --ms 50
pg_run 18-pg-i2-sleep50 "PostgreSQL, 2 instances, sleep 50 ms, 48 clients" 2 --clients 48 --task sleep --ms 50
pg_run 19-pg-i3-sleep50 "PostgreSQL, 3 instances, sleep 50 ms, 48 clients" 3 --clients 48 --task sleep --ms 50
python3 bench/service_report.py "$out" docs/BENCHMARKS.md
echo "wrote the service section of docs/BENCHMARKS.md"
