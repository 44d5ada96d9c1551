"""Operators' admin API under /admin (Bearer HUB_ADMIN_TOKEN)."""

from __future__ import annotations

from aiohttp import web


def setup_admin(app: web.Application) -> None:
    """Placeholder until the operators' API lands: /admin answers 503 when no token is set."""
