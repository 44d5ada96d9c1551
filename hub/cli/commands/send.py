"""`incident-hub send SOURCE [FILE]`: post a signed sample webhook to a running hub.

For setting up and checking a source: the body (a bundled sample, or FILE) is signed with
this environment's secret/token for that source exactly as the real sender would sign it,
posted to `--url`, and the hub's answer is printed. Each run is a *new* delivery (fresh
GitHub delivery id, incident.io message id, PagerDuty event id, Datadog id, Grafana /
Alertmanager alert times) unless `--same-id`, which makes a repeat show up as a duplicate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

#: Headers the bundled samples need besides auth (the event type is a header for GitHub).
SAMPLE_HEADERS: dict[str, dict[str, str]] = {
    "github": {"X-GitHub-Event": "deployment_status", "User-Agent": "GitHub-Hookshot/incident-hub-send"},
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="post a signed sample webhook to a running hub (to set up or check a source)")
    p.add_argument("source", help="the source's name, as in POST /webhooks/SOURCE")
    p.add_argument("file", nargs="?", type=Path, help="the body to send (default: the bundled sample)")
    p.add_argument("--url", help="the hub's base URL (default http://HUB_HOST:HUB_PORT, 127.0.0.1 for 0.0.0.0)")
    p.add_argument("--same-id", action="store_true",
                   help="keep the body's delivery id, so sending twice is recognised as a duplicate")
    p.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE",
                   help="an extra request header, e.g. -H 'X-GitHub-Event: workflow_run'")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")
    p.add_argument("--json", action="store_true", help="print {status, body, url, headers sent} as JSON")
    p.set_defaults(fn=run)


def sample_body(source: str) -> bytes:
    ref = resources.files("hub") / "samples" / f"{source}.json"
    if not ref.is_file():
        raise FileNotFoundError(f"no bundled sample for {source!r}; pass a FILE")
    return ref.read_bytes()


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def freshen(source: str, body: bytes) -> bytes:
    """The same webhook as a new delivery: change only what the hub's dedup key is made of."""
    try:
        data = json.loads(body)
    except ValueError:
        return body  # not JSON (e.g. a Datadog form body): send as is
    if not isinstance(data, dict):
        return body
    if source == "datadog":
        data["id"] = str(secrets.randbelow(10**18))
    elif source == "pagerduty" and isinstance(data.get("event"), dict):
        data["event"]["id"] = "01" + secrets.token_hex(12).upper()
    elif source in ("grafana", "alertmanager") and isinstance(data.get("alerts"), list):
        stamp = _now_iso()
        for alert in data["alerts"]:
            if isinstance(alert, dict):
                alert["endsAt" if alert.get("status") == "resolved" else "startsAt"] = stamp
    else:
        return body
    return json.dumps(data, separators=(",", ":")).encode()


def sign(source: str, src: Any, body: bytes, settings: Any, same_id: bool) -> dict[str, str]:
    """Auth (and delivery-id) headers for `body`, as the real sender would send them."""
    from hub.ingress.verify import first_credential, sign_hex_hmac, sign_standard_webhook

    digest = hashlib.sha256(body).hexdigest()
    if source == "github":
        secret = first_credential(settings.github_webhook_secret, "GITHUB_WEBHOOK_SECRET")
        delivery = str(uuid.UUID(digest[:32])) if same_id else str(uuid.uuid4())
        return {"Content-Type": "application/json", "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": "sha256=" + sign_hex_hmac(secret, body)}
    if source == "incidentio" and same_id:  # the id is inside the signature: choose it before signing
        secret = first_credential(settings.incidentio_webhook_secret, "INCIDENTIO_WEBHOOK_SECRET")
        msg_id, ts = f"msg_{digest[:27]}", int(time.time())
        return {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
                "webhook-signature": sign_standard_webhook(secret, msg_id, ts, body)}
    return dict(src.sign_request(body, settings))


def default_url(settings: Any) -> str:
    return f"http://{settings.client_host}:{settings.hub_port}"


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import print_json
    from hub.core.registry import sources
    from hub.core.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"incident-hub send: bad configuration: {e}", file=sys.stderr)
        return 2
    src = sources().get(args.source)
    if src is None:
        print(f"incident-hub send: unknown source {args.source!r}; known: {', '.join(sorted(sources()))}",
              file=sys.stderr)
        return 2
    try:
        body = args.file.read_bytes() if args.file else sample_body(args.source)
    except OSError as e:
        print(f"incident-hub send: {e}", file=sys.stderr)
        return 2
    if not args.same_id:
        body = freshen(args.source, body)
    headers = dict(SAMPLE_HEADERS.get(args.source, {})) if not args.file else {}
    if args.source == "github" and "X-GitHub-Event" not in headers:
        from hub.cli.commands.simulate import _guess_github_event

        headers["X-GitHub-Event"] = _guess_github_event(body) or "ping"
    try:
        headers.update(sign(args.source, src, body, settings, args.same_id))
    except LookupError as e:
        print(f"incident-hub send: cannot sign for {args.source}: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"incident-hub send: {e}", file=sys.stderr)
        return 2
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            print(f"incident-hub send: bad header {h!r} (use NAME:VALUE)", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    headers.setdefault("User-Agent", "incident-hub-send/0.1")
    url = (args.url or default_url(settings)).rstrip("/") + f"/webhooks/{args.source}"
    try:
        status, text = _post(url, body, headers, args.timeout)
    except OSError as e:
        print(f"incident-hub send: could not reach {url}: {e}", file=sys.stderr)
        return 1
    if args.json:
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        shown = {k: ("***" if k.lower() in ("authorization",) or "signature" in k.lower() else v)
                 for k, v in headers.items()}
        print_json({"url": url, "status": status, "body": parsed, "headers": shown, "bytes": len(body)})
    else:
        print(f"POST {url} ({len(body)} bytes) → {status}")
        print(text)
    return 0 if 200 <= status < 300 else 1


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    import asyncio

    import aiohttp

    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                http.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.text(errors="replace")

    try:
        return asyncio.run(go())
    except (aiohttp.ClientError, TimeoutError) as e:
        raise OSError(str(e) or type(e).__name__) from None
