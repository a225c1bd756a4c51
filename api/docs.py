"""``/docs``: Swagger UI served by this server, never from a CDN.

FastAPI's default page loads Swagger UI's script from a CDN onto the dashboard's origin, which would run
third-party code next to the signed-in dashboard and fail on a machine without internet. The script and
stylesheet come from the ``fastapi-offline`` package (a pinned copy of swagger-ui-dist 5, which renders
OpenAPI 3.1) under ``/docs/static``. The page's one inline start-up script (FastAPI's
``get_swagger_ui_html``) is allowed by its sha256 in the page's own Content-Security-Policy, so the strict
policy of every other response (api/headers.py) stays as it is. ReDoc is off: its bundle needs inline styles.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from api.headers import POLICY

DOCS = "/docs"
STATIC = "/docs/static"
ASSETS = files("fastapi_offline") / "static"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# no calls to the public validator, whose badge would be an image from another origin
PARAMETERS = {"validatorUrl": None, "deepLinking": True, "persistAuthorization": False}


def policy_allowing(html: str) -> str:
    """The service's policy with each inline script of ``html`` allowed by its hash, and nothing else."""
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
                      for s in INLINE_SCRIPT.findall(html))
    return POLICY.replace("script-src 'self'", f"script-src 'self' {hashes}".rstrip())


def install(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from the package's files. Call before mounting anything at ``/``."""
    app.mount(STATIC, StaticFiles(directory=str(ASSETS)), name="docs-static")
    title = f"{app.title} - API"

    @app.get(DOCS, include_in_schema=False)
    def read_docs() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=title,
                                   swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC}/favicon.png", swagger_ui_parameters=PARAMETERS)
        page.headers["Content-Security-Policy"] = policy_allowing(page.body.decode())
        return page
