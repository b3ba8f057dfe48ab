#!/usr/bin/env bash
# Builds the libFuzzer targets — the parent's frame decoding, and the service's request path
# (parser, router, job and query checks) — and runs each from its committed seed corpus for a
# bounded time (default 60 s each; first argument overrides). New inputs they find go to scratch
# directories, not into the repository; a crash leaves its input in build/fuzz/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
# -rss_limit_mb / -malloc_limit_mb: code that allocates far beyond what it was given fails.
for target in frame_decoder http_request; do
  work="build/fuzz/corpus/$target"
  mkdir -p "$work"
  max_len=4096
  [ "$target" = http_request ] && max_len=16384  # past the 8 KiB header limit
  echo "fuzz: ${target}_fuzzer for ${seconds} s"
  "./build/fuzz/fuzz/${target}_fuzzer" "$work" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=1024 -malloc_limit_mb=256 \
    -timeout=10 -artifact_prefix="build/fuzz/${target}-" -print_final_stats=1
done
