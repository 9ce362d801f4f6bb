"""Every request the provider receives, one line each (``METHOD raw-target``), appended to
``IDP_ACCESS_LOG``: what tests read to prove a refused request never reached it."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class RecordRequests:
    """Django middleware, first in the chain."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        target = request.META.get("RAW_URI") or request.get_full_path()
        with open(settings.ACCESS_LOG, "a", encoding="utf-8") as log:
            log.write(f"{request.method} {target}\n")
        return self.get_response(request)
