#!/bin/bash
# Run the super peer with the given options (`netsody-sp --cert ... --key ...`), or any other
# program given as the command.
set -euo pipefail

if [[ $# -eq 0 || "$1" == -* ]]; then
  set -- netsody-sp "$@"
fi
exec "$@"
