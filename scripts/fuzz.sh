#!/usr/bin/env bash
# Builds the libFuzzer target over the parent's frame decoding and runs it from the committed seed
# corpus for a bounded time (default 60 s; first argument overrides). New inputs it finds go to a
# scratch directory, not into the repository; a crash leaves its input in build/fuzz/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
work="build/fuzz/corpus"
mkdir -p "$work"
# -rss_limit_mb / -malloc_limit_mb: a decoder that allocates far beyond what it was given fails.
./build/fuzz/fuzz/frame_decoder_fuzzer "$work" fuzz/corpus/frame_decoder \
  -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 \
  -artifact_prefix=build/fuzz/ -print_final_stats=1
