"""What the web application and its admin sub-application share, importing neither.

The app keys under which `create_app` keeps the settings and the event store (the admin
sub-application reads them through `request.config_dict`), the contract's JSON error body,
and how a header's text is read.
"""

from __future__ import annotations

from aiohttp import web

from hub.core.settings import Settings
from hub.storage.event_store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """The contract's error answer: `{"error": code, "detail": detail}`."""
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


def text(value: str) -> str:
    """`value` as text Redis can store: a header's bytes that are not UTF-8 (kept by aiohttp
    as surrogate escapes) become U+FFFD, the same way on every retry."""
    if value.isascii():
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")  # the bytes as sent
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")
