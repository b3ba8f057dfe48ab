#!/usr/bin/env bash
# Builds and runs the whole test suite: formatting, then the dev preset (strict warnings) and the
# asan preset (AddressSanitizer + UndefinedBehaviorSanitizer). Each preset also builds and runs
# the examples and the find_package consumer project.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/check-format.sh
cmake --workflow --preset dev
cmake --workflow --preset asan
