"""Slack's Web API through the official SDK (`slack_sdk`), each call classified as an `Outcome`.

The SDK's own retries are switched off: a retry after a lost answer may post a message twice,
so only the shared runner retries, and only after the connector has looked for what the lost
attempt did. Slack answers most errors with HTTP 200 and `ok: false`; `error` is a
machine-readable code, and the few that mean "try again" are retried.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from connectors.base import RESPONSE_KEEP, Outcome, parse_retry_after

if TYPE_CHECKING:
    from slack_sdk.web.async_slack_response import AsyncSlackResponse

#: Slack `error` codes that say "not now" rather than "never" (docs: each method's Errors).
RETRYABLE_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "team_added_to_org"})


class SlackApi:
    """One bot token, one base URL; requests go through the worker's aiohttp session."""

    def __init__(self, token: str, base_url: str, http: aiohttp.ClientSession, timeout: float) -> None:
        self.timeout = timeout
        self.client = AsyncWebClient(token=token, base_url=base_url, session=http,
                                     timeout=max(1, math.ceil(timeout)), retry_handlers=[])

    async def call(self, method: str, **kwargs: Any) -> tuple[Outcome, dict[str, Any]]:
        """`method` is the SDK's name (`chat_postMessage`); returns (outcome, Slack's JSON answer,
        also for an answer that is not `ok`)."""
        try:
            async with asyncio.timeout(self.timeout):
                resp: AsyncSlackResponse = await getattr(self.client, method)(**kwargs)
        except SlackApiError as e:  # Slack's answer still says why (`error`: a machine-readable code)
            data = getattr(e.response, "data", None)
            return api_error(e), data if isinstance(data, dict) else {}
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            return Outcome("retryable", None, detail=f"connection failed: {e}"), {}
        except TimeoutError:
            return Outcome("retryable", None, detail=f"timed out after {self.timeout:g}s", ambiguous=True), {}
        except aiohttp.ClientError as e:
            return Outcome("retryable", None, detail=f"{type(e).__name__}: {e}", ambiguous=True), {}
        except SlackClientError as e:  # a request the SDK refused to build
            return Outcome("permanent", None, detail=f"{type(e).__name__}: {e}"), {}
        data = resp.data if isinstance(resp.data, dict) else {}
        return Outcome("succeeded", resp.status_code, response=_keep(data)), data


def api_error(e: SlackApiError) -> Outcome:
    """An answer that is not `ok`: 429 and 5xx and the retryable codes retry, the rest is permanent."""
    resp = e.response
    status = getattr(resp, "status_code", None)
    data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
    code = str(data.get("error") or "")
    headers = getattr(resp, "headers", None) or {}
    detail = f"Slack answered {code}" if code else f"HTTP {status}"
    if status == 429 or (status is not None and status >= 500) or code in RETRYABLE_ERRORS:
        return Outcome("retryable", status, detail=detail, response=_keep(data),
                       retry_after=parse_retry_after(headers.get("Retry-After")))
    return Outcome("permanent", status, detail=detail, response=_keep(data))


def _keep(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)[:RESPONSE_KEEP]
