#!/usr/bin/env bash
# Prints the directory holding PostgreSQL's server tools (initdb, pg_ctl, postgres), for tests
# that start private instances: ECOLEDGER_PG_BIN="$(scripts/pg-bin.sh)".
# Debian keeps them off PATH in /usr/lib/postgresql/<major>/bin; the highest major wins.
# Exit status 1 (and a message on stderr) when there is none.
set -euo pipefail
shopt -s nullglob

dirs=(/usr/lib/postgresql/*/bin)
if ((${#dirs[@]})); then
    while IFS= read -r dir; do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            printf '%s\n' "$dir"
            exit 0
        fi
    done < <(printf '%s\n' "${dirs[@]}" | sort -V -r)
fi

echo "pg-bin.sh: no /usr/lib/postgresql/*/bin with initdb and pg_ctl;" \
    "run scripts/ensure-services.sh (or apt-get install postgresql)" >&2
exit 1
