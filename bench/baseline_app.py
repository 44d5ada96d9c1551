"""The baseline: the least an aiohttp + arq webhook receiver can do, for comparison.

Read the body, check GitHub's HMAC in constant time, call arq's ``enqueue_job`` with the
body as the job argument (JSON serialiser, the delivery id as job id) and answer 202.
No parsing, no dedup window, no event record, no indexes, no metrics: the hub must do all of
that and still keep up with this.

    python -m bench.baseline_app --port 8081 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
from typing import Any

from aiohttp import web
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.payload import SECRET

POOL = web.AppKey("pool", ArqRedis)
COUNTS = web.AppKey("counts", dict)
SECRET_KEY = web.AppKey("secret", bytes)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    presented = request.headers.get("X-Hub-Signature-256", "").encode()
    expected = b"sha256=" + hmac.new(request.app[SECRET_KEY], body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, presented):
        return web.json_response({"error": "bad_signature"}, status=401)
    delivery = request.headers.get("X-GitHub-Delivery") or None
    job = await request.app[POOL].enqueue_job("process_webhook", body.decode("utf-8", "replace"), _job_id=delivery)
    counts = request.app[COUNTS]
    if job is None:
        counts["duplicate"] += 1
        return web.json_response({"status": "duplicate"}, status=202)
    counts["accepted"] += 1
    return web.json_response({"job_id": job.job_id, "status": "accepted"}, status=202)


async def stats(request: web.Request) -> web.Response:
    """Server-side counts, so the bench can check every 202 was really enqueued."""
    return web.json_response(request.app[COUNTS])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})



def create_app(redis_url: str, secret: str) -> web.Application:
    app = web.Application()
    app[SECRET_KEY] = secret.encode()
    app[COUNTS] = {"accepted": 0, "duplicate": 0}

    async def pool(app: web.Application) -> Any:
        app[POOL] = await create_pool(RedisSettings.from_dsn(redis_url), job_serializer=_json_bytes,
                                      job_deserializer=json.loads)
        yield
        await app[POOL].aclose()

    app.cleanup_ctx.append(pool)
    app.router.add_post("/webhooks/github", webhook)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--secret", default=os.environ.get("GITHUB_WEBHOOK_SECRET", SECRET))
    args = parser.parse_args()
    web.run_app(create_app(args.redis_url, args.secret), host=args.host, port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
