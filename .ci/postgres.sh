# shellcheck shell=bash
# Start a throwaway PostgreSQL server for the storage tests and export LITEHEART_PG_URL.
#
#   source .ci/postgres.sh
#
# Sourced (not run) by .ci/run so that the export reaches pytest. Safe to source again: a server
# that already answers is reused, an existing cluster folder is started rather than re-created.
# Made for a fresh Debian container without systemd, as root or as an ordinary user:
#   * PostgreSQL comes from Debian's packages (`apt-get install postgresql`) when no server binaries
#     are found under /usr/lib/postgresql/*/bin or on PATH (installing needs root);
#   * the cluster lives in its own folder (default /tmp/liteheart-pg), not in Debian's `main`
#     cluster, and listens on 127.0.0.1 only, on its own port (default 54329);
#   * PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
# The cluster is disposable test scaffolding: fsync is off, which makes it fast and unsafe for
# anything that must survive a power cut.
#
# Settings (environment, all optional): LITEHEART_PG_DIR, LITEHEART_PG_PORT.
# If LITEHEART_PG_URL is already set by someone else (e.g. a CI service container), it is kept
# and nothing is started.

_lhpg_log() { echo "postgres.sh: $*" >&2; }

# The folder holding initdb/pg_ctl/pg_isready/psql of the newest installed server, if any.
_lhpg_bindir() {
    local dir
    # Debian keeps each major version in its own folder; sort -V puts the newest last (9 < 15).
    dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
        dir=""
        if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
            dir="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
        fi
    fi
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_isready" ] && [ -x "$dir/psql" ] || return 1
    echo "$dir"
}

_lhpg_install() {
    if [ "$(id -u)" -ne 0 ]; then
        _lhpg_log "PostgreSQL server binaries not found and not root: install the 'postgresql' package first"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _lhpg_log "PostgreSQL server binaries not found and apt-get is not available"
        return 1
    fi
    local log
    log="$(mktemp)"
    _lhpg_log "installing PostgreSQL from Debian's packages (log: $log)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends postgresql; } >"$log" 2>&1; then
        _lhpg_log "installing PostgreSQL failed:"
        tail -n 20 "$log" >&2
        return 1
    fi
}

# Run a command as the user that owns the cluster (postgres when we are root, else ourselves).
_lhpg_as_owner() {
    # From the cluster folder: the caller's directory may be closed to the postgres user.
    if [ "$(id -u)" -eq 0 ]; then
        (cd "${LITEHEART_PG_DIR:-/tmp/liteheart-pg}" && runuser -u postgres -- "$@")
    else
        (cd "${LITEHEART_PG_DIR:-/tmp/liteheart-pg}" && "$@")
    fi
}

_lhpg_main() {
    local dir="${LITEHEART_PG_DIR:-/tmp/liteheart-pg}"
    local port="${LITEHEART_PG_PORT:-54329}"
    local user=liteheart password=liteheart-ci-pw db=liteheart
    local bindir data sock exists

    if [ -n "${LITEHEART_PG_URL:-}" ] && [ -z "${_LITEHEART_PG_OWN:-}" ]; then
        _lhpg_log "LITEHEART_PG_URL is already set; using it as is"
        return 0
    fi

    bindir="$(_lhpg_bindir)" || { _lhpg_install && bindir="$(_lhpg_bindir)"; } || {
        _lhpg_log "no PostgreSQL server binaries found after installing"; return 1; }
    data="$dir/data"
    sock="$dir/run"

    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        # Debian's package creates this user; binaries from elsewhere may not have.
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres \
            || { _lhpg_log "cannot create the postgres user"; return 1; }
    fi

    if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        mkdir -p "$dir" "$sock" || return 1
        if [ "$(id -u)" -eq 0 ]; then
            chown postgres: "$dir" "$sock" || return 1
            chmod 0700 "$dir" || return 1
        fi
        if [ ! -f "$data/PG_VERSION" ]; then
            _lhpg_log "creating a cluster in $data"
            # trust on the private unix socket (for the set-up below), passwords over TCP.
            _lhpg_as_owner "$bindir/initdb" -D "$data" -U postgres -E UTF8 --no-sync \
                --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
                || { _lhpg_log "initdb failed:"; cat "$dir/initdb.log" >&2; return 1; }
            _lhpg_as_owner sh -c "cat >> '$data/postgresql.conf'" <<EOF || return 1
# liteheart CI: disposable cluster, speed over durability
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
EOF
        fi
        _lhpg_log "starting PostgreSQL on 127.0.0.1:$port"
        _lhpg_as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 start >/dev/null \
            || { _lhpg_log "pg_ctl start failed; server log:"; tail -n 20 "$dir/server.log" >&2; return 1; }
        for _ in $(seq 1 60); do
            "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" && break
            sleep 0.5
        done
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" \
            || { _lhpg_log "server does not accept connections on 127.0.0.1:$port"; return 1; }
    fi

    # Role and database, created once. The superuser logs in through the cluster's own socket.
    if [ ! -S "$sock/.s.PGSQL.$port" ]; then
        _lhpg_log "something else listens on 127.0.0.1:$port (no socket in $sock); set LITEHEART_PG_PORT"
        return 1
    fi
    exists="$("$bindir/psql" -X -q -tA -h "$sock" -p "$port" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" || return 1
    if [ "$exists" != 1 ]; then
        "$bindir/psql" -X -q -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -c "CREATE ROLE $user" >/dev/null || return 1
    fi
    # Every time, so a cluster left by an older version of this script gets today's password.
    "$bindir/psql" -X -q -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "ALTER ROLE $user LOGIN CREATEDB PASSWORD '$password'" >/dev/null || return 1
    exists="$("$bindir/psql" -X -q -tA -h "$sock" -p "$port" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" || return 1
    if [ "$exists" != 1 ]; then
        "$bindir/psql" -X -q -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -c "CREATE DATABASE $db OWNER $user" >/dev/null || return 1
    fi
    # The same way in as the tests: TCP and a password.
    PGPASSWORD="$password" "$bindir/psql" -X -q -tA -h 127.0.0.1 -p "$port" -U "$user" -d "$db" \
        -c "SELECT 1" >/dev/null || { _lhpg_log "cannot log in as $user over TCP"; return 1; }

    export LITEHEART_PG_URL="postgresql+psycopg://$user:$password@127.0.0.1:$port/$db"
    export _LITEHEART_PG_OWN=1
    _lhpg_log "LITEHEART_PG_URL=postgresql+psycopg://$user:***@127.0.0.1:$port/$db"
}

if _lhpg_main; then _lhpg_rc=0; else _lhpg_rc=$?; fi
unset -f _lhpg_log _lhpg_bindir _lhpg_install _lhpg_as_owner _lhpg_main
# shellcheck disable=SC2317  # `return` works when sourced; `exit` covers running the file directly (which cannot export).
return "$_lhpg_rc" 2>/dev/null || exit "$_lhpg_rc"
