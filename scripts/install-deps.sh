#!/usr/bin/env bash
# Installs everything procpool needs to build, test and run its examples on Debian 12.
# Every dependency comes from Debian's own packages; nothing is downloaded from elsewhere.
set -euo pipefail
# sudo resets the environment, so DEBIAN_FRONTEND must be passed through it explicitly.
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo env DEBIAN_FRONTEND=noninteractive"; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
# postgresql-common creates and starts a "main" cluster on first install; the tests start their own
# servers (test/service/pg_server.hpp), so turn that off before the packages' postinst reads it.
# Appended rather than overwritten, so the file's other settings stay where it exists already.
createcluster=/etc/postgresql-common/createcluster.conf
if ! grep -qsx 'create_main_cluster = false' "$createcluster"; then
  $SUDO mkdir -p "$(dirname "$createcluster")"
  if [ -f "$createcluster" ]; then
    $SUDO sed -i '/^[[:space:]]*create_main_cluster[[:space:]]*=/d' "$createcluster"
  fi
  echo 'create_main_cluster = false' | $SUDO tee -a "$createcluster" >/dev/null
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git ca-certificates curl \
  libboost1.81-dev libcereal-dev \
  libgtest-dev libgmock-dev libbenchmark-dev \
  libsqlite3-dev libboost-json1.81-dev libssl-dev openssl \
  postgresql-15 libpq-dev \
  zlib1g-dev clang-format clang libclang-rt-14-dev libseccomp-dev \
  chromium chromium-driver python3-selenium fonts-dejavu-core >/dev/null
