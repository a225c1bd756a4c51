"""Load shedding at the door: past a cap on requests in flight in this process, answer 503 at once.

Without it an overloaded API accepts every request and queues it behind the others (bench/api_load.py at
300 req/s: requests waited until the client's 30 s timeout and throughput fell to half of what the API can
serve). With it the requests it takes keep a bounded wait and the rest hear "retry shortly" in a millisecond,
with ``Retry-After``, as a load balancer would need to move them elsewhere.

It sits inside the door (api/door.py): a /v1 request counts only once its key is verified, so keyless or
half-sent requests cannot fill the cap. Live event streams are not counted (they stay open for hours and
cost nothing while idle): chosen by route, a GET of a stream route asking for a stream, never by a header
alone (any request could send ``Accept: text/event-stream``).
"""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from api.door import refuse_unread
from api.errors import busy_response

log = logging.getLogger("sparsetune.api")
OWNER_STREAM = "/v1/events"  # always a stream
JOB_EVENTS = re.compile(r"^/v1/jobs/[^/]+/events$")  # a stream when asked for one, else a page of events


def is_stream(scope: Scope) -> bool:
    """A request for one of the live event streams (the only routes that answer text/event-stream)."""
    path = scope.get("path", "")
    if scope.get("method") != "GET":
        return False
    if path == OWNER_STREAM:
        return True
    return bool(JOB_EVENTS.match(path)) and any(name == b"accept" and b"text/event-stream" in value
                                                for name, value in scope["headers"])


class InFlightCapMiddleware:
    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app, self.cap, self.in_flight = app, max_in_flight, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.cap <= 0 or is_stream(scope):
            return await self.app(scope, receive, send)
        if self.in_flight >= self.cap:
            log.warning("over %d requests in flight: request shed", self.cap)
            return await refuse_unread(busy_response(), scope, receive, send)
        self.in_flight += 1  # one event loop per process: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
