"""Webhook authentication primitives, shared by every inbound source.

All comparisons are constant-time and work on the raw request bytes. Each helper takes a
list of secrets so a secret can be rotated without dropping deliveries. Tokens (shared
source tokens, admin tokens) are compared as HMAC-SHA256 digests under a random per-process
key (`tokens_equal`): `hmac.compare_digest` on the tokens themselves returns early when the
lengths differ, which tells a caller the token's length; digests are always 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Iterable, Mapping


class AuthError(Exception):
    """The request is not authentic. `code` is the machine-readable reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


_COMPARE_KEY = _random.token_bytes(32)


def tokens_equal(configured: bytes | str, presented: bytes | str) -> bool:
    """Constant time whatever the two lengths: compares HMACs of the tokens, not the tokens."""
    a = configured if isinstance(configured, bytes) else _enc(configured)
    b = presented if isinstance(presented, bytes) else _enc(presented)
    return hmac.compare_digest(hmac_sha256(_COMPARE_KEY, a), hmac_sha256(_COMPARE_KEY, b))


def _enc(s: str) -> bytes:
    # surrogatepass: a header with bytes that are not UTF-8 (aiohttp keeps them as surrogate
    # escapes) must compare unequal, not raise
    return s.encode("utf-8", "surrogatepass")


def check_hex_hmac(secrets: Iterable[str], message: bytes, candidates: Iterable[str]) -> bool:
    """True when any candidate hex digest equals HMAC-SHA256(secret, message) for any secret."""
    cands = [c.strip().lower().encode("ascii", "replace") for c in candidates if c.strip()]
    ok = False
    for secret in secrets:
        expected = hmac_sha256(_enc(secret), message).hex().encode()
        for cand in cands:
            # `|=` keeps the loop length independent of where (or whether) a match is found.
            ok |= hmac.compare_digest(expected, cand)
    return ok


def check_token(tokens: Iterable[str], authorization: str | None) -> bool:
    """True when `Authorization: Bearer <t>` or the Basic-auth password equals a token."""
    if not authorization:
        return False
    scheme, _, cred = authorization.strip().partition(" ")
    cred = cred.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(cred, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        _, sep, cred = decoded.partition(":")
        if not sep:
            return False
    elif scheme != "bearer":
        return False
    presented = _enc(cred)
    ok = False
    for token in tokens:
        ok |= tokens_equal(_enc(token), presented)
    return ok


def require_token(tokens: tuple[str, ...], headers: Mapping[str, str], variable: str) -> None:
    if not headers.get("Authorization"):
        raise AuthError("missing_token", f"Authorization header missing: send the token from {variable} "
                                         "as 'Bearer <token>' or as the Basic-auth password")
    if not check_token(tokens, headers.get("Authorization")):
        raise AuthError("bad_token", f"Authorization does not match {variable}")


def check_timestamp(ts: str | None, tolerance: float, now: float | None = None) -> int:
    """Parse a Unix-seconds timestamp header and reject it outside ±tolerance."""
    if ts is None or not ts.strip():
        raise AuthError("missing_timestamp", "timestamp header missing")
    try:
        value = int(ts.strip())
    except ValueError:
        raise AuthError("bad_timestamp", "timestamp header is not a Unix time in seconds") from None
    now = time.time() if now is None else now
    if abs(now - value) > tolerance:
        raise AuthError("stale_timestamp", f"timestamp is more than {int(tolerance)} s from the hub's clock")
    return value


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after the optional `whsec_` prefix.

    ValueError when there is no key: nothing (or only padding) after the prefix, or text after
    `whsec_` that is not base64. An empty HMAC key would accept anyone's signature made with
    the same empty key, so settings validation refuses such a secret at start.
    """
    if secret.startswith("whsec_"):
        raw = secret[6:].strip()
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the text after whsec_ is not base64") from None
    else:
        raw = secret.strip()
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            key = _enc(raw)
    if not key:
        raise ValueError("the secret holds no key (nothing after whsec_)" if secret.startswith("whsec_")
                         else "the secret holds no key")
    return key


def verify_standard_webhook(
    secrets: Iterable[str], headers: Mapping[str, str], body: bytes, tolerance: float, now: float | None = None,
    variable: str = "the webhook secret",
) -> str:
    """Verify Standard Webhooks / Svix headers; return the message id on success.

    `variable` names where the secrets come from, for the refusal (the source's variable).

    Accepts both `webhook-*` and `svix-*` header names and a space-separated list of
    `v1,<base64>` signatures (rotation); other versions (e.g. `v1a`) are ignored.
    """
    prefix = "webhook-" if headers.get("webhook-signature") or headers.get("webhook-id") else "svix-"
    msg_id = headers.get(prefix + "id")
    sig_header = headers.get(prefix + "signature")
    if not msg_id or not sig_header:
        raise AuthError("missing_signature", "webhook-id / webhook-signature headers missing (Standard Webhooks)")
    ts = check_timestamp(headers.get(prefix + "timestamp"), tolerance, now)
    signed = _enc(f"{msg_id}.{ts}.") + body
    presented = []
    for part in sig_header.split():
        version, _, sig = part.partition(",")
        if version == "v1" and sig:
            presented.append(_enc(sig))
    if not presented:
        raise AuthError("bad_signature", "webhook-signature has no v1 signature")
    ok = False
    for secret in secrets:
        try:
            key = standard_webhook_key(secret)
        except ValueError:
            continue  # refused at start by settings validation; never an empty key
        expected = base64.b64encode(hmac_sha256(key, signed))
        for cand in presented:
            ok |= hmac.compare_digest(expected, cand)
    if not ok:
        raise AuthError("bad_signature", f"webhook-signature does not match {variable}")
    return msg_id


# -- signing (the sender's side: `incident-hub send`, tests) -----------------------------------


def sign_hex_hmac(secret: str, message: bytes) -> str:
    """Lowercase hex HMAC-SHA256, as several senders send it (after a prefix such as `sha256=` or `v1=`)."""
    return hmac_sha256(_enc(secret), message).hex()


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """A `webhook-signature` value (`v1,<base64>`) for one secret."""
    signed = _enc(f"{msg_id}.{timestamp}.") + body
    return "v1," + base64.b64encode(hmac_sha256(standard_webhook_key(secret), signed)).decode()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def first_credential(values: Iterable[str], variable: str) -> str:
    """The current (first) secret or token of a rotation list; LookupError when none is set."""
    for value in values:
        return value
    raise LookupError(f"{variable} is not set")
