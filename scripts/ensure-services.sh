#!/usr/bin/env bash
# Makes sure the services EcoLedger needs are reachable on this machine:
#   - PostgreSQL >= 13 on 127.0.0.1:5432, role `postgres` usable over TCP, database `ecoledger`;
#   - NATS with JetStream on 127.0.0.1:4222 (started with the repository's nats.conf);
#   - node and npm, for the chain bridge's contract toolchain and dev chain (make chain-tools).
# Installs them from Debian packages when absent (Debian 12) and starts them without systemd.
# Idempotent: prints nothing when everything is already fine (-v prints a summary anyway).
#
# It never stops, restarts or reconfigures a service it did not install: an existing Postgres
# cluster's pg_hba.conf is never rewritten, and a NATS already listening is left alone.
#
# Environment (all optional):
#   ECOLEDGER_PG_PORT    Postgres port on 127.0.0.1 (default 5432)
#   ECOLEDGER_DB         database to create (default ecoledger)
#   ECOLEDGER_NATS_PORT  NATS client port on 127.0.0.1 (default 4222; must match the config)
#   ECOLEDGER_NATS_CONF  NATS config to start with (default <repo>/nats.conf)
#   PGPASSWORD           password for role postgres, if the cluster wants one
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_PORT="${ECOLEDGER_PG_PORT:-5432}"
DB="${ECOLEDGER_DB:-ecoledger}"
NATS_PORT="${ECOLEDGER_NATS_PORT:-4222}"
NATS_CONF="${ECOLEDGER_NATS_CONF:-$REPO/nats.conf}"
VERBOSE=0
[[ "${1:-}" == "-v" || "${1:-}" == "--verbose" ]] && VERBOSE=1

CHANGED=0          # set when this run did something; then a summary is printed
APT_UPDATED=0
PG_URL_HINT=""     # set when the default passwordless DATABASE_URL will not work

say() { printf 'ensure-services: %s\n' "$*" >&2; }
die() { printf 'ensure-services: error: %s\n' "$*" >&2; exit 1; }

# ---- privileges -------------------------------------------------------------------------------
if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
    CAN_ROOT=1
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
    CAN_ROOT=1
else
    SUDO=()
    CAN_ROOT=0
fi

as_root() {
    if ((CAN_ROOT)); then
        "${SUDO[@]}" "$@"
    else
        die "need root for: $* (run as root, or install sudo)"
    fi
}

# Runs psql as the OS user postgres over the local socket (peer authentication), SQL on stdin.
psql_as_postgres() {
    as_root su postgres -s /bin/sh -c \
        "cd / && exec psql -X -w -q -t -A -v ON_ERROR_STOP=1 -p '$PG_PORT' -d postgres"
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install $* yourself (this script knows Debian only)"
    if ((!APT_UPDATED)); then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
    CHANGED=1
}

now_us() { local t="${EPOCHREALTIME/[.,]/}"; printf '%s' "$((10#$t))"; }

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds or the deadline passes.
wait_for() {
    local deadline=$(($(now_us) + $1 * 1000000))
    shift
    until "$@"; do
        (($(now_us) < deadline)) || return 1
        sleep 0.1
    done
}

# ---- PostgreSQL -------------------------------------------------------------------------------
pg_ready() {
    command -v pg_isready >/dev/null 2>&1 &&
        pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 1 >/dev/null 2>&1
}

pg_server_installed() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

# pg_q SQL: one query as role postgres over TCP, never prompting for a password.
pg_q() {
    psql -X -w -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "$1"
}

# Debian's default host lines for loopback use scram-sha-256; only for a cluster created by this
# script, switch them to trust so postgres://postgres@127.0.0.1/... works without a password.
pg_trust_loopback() {
    local hba="$1"
    as_root cp -p "$hba" "$hba.ecoledger-orig"
    as_root sed -E -i \
        's#^(host[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' \
        "$hba"
    say "set loopback host lines in $hba to trust (original kept as $hba.ecoledger-orig)"
}

pg_start_local_cluster() {
    local had_cluster=0 ver created=0
    if ! pg_server_installed; then
        # `apt-get remove` keeps /etc/postgresql: such a cluster is not ours to rewrite.
        compgen -G '/etc/postgresql/*/main/postgresql.conf' >/dev/null && had_cluster=1
        apt_install postgresql postgresql-contrib
        ((had_cluster)) || created=1
    fi
    command -v pg_ctlcluster >/dev/null 2>&1 || die "pg_ctlcluster not found (postgresql-common missing?)"

    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -z "$ver" || ! -f "/etc/postgresql/$ver/main/postgresql.conf" ]]; then
        ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
        [[ -n "$ver" ]] || die "no PostgreSQL server under /usr/lib/postgresql"
        say "creating cluster $ver/main"
        as_root pg_createcluster --port "$PG_PORT" "$ver" main >/dev/null
        created=1
        CHANGED=1
    fi
    ((${ver%%.*} >= 13)) || die "PostgreSQL $ver is too old: EcoLedger needs 13 or newer"

    if ((created)); then
        pg_trust_loopback "/etc/postgresql/$ver/main/pg_hba.conf"
    fi

    if as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main status >/dev/null 2>&1; then
        if ((created)); then
            as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
        fi
    else
        say "starting PostgreSQL cluster $ver/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
            die "could not start cluster $ver/main; see /var/log/postgresql/postgresql-$ver-main.log"
        CHANGED=1
    fi

    if ! wait_for 10 pg_ready; then
        pg_lsclusters >&2 || true
        die "PostgreSQL cluster $ver/main runs but 127.0.0.1:$PG_PORT does not answer (another port? listen_addresses?)"
    fi
}

