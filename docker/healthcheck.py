"""The containers' healthchecks: ``python docker/healthcheck.py api|inference`` exits 0 when that process answers.

The API answers ``/healthz`` (a process that serves; ``/readyz`` also needs the database and broker, which
compose checks on their own containers). The inference process answers ``/internal/health`` to the API's
bearer token. Stdlib only, so a check costs no imports of the service.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def url_and_headers(role: str) -> tuple[str, dict[str, str]]:
    if role == "api":
        return "http://127.0.0.1:8000/healthz", {}
    if role == "inference":
        port = os.environ.get("SPARSETUNE_INFERENCE_PORT", "8100")
        token = os.environ.get("SPARSETUNE_INFERENCE_TOKEN", "")
        return f"http://127.0.0.1:{port}/internal/health", {"Authorization": f"Bearer {token}"}
    raise SystemExit(f"healthcheck: unknown role {role!r} (api or inference)")


def main() -> int:
    url, headers = url_and_headers(sys.argv[1] if len(sys.argv) > 1 else "api")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
