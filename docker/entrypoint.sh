#!/bin/sh
# The image's entrypoint: files the service writes are the owner's alone, and a CA bundle mounted at run time
# (SPARSETUNE_EXTRA_CA_FILE, docker-compose.yml's SPARSETUNE_EXTRA_CA) is trusted for outbound HTTPS on top of
# what the image was built with. Then the command replaces this shell (exec), so it gets the container's signals.
set -eu
umask 077
extra="${SPARSETUNE_EXTRA_CA_FILE:-/etc/sparsetune/extra-ca.pem}"
if [ -s "$extra" ]; then
  bundle="${TMPDIR:-/tmp}/sparsetune-ca.pem"
  trust-ca "$bundle" /etc/ssl/sparsetune-ca.pem "$extra"
  export SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" PIP_CERT="$bundle" CURL_CA_BUNDLE="$bundle"
fi
exec "$@"
