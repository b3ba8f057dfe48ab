#!/usr/bin/env bash
# What scripts/bench-compare.sh needs beyond scripts/install-deps.sh: the peers (Python with loky
# and pebble, Node with workerpool and piscina from npm) and gnuplot for the chart.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
packages="gnuplot-nox python3 python3-joblib python3-pebble zlib1g-dev util-linux procps"
# A machine may already have Node from elsewhere (with its own npm, which Debian's npm conflicts
# with); only install Debian's when there is none.
command -v node >/dev/null || packages="$packages nodejs"
command -v npm >/dev/null || packages="$packages npm"
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null
