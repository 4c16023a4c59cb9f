"""What the server asks of its app, for server tests whose app is a stand-in."""

from __future__ import annotations

from exporter.http.app import HttpSettings, Request, Response


class StandInApp:
    """Every request goes to a handler thread, as most do in the server's own App; a
    subclass says what ``handle`` answers."""

    settings = HttpSettings()

    def answer_now(self, request: Request) -> Response | None:
        return None

    def is_scrape(self, request: Request) -> bool:
        return False

    def handle(self, request: Request) -> Response:
        raise NotImplementedError
