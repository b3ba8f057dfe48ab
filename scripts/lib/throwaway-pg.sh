# A throwaway PostgreSQL 15 server for scripts (the cluster demo, the service benchmark): sourced,
# not run. `pg_up` starts one in a temporary directory, listening only on a Unix socket there (no
# port to pick or clash on), and sets PG_URL; `pg_down` stops it and removes the directory.
# PostgreSQL refuses to run as root, so as root the server runs as the unprivileged user `nobody`.
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DIR=""
PG_URL=""

pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
  else
    "$@"
  fi
}

pg_up() {
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "PostgreSQL server binaries not found in $PG_BIN; run scripts/install-deps.sh" >&2
    return 1
  fi
  PG_DIR="$(mktemp -d /tmp/procpool-pg.XXXXXX)"
  chmod 755 "$PG_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown nobody:nogroup "$PG_DIR"; fi
  (cd "$PG_DIR" && pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U procpool --auth=trust \
    -E UTF8 --no-locale --no-sync >"$PG_DIR/initdb.log" 2>&1) || {
    cat "$PG_DIR/initdb.log" >&2
    return 1
  }
  printf "max_connections = 200\nshared_buffers = 128MB\n" >>"$PG_DIR/data/postgresql.conf"
  (cd "$PG_DIR" && pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -t 60 -o "-k $PG_DIR -c listen_addresses=''" start >/dev/null) || {
    cat "$PG_DIR/server.log" >&2
    return 1
  }
  PG_URL="postgresql://procpool@/postgres?host=$PG_DIR"
}

pg_down() {
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR/data" ]; then
    (cd "$PG_DIR" && pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop \
      >/dev/null 2>&1) || true
    rm -rf "$PG_DIR"
  fi
  PG_DIR=""
}
