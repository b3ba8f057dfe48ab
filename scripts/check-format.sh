#!/usr/bin/env bash
# Fails when a C++ file in the repository is not formatted by .clang-format (clang-format 14).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.hpp' '*.cpp' 2>/dev/null || find include src test examples -name '*.[ch]pp')
clang-format --dry-run --Werror $files
echo "format: $(echo "$files" | wc -w) files clean"
