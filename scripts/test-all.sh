#!/usr/bin/env bash
# Builds and runs the whole test suite: formatting, then the dev preset (strict warnings), the asan
# preset (AddressSanitizer + UndefinedBehaviorSanitizer) and the tsan preset (ThreadSanitizer).
# Each preset also builds and runs the examples, the README snippet check and the find_package
# consumer project. The lock-check preset compiles the library with clang's thread-safety analysis.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/check-format.sh
for preset in dev asan tsan; do
  echo "=== preset ${preset} ==="
  cmake --workflow --preset "${preset}"
done
echo "=== lock-check (clang -Wthread-safety over the pool's lock discipline) ==="
cmake --workflow --preset lock-check
echo "=== fuzz (60 s per target from the seed corpora) ==="
./scripts/fuzz.sh 60
