#!/bin/sh
# trust-ca.sh OUT [BASE] PLACE...: write OUT = BASE (a bundle file, may be absent) + every PEM found in the
# PLACEs (folders of *.pem / *.crt, or single files). Used at build time (docker/extra-ca/ joins the system
# bundle for pip, and alone for npm) and at start (a CA mounted at run time joins the image's bundle).
set -eu
out=$1
shift
tmp="$out.tmp.$$"
: > "$tmp"
for src in "$@"; do
  if [ -d "$src" ]; then
    for f in "$src"/*.pem "$src"/*.crt; do
      if [ -s "$f" ]; then cat "$f" >> "$tmp"; echo >> "$tmp"; fi
    done
  elif [ -s "$src" ]; then
    cat "$src" >> "$tmp"; echo >> "$tmp"
  fi
done
mv "$tmp" "$out"
