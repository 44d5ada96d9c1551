"""Secrets out of recorded text, by value and by kind.

Errors and response bodies are stored (action records, dead letters, logs) and shown
(`/admin/events/{id}`, `/admin/dead-letters`, the CLI). An outside system or a library may
echo the request in them, so before anything is recorded:

- by value: each secret a connector declares (`Connector.secrets`), whatever its length,
  together with its base64 (standard and URL-safe) and percent-encoded forms, so an echoed
  `Authorization: Basic base64(email:token)` goes too when the connector declares the
  `email:token` pair;
- by kind, whatever the value: the credential of an Authorization header of any scheme
  (Basic, Bearer, Token, GenieKey, OAuth, …), values of API-key-like headers and fields
  (`X-Api-Key`, `api_key`, `routing_key`, `token`, `password`, `secret`, …), and the
  user-info part of URLs (`https://user:pass@host`).

Every match becomes `***`; the scheme or field name is kept so the text still says what
was there.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote

MASK = "***"

#: A header or field whose value is a credential, in the forms services echo them:
#: `Authorization: Basic …`, `"authorization": "Bearer …"`, `authorization=GenieKey …`.
_AUTH_HEADER = re.compile(
    r"""(?P<name>\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?P<scheme>[A-Za-z][\w.-]*\s+)?"""
    r"""(?P<cred>[^\s"',;}\]]+)""", re.I)
#: A bare `Scheme credential` pair outside a header (e.g. inside a library's error text). The
#: credential must look like one (8+ token characters, a digit or one of `+/=` among them), so
#: prose such as "Basic authentication is deprecated" stays readable.
_SCHEME_CRED = re.compile(r"\b(?P<scheme>Basic|Bearer|Token|GenieKey|OAuth|Digest|ApiKey|SSWS|Splunk)\s+"
                          r"(?P<cred>(?=[A-Za-z._~-]*[0-9+/=])[A-Za-z0-9._~+/=-]{8,})", re.I)
#: Fields named like a credential: `X-Api-Key: …`, `"api_key": "…"`, `token=…`, `password: …`.
_KEY_FIELD = re.compile(
    r"""(?P<name>\b(?:x-)?(?:api[-_]?key|apikey|api[-_]?token|access[-_]?token|auth[-_]?token|private[-_]?token|"""
    r"""routing[-_]?key|integration[-_]?key|token|password|passwd|secret|client[-_]?secret)["']?\s*[:=]\s*["']?)"""
    r"""(?P<cred>[^\s"',;&}\]]+)""", re.I)
#: Words one of which each pattern above needs (its schemes; every field name ends in one).
_SCHEMES = ("basic", "bearer", "token", "geniekey", "oauth", "digest", "apikey", "ssws", "splunk")
_KEY_WORDS = ("key", "token", "passw", "secret")
#: Credentials in a URL's user-info: `scheme://user:pass@host` or `scheme://token@host`.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/\s@\"'<>]+)@", re.I)


@lru_cache(maxsize=256)
def _forms(secret: str) -> frozenset[str]:
    """The secret and how it travels encoded: base64 (std, URL-safe, unpadded), percent-encoded.
    Kept per secret: they are the process's own credentials (few), scrubbed on every attempt."""
    raw = secret.encode("utf-8", "surrogatepass")
    b64 = base64.b64encode(raw).decode()
    forms = {secret, b64, b64.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
             quote(secret, safe=""), quote(secret)}
    return frozenset(f for f in forms if f)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret (by value, any length, and its encodings) and every
    credential-shaped value (by kind) replaced by ***."""
    if not text:
        return text
    forms: set[str] = set()
    for s in secrets:
        if s:
            forms |= _forms(str(s))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    # Each pattern is run only where the words it needs occur. For ASCII text that check is
    # exact (lower() is all that IGNORECASE does there); other text runs every pattern.
    low = text.lower() if text.isascii() else None
    if low is None or "authorization" in low:
        text = _AUTH_HEADER.sub(lambda m: m["name"] + (m["scheme"] or "") + MASK, text)
    if low is None or any(word in low for word in _SCHEMES):
        text = _SCHEME_CRED.sub(lambda m: m["scheme"] + " " + MASK, text)
    if low is None or any(word in low for word in _KEY_WORDS):
        text = _KEY_FIELD.sub(lambda m: m["name"] + (m["cred"] if m["cred"] == MASK else MASK), text)
    if "://" not in text:
        return text
    return _URL_USERINFO.sub(lambda m: m["scheme"] + MASK + "@", text)
