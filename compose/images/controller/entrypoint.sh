#!/bin/bash
# Run a netsody-controller subcommand (serve, worker, beat, migrate, or a Django management
# command) or any other program given as the command.
set -euo pipefail

case "${1:-}" in
  "") set -- netsody-controller serve ;;
  serve | worker | beat | migrate | dev | -*) set -- netsody-controller "$@" ;;
esac
exec "$@"
