#!/usr/bin/env bash
# Installs everything procpool needs to build, test and run its examples on Debian 12.
# Every dependency comes from Debian's own packages; nothing is downloaded from elsewhere.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git ca-certificates \
  libboost1.81-dev libcereal-dev \
  libgtest-dev libgmock-dev libbenchmark-dev \
  libsqlite3-dev libboost-json1.81-dev libssl-dev \
  zlib1g-dev clang-format clang libclang-rt-14-dev >/dev/null
