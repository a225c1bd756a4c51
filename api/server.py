"""uvicorn's HTTP protocol with a header read timeout.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a request's headers
take to arrive: a client sending one header line every few seconds held its connection open indefinitely
(and h11/httptools only bound the headers' size). This protocol closes a connection whose request line and
headers are not complete ``SPARSETUNE_HEADER_TIMEOUT_SECONDS`` after the connection opened or the request's
first byte arrived. Bodies are bounded per read by the ASGI body guard (api/requestlog.py).

Run with ``uvicorn api.main:app --http api.server:HttpToolsProtocol`` (the Dockerfile and ``sparsetune up``
do); plain ``uvicorn api.main:app`` still works, without the header timeout.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

from service.settings import get_settings

log = logging.getLogger("sparsetune.api")


class HttpToolsProtocol(_HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = get_settings().header_timeout_seconds
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.warning("request headers incomplete after %.0f s: connection closed", self.header_timeout)
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a complete request line is closed too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