# Makes role postgres usable over TCP: as is (trust, or PGPASSWORD from the caller), else with
# password 'postgres', setting it when the role has no password yet.
pg_ensure_auth() {
    local err
    if err="$(pg_q 'select 1' 2>&1 >/dev/null)"; then
        return 0
    fi
    if [[ -n "${PGPASSWORD:-}" ]]; then
        die "cannot connect as postgres to 127.0.0.1:$PG_PORT with the given PGPASSWORD: $err"
    fi
    if PGPASSWORD=postgres pg_q 'select 1' >/dev/null 2>&1; then
        export PGPASSWORD=postgres
    elif [[ "$err" == *"password"* ]]; then
        # Password needed (pg_hba says scram/md5/password). Look at the role through the local
        # socket as the OS user postgres; set 'postgres' only when it has no password at all.
        local has_pw
        has_pw="$(echo "select rolpassword is not null from pg_authid where rolname = 'postgres'" |
            psql_as_postgres 2>/dev/null)" ||
            die "127.0.0.1:$PG_PORT wants a password for role postgres and the local socket is not usable to set one; set PGPASSWORD and DATABASE_URL ($err)"
        if [[ "$has_pw" == "t" ]]; then
            die "role postgres already has a password (not 'postgres'); rerun with PGPASSWORD=... and use DATABASE_URL=postgres://postgres:<password>@127.0.0.1:$PG_PORT/$DB"
        fi
        echo "alter role postgres password 'postgres'" | psql_as_postgres >/dev/null
        say "set password 'postgres' for role postgres (pg_hba.conf asks for a password on 127.0.0.1)"
        CHANGED=1
        PGPASSWORD=postgres pg_q 'select 1' >/dev/null ||
            die "still cannot connect as postgres with password 'postgres'"
        export PGPASSWORD=postgres
    else
        die "cannot connect as postgres to 127.0.0.1:$PG_PORT: $err"
    fi
    PG_URL_HINT="postgres://postgres:postgres@127.0.0.1:$PG_PORT/$DB"
}

ensure_postgres() {
    if ! pg_ready; then
        pg_start_local_cluster
    fi
    if ! command -v psql >/dev/null 2>&1 || ! command -v createdb >/dev/null 2>&1; then
        apt_install postgresql-client
    fi

    pg_ensure_auth

    local vnum
    vnum="$(pg_q 'show server_version_num')"
    ((vnum >= 130000)) ||
        die "PostgreSQL on 127.0.0.1:$PG_PORT is $(pg_q 'show server_version'): EcoLedger needs 13 or newer"

    if [[ "$(pg_q "select 1 from pg_database where datname = '$DB'")" != "1" ]]; then
        # A concurrent run may win the race: only a still-missing database is an error.
        if createdb -w -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB" 2>/dev/null ||
            [[ "$(pg_q "select 1 from pg_database where datname = '$DB'")" == "1" ]]; then
            say "created database $DB"
            CHANGED=1
        else
            die "could not create database $DB"
        fi
    fi

    if [[ -n "$PG_URL_HINT" ]]; then
        say "role postgres needs a password here: use DATABASE_URL=$PG_URL_HINT (and PGPASSWORD=postgres)"
    fi

    PG_BIN="$("$REPO/scripts/pg-bin.sh" 2>/dev/null)" || PG_BIN=""
    if [[ -z "$PG_BIN" ]]; then
        say "warning: initdb/pg_ctl not found under /usr/lib/postgresql/*/bin (the database is not local?);" \
            "tests that start private Postgres instances need them: apt-get install postgresql"
    elif [[ ! -x "$PG_BIN/pgbench" ]] && ! command -v pgbench >/dev/null 2>&1; then
        say "warning: pgbench not found (apt-get install postgresql-client)"
    fi
}

# ---- NATS -------------------------------------------------------------------------------------
nats_port_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT" 2>/dev/null
}

# The first line a NATS server sends: INFO {...}
nats_info() {
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT && IFS= read -r line <&3 && printf '%s\n' \"\$line\"" 2>/dev/null
}

nats_check_jetstream() {
    local info
    info="$(nats_info)" || die "something listens on 127.0.0.1:$NATS_PORT but sent no NATS INFO line"
    [[ "$info" == INFO* ]] || die "127.0.0.1:$NATS_PORT is not a NATS server (it sent: ${info:0:80})"
    if [[ "$info" != *'"jetstream":true'* ]]; then
        die "the NATS server on 127.0.0.1:$NATS_PORT runs without JetStream; restart it with -js, or stop it and rerun this script to start one with $NATS_CONF"
    fi
}

