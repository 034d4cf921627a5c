#!/bin/bash
# Obtain the certificate for NETSODY_SP_DOMAIN with certbot's standalone HTTP-01 server on port 80,
# retrying every CERTBOT_RETRY_INTERVAL_SECONDS until it succeeds, then run `certbot renew` every
# CERTBOT_RENEW_INTERVAL_SECONDS. The private key is made readable by group 10001, the group the
# super peer runs as, so the super peer needs no root.
set -euo pipefail

if [[ "${1:-}" != run ]]; then
  exec "$@"
fi

: "${NETSODY_SP_DOMAIN:?NETSODY_SP_DOMAIN is not set; set it to the super peer domain in .env}"
: "${CERTBOT_EMAIL:?CERTBOT_EMAIL is not set; set TRAEFIK_ACME_EMAIL in .env}"
retry_seconds="${CERTBOT_RETRY_INTERVAL_SECONDS:-300}"
renew_seconds="${CERTBOT_RENEW_INTERVAL_SECONDS:-43200}"
live_dir="/etc/letsencrypt/live/$NETSODY_SP_DOMAIN"
share_key="chgrp -R 10001 /etc/letsencrypt/live /etc/letsencrypt/archive \
  && chmod -R g+rX /etc/letsencrypt/live /etc/letsencrypt/archive"

until [[ -s "$live_dir/fullchain.pem" && -s "$live_dir/privkey.pem" ]]; do
  if certbot certonly --standalone --non-interactive --agree-tos --email "$CERTBOT_EMAIL" \
      --http-01-port 80 --keep-until-expiring -d "$NETSODY_SP_DOMAIN" \
      --deploy-hook "$share_key"; then
    break
  fi
  echo "certbot failed for $NETSODY_SP_DOMAIN, retrying in ${retry_seconds}s" >&2
  sleep "$retry_seconds"
done
sh -c "$share_key"

while true; do
  sleep "$renew_seconds"
  certbot renew --non-interactive --deploy-hook "$share_key" \
    || echo "certbot renew failed, retrying in ${renew_seconds}s" >&2
done
