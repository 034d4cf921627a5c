#!/bin/bash
# Start redis-server like the upstream redis image: on all interfaces, port 6379, data in /data,
# protected mode off (the container network is the boundary), extra arguments passed on.
set -euo pipefail

if [[ "${1:-}" == -* || "${1:-}" == *.conf ]]; then
  set -- redis-server "$@"
fi
if [[ "${1:-}" != redis-server ]]; then
  exec "$@"
fi
shift
for argument in "$@"; do
  case "$argument" in
    -v | --version | -h | --help) exec redis-server "$@" ;;
  esac
done

chown redis:redis /data
exec setpriv --reuid=redis --regid=redis --init-groups redis-server \
  --bind '* -::*' --port 6379 --protected-mode no --dir /data --daemonize no "$@"
