"""The web edge (issue 14, low findings): security headers on every response, a Host check against DNS
rebinding with local names allowed by default, and /docs served from this server alone under the policy."""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from tests.api.fixtures import environment

SECURITY = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@contextmanager
def app_client(base_url: str = "http://testserver", **env: str):
    """A TestClient on an app built with these settings, sending ``Host`` from ``base_url``."""
    from api.main import create_app

    with environment(env):
        app = create_app()
        with TestClient(app, base_url=base_url, raise_server_exceptions=False) as c:
            yield app, c


def policy(response) -> dict[str, str]:
    """The Content-Security-Policy as directive -> sources."""
    header = response.headers.get("content-security-policy", "")
    return {d.split()[0]: " ".join(d.split()[1:]) for d in header.split(";") if d.strip()}


def assert_secured(response) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (response.request.url, name, dict(response.headers))
    csp = policy(response)
    assert csp.get("default-src") == "'self'" and csp.get("frame-ancestors") == "'none'", csp
    assert "'unsafe-inline'" not in csp.get("script-src", "") and "'unsafe-eval'" not in csp.get("script-src", "")


def test_every_kind_of_response_carries_the_security_headers(client, auth):
    answers = [
        client.get("/healthz"),  # public JSON
        client.get("/v1/jobs", headers=auth),  # a page of JSON
        client.get("/v1/jobs"),  # 401 at the door
        client.get("/v1/nothing", headers=auth),  # 404
        client.post("/v1/jobs", headers=auth, json={"model": 1}),  # 422
        client.get("/docs"), client.get("/docs/static/swagger-ui.css"),  # the docs page and its files
        client.get("/openapi.json"),
    ]
    for r in answers:
        assert_secured(r)
    assert [r.status_code for r in answers] == [200, 200, 401, 404, 422, 200, 200, 200]


def test_an_unhandled_error_is_500_with_the_security_headers():
    from fastapi.routing import APIRoute

    def boom() -> None:
        raise RuntimeError("boom")

    with app_client() as (app, c):
        app.router.routes.insert(0, APIRoute("/boom", boom))  # ahead of the dashboard mounted at /
        r = c.get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert_secured(r)


def test_a_response_keeps_a_policy_of_its_own():
    """The middleware adds a header only where the response has none (/docs sends its own policy)."""
    import asyncio

    from api.headers import SecurityHeadersMiddleware

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-security-policy", b"default-src 'none'")]})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(SecurityHeadersMiddleware(app)({"type": "http", "headers": []}, None, send))
    headers = sent[0]["headers"]
    assert [v for k, v in headers if k == b"content-security-policy"] == [b"default-src 'none'"]
    assert (b"x-content-type-options", b"nosniff") in headers


# -- Host check ------------------------------------------------------------------------------------------------

LOCAL = ["localhost", "localhost:8000", "LOCALHOST.", "app.localhost:8000", "127.0.0.1:8000", "[::1]:8000",
         "192.168.1.20:8000", "10.0.0.5"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "testserver", "localhost.evil.example",
                                  "evil-localhost"])
def test_by_default_an_unknown_host_name_is_400_naming_it_and_the_setting_and_local_ones_pass(host):
    with app_client(f"http://{host}", SPARSETUNE_ALLOWED_HOSTS="") as (_, c):
        for r in (c.get("/healthz"), c.get("/"), c.get("/v1/jobs"), c.get("/docs")):
            assert r.status_code == 400, (host, r.request.url, r.text)
            err = r.json()["error"]
            assert err["code"] == "invalid_request" and err["param"] == "Host"
            assert host.split(":")[0] in err["message"] and "SPARSETUNE_ALLOWED_HOSTS" in err["message"]
            assert_secured(r)
        for local in LOCAL:  # local names and IP addresses: a rebinding page never sends those
            assert c.get(f"http://{local}/healthz").status_code == 200, local


def test_allowed_hosts_adds_names_and_subdomains_and_star_allows_any():
    setting = "api.example.com, *.internal.example"
    for host, status in [("api.example.com", 200), ("API.example.com:443", 200), ("a.b.internal.example", 200),
                         ("internal.example", 400), ("example.com", 400), ("localhost", 200)]:
        with app_client(f"http://{host}", SPARSETUNE_ALLOWED_HOSTS=setting) as (_, c):
            assert c.get("/healthz").status_code == status, host
    with app_client("http://anything.example", SPARSETUNE_ALLOWED_HOSTS="*") as (_, c):
        assert c.get("/healthz").status_code == 200


def test_the_host_check_comes_before_the_key_check(auth):
    """A rebinding page learns nothing from the door either: 400, not 401 or the data."""
    with app_client("http://evil.example", SPARSETUNE_ALLOWED_HOSTS="") as (_, c):
        assert c.get("/v1/jobs", headers=auth).status_code == 400
        assert c.get("/v1/jobs").status_code == 400


def test_up_allows_the_host_name_it_is_bound_to(monkeypatch):
    from api.hosts import allow_bound_host

    monkeypatch.setenv("SPARSETUNE_ALLOWED_HOSTS", "a.example")
    allow_bound_host("box.lan")
    allow_bound_host("0.0.0.0")  # an address: allowed anyway, nothing to add
    import os

    assert os.environ["SPARSETUNE_ALLOWED_HOSTS"] == "a.example,box.lan"


# -- /docs -----------------------------------------------------------------------------------------------------

def test_docs_load_swagger_ui_from_this_server_alone_and_their_policy_allows_exactly_the_page(client):
    r = client.get("/docs")
    assert r.status_code == 200
    html = r.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: '([^']+)'", html)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in html and "https://" not in html, "no other origin named anywhere in the page"
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and asset.content, url
    assert client.get("/docs/static/swagger-ui-bundle.js").headers["content-type"].startswith(
        ("text/javascript", "application/javascript"))
    csp = policy(r)
    inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(inline) == 1 and csp["script-src"].startswith("'self' 'sha256-"), csp
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert csp["script-src"] == f"'self' 'sha256-{digest}'"  # that script and no other inline one
    assert csp["style-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert client.get("/redoc").status_code == 404  # ReDoc needs inline styles: off
