#!/bin/bash
# Serve the S3 API on port 9000 with moto's server. Accepts MinIO's command line
# (`server DIR [--address ...] [--console-address ...]`) so the compose file works with either
# image, and MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (default minioadmin) as the access key pair.
# NOTE: moto keeps buckets and objects in memory and does not verify request signatures, so it
# accepts any key pair and loses data on restart. It replaces MinIO in tests and local stacks.
# Production deployments set NETSODY_CONTROLLER_MINIO_IMAGE to a real MinIO image.
set -euo pipefail

if [[ "${1:-}" != server ]]; then
  exec "$@"
fi

export AWS_ACCESS_KEY_ID="${MINIO_ROOT_USER:-minioadmin}"
export AWS_SECRET_ACCESS_KEY="${MINIO_ROOT_PASSWORD:-minioadmin}"
export AWS_DEFAULT_REGION="${MINIO_REGION:-us-east-1}"
echo "S3 API (moto server) listening on 0.0.0.0:9000; MinIO arguments ignored: ${*:2}"
exec moto_server -H 0.0.0.0 -p 9000