# store_dir from the config (first occurrence, quotes optional).
nats_conf_store_dir() {
    sed -n -E 's/^[[:space:]]*store_dir[[:space:]]*[:=]?[[:space:]]*"?([^"#[:space:]]+)"?.*/\1/p' "$1" | head -n 1
}

ensure_nats() {
    if nats_port_open; then
        nats_check_jetstream
        return 0
    fi

    local bin installed=0
    bin="$(command -v nats-server 2>/dev/null || true)"
    [[ -z "$bin" && -x /usr/sbin/nats-server ]] && bin=/usr/sbin/nats-server
    if [[ -z "$bin" ]]; then
        apt_install nats-server
        bin=/usr/sbin/nats-server
        installed=1
    fi
    # Debian's package ships nats-server.service (no JetStream, port 4222); under systemd it
    # starts on install and would take our port. It is ours to stop since we just installed it.
    if ((installed)) && command -v systemctl >/dev/null 2>&1 &&
        systemctl is-active --quiet nats-server 2>/dev/null; then
        say "disabling Debian's nats-server.service (no JetStream) in favour of $NATS_CONF"
        as_root systemctl disable --now nats-server
    fi
    if nats_port_open; then
        nats_check_jetstream
        return 0
    fi

    [[ -f "$NATS_CONF" ]] || die "NATS config $NATS_CONF not found"
    local conf="$NATS_CONF" store rundir
    store="$(nats_conf_store_dir "$conf")"
    [[ -n "$store" ]] || die "no jetstream store_dir in $conf"
    if ((CAN_ROOT)); then
        rundir="$(dirname "$store")"
        as_root mkdir -p "$store"
    else
        # No root: keep the data in the repository. nats-server 2.9 refuses `-sd` next to a
        # store_dir in the file ("Duplicate 'store_dir'"), so start from a rewritten copy.
        rundir="$REPO/data"
        mkdir -p "$rundir/nats"
        sed -E "s#^([[:space:]]*store_dir[[:space:]]*[:=]?[[:space:]]*).*#\1\"$rundir/nats\"#" \
            "$NATS_CONF" >"$rundir/nats.conf"
        conf="$rundir/nats.conf"
        say "not root and no sudo: JetStream data goes to $rundir/nats"
    fi
    local pidfile="$rundir/nats-server.pid" log="$rundir/nats-server.log"

    say "starting nats-server -c $conf (log: $log)"
    local ssd
    ssd="$(command -v start-stop-daemon 2>/dev/null || true)"
    [[ -z "$ssd" && -x /sbin/start-stop-daemon ]] && ssd=/sbin/start-stop-daemon
    if [[ -n "$ssd" ]]; then
        # The pidfile matters: with --exec alone, any running nats-server (a test's private
        # instance, say) counts as "already running" and nothing would start.
        if ((CAN_ROOT)); then
            as_root "$ssd" --start --quiet --oknodo --background --make-pidfile --pidfile "$pidfile" \
                --exec "$bin" -- -c "$conf" -l "$log"
        else
            "$ssd" --start --quiet --oknodo --background --make-pidfile --pidfile "$pidfile" \
                --exec "$bin" -- -c "$conf" -l "$log"
        fi
    else
        if ((CAN_ROOT)); then
            "${SUDO[@]}" nohup "$bin" -c "$conf" -l "$log" >/dev/null 2>&1 &
        else
            nohup "$bin" -c "$conf" -l "$log" >/dev/null 2>&1 &
        fi
        local pid=$!
        if ((CAN_ROOT)); then
            echo "$pid" | as_root tee "$pidfile" >/dev/null
        else
            echo "$pid" >"$pidfile"
        fi
    fi
    CHANGED=1

    if ! wait_for 10 nats_port_open; then
        [[ -r "$log" ]] && tail -n 20 "$log" >&2
        die "nats-server did not open 127.0.0.1:$NATS_PORT within 10 s (config $conf, log $log)"
    fi
    nats_check_jetstream
}

# ---- Node.js ----------------------------------------------------------------------------------
# npm installs chain-bridge/package-lock.json (solc, OpenZeppelin, anvil); node runs its compiler.
ensure_node() {
    if ! command -v node >/dev/null 2>&1; then
        apt_install nodejs npm
    elif ! command -v npm >/dev/null 2>&1; then
        apt_install npm
    fi
}

# ---- main -------------------------------------------------------------------------------------
ensure_postgres
ensure_nats
ensure_node

if ((CHANGED || VERBOSE)); then
    say "ready: PostgreSQL on 127.0.0.1:$PG_PORT (database $DB), NATS with JetStream on 127.0.0.1:$NATS_PORT"
    say "DATABASE_URL=${PG_URL_HINT:-postgres://postgres@127.0.0.1:$PG_PORT/$DB}"
    say "NATS_URL=nats://127.0.0.1:$NATS_PORT"
    [[ -n "$PG_BIN" ]] && say "ECOLEDGER_PG_BIN=$PG_BIN (initdb, pg_ctl, pgbench)"
fi
exit 0
