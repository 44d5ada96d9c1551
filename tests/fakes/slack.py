"""Fake Slack incoming webhook: 200 `ok` (plain text), or Slack's plain-text error strings."""

from __future__ import annotations

from aiohttp import web

from tests.fakes.base import FakeUpstream

HOOK_PATH = "/services/T000/B000/XXXX"


class FakeSlack(FakeUpstream):
    def routes(self, app: web.Application) -> None:
        app.router.add_post(HOOK_PATH, self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not data.get("text") and not data.get("blocks"):
            return web.Response(status=400, text="no_text")
        return web.Response(text="ok")

    @property
    def webhook_url(self) -> str:
        return self.url + HOOK_PATH
