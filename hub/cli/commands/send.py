"""`incident-hub send SOURCE [FILE]`: post a signed sample webhook to a running hub.

For setting up and checking a source: the body (a bundled sample, or FILE) is signed with
this environment's secret/token for that source exactly as the real sender would sign it,
posted to `--url`, and the hub's answer is printed. Each run is a *new* delivery (the source
freshens whatever its delivery id is made of: a delivery or message id, an event id, alert
times) unless `--same-id`, which makes a repeat show up as a duplicate.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="post a signed sample webhook to a running hub (to set up or check a source)")
    p.add_argument("source", help="the source's name, as in POST /webhooks/SOURCE")
    p.add_argument("file", nargs="?", type=Path, help="the body to send (default: the bundled sample)")
    p.add_argument("--url", help="the hub's base URL (default http://HUB_HOST:HUB_PORT, 127.0.0.1 for 0.0.0.0)")
    p.add_argument("--same-id", action="store_true",
                   help="keep the body's delivery id, so sending twice is recognised as a duplicate")
    p.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE",
                   help="an extra request header, e.g. -H 'X-Event-Type: deployment'")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")
    p.add_argument("--json", action="store_true", help="print {status, body, url, headers sent} as JSON")
    p.set_defaults(fn=run)


def sample_body(source: str) -> bytes:
    ref = resources.files("hub") / "samples" / f"{source}.json"
    if not ref.is_file():
        raise FileNotFoundError(f"no bundled sample for {source!r}; pass a FILE")
    return ref.read_bytes()


def freshen(source: str, body: bytes) -> bytes:
    """The same webhook as a new delivery: the source changes only what the hub's dedup key is made of."""
    from hub.core.registry import sources

    try:
        data = json.loads(body)
    except ValueError:
        return body  # not JSON (e.g. a form body): send as is
    src = sources().get(source)
    if src is None or not src.freshen(data):
        return body
    return json.dumps(data, separators=(",", ":")).encode()


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
    headers = dict(src.sample_headers) if not args.file else {}
    for name, value in src.guess_headers(body, sending=True).items():
        headers.setdefault(name, value)
    try:
        headers.update(src.sign_request(body, settings, same_id=args.same_id))
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
