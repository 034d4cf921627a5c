#!/bin/bash
# Start PostgreSQL 16 like the upstream postgres image. On an empty data directory, create the
# cluster with superuser POSTGRES_USER (default postgres) and password POSTGRES_PASSWORD, create
# POSTGRES_DB (default: the user name) and run /docker-entrypoint-initdb.d/*.sql and *.sh.
# Then serve on port 5432 with password (SCRAM) authentication for TCP clients.
set -euo pipefail

if [[ "${1:-}" == -* ]]; then
  set -- postgres "$@"
fi
if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi
shift
for argument in "$@"; do
  case "$argument" in
    -V | --version | --help | '-?' | -C | --describe-config) exec postgres "$@" ;;
  esac
done

as_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups "$@"
}

init_cluster() {
  local user="${POSTGRES_USER:-postgres}"
  local database="${POSTGRES_DB:-$user}"
  local auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  if [[ -z "${POSTGRES_PASSWORD:-}" && "$auth" != trust ]]; then
    echo "error: POSTGRES_PASSWORD is not set. Set it, or set POSTGRES_HOST_AUTH_METHOD=trust for a throwaway database." >&2
    exit 1
  fi

  local password_file
  password_file="$(mktemp)"
  printf '%s' "${POSTGRES_PASSWORD:-}" >"$password_file"
  chown postgres:postgres "$password_file"
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options, as upstream
  as_postgres initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" \
    --auth-local=trust --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8 \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$password_file"

  echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

  # A temporary server on the Unix socket only, so no client connects before setup is done.
  as_postgres pg_ctl --pgdata="$PGDATA" --wait --silent -o "-c listen_addresses=''" start
  local psql=(as_postgres psql --quiet -v ON_ERROR_STOP=1 --username="$user" --no-password)
  if [[ "$database" != postgres ]]; then
    "${psql[@]}" --dbname=postgres --set=db="$database" <<<'CREATE DATABASE :"db";'
  fi
  local script
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sql) "${psql[@]}" --dbname="$database" -f "$script" ;;
      *.sh) . "$script" ;;
    esac
  done
  as_postgres pg_ctl --pgdata="$PGDATA" --wait --silent -m fast stop
  echo "PostgreSQL init process complete; database $database owned by $user"
}

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  init_cluster
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
