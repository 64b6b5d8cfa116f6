#!/bin/sh
# A private PostgreSQL cluster for the pg suite (test/pg/tests.cmake runs
# it as a CTest fixture):
#
#   cluster.sh start STATE     initdb into a new temp dir under $TMPDIR
#                              (else /tmp), start the server on a free
#                              loopback port with its socket in that dir,
#                              and write STATE (shell variables) for the
#                              tests: PG_CONNINFO, PG_DIR, PG_PORT.
#   cluster.sh restart STATE   restart it (fast shutdown), same port.
#   cluster.sh stop STATE      stop it and remove the temp dir.
#
# The server refuses to run as root: as root, every server command runs as
# the `postgres` user Debian's package creates. Without the binaries STATE
# says PG_UNAVAILABLE=reason and start still succeeds, so that each test
# skips (or fails under UVCTX_REQUIRE_PEERS=1) with that reason.
set -eu

bindir=${UVCTX_PG_BINDIR:-/usr/lib/postgresql/15/bin}
cmd=$1
state=$2

as_server() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    if [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
      echo "PG_UNAVAILABLE='no PostgreSQL server in $bindir (Debian package postgresql)'" >"$state"
      exit 0
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
      echo "PG_UNAVAILABLE='running as root and there is no postgres user'" >"$state"
      exit 0
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/uvctx-pg-XXXXXX")
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres "$dir"
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_server "$bindir/initdb" -D "$dir/data" -A trust -U postgres \
      --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
      start >/dev/null || {
      cat "$dir/server.log" >&2
      exit 1
    }
    {
      echo "PG_DIR='$dir'"
      echo "PG_PORT='$port'"
      echo "PG_CONNINFO='host=127.0.0.1 port=$port user=postgres dbname=postgres'"
    } >"$state"
    ;;
  restart)
    . "$state"
    as_server "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
      -m fast restart >/dev/null
    ;;
  stop)
    [ -f "$state" ] || exit 0
    . "$state"
    if [ -n "${PG_DIR:-}" ]; then
      as_server "$bindir/pg_ctl" -D "$PG_DIR/data" -w -m immediate stop \
        >/dev/null 2>&1 || true
      rm -rf "$PG_DIR"
    fi
    rm -f "$state"
    ;;
  *)
    echo "cluster.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
