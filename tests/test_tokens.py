"""Token handling: length-independent comparison, and no empty Standard Webhooks key."""

from __future__ import annotations

import base64
import hmac
import time

import pytest

from hub.ingress import verify
from hub.ingress.verify import AuthError, check_token, hmac_sha256, tokens_equal, verify_standard_webhook


def test_tokens_compare_as_fixed_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(verify.hmac, "compare_digest", spy)
    assert tokens_equal("s3cret-token", "s3cret-token")
    assert not tokens_equal("s3cret-token", "s")
    assert not tokens_equal("s3cret-token", "s3cret-token-and-more")
    assert check_token(("tok-1", "another-longer-token"), "Bearer another-longer-token")
    assert not check_token(("tok-1",), "Basic " + base64.b64encode(b"u:tok-12").decode())
    # whatever the presented length, compare_digest only ever sees two 32-byte digests
    assert seen and set(seen) == {(32, 32)}


def test_non_utf8_tokens_compare_unequal() -> None:
    assert not tokens_equal("token", "tok\udcffen")


def test_an_empty_key_never_verifies_a_standard_webhook() -> None:
    """Signed with an empty HMAC key: refused even if a keyless secret slipped past settings."""
    body, msg_id, ts = b'{"a": 1}', "msg_1", int(time.time())
    sig = base64.b64encode(hmac_sha256(b"", f"{msg_id}.{ts}.".encode() + body)).decode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"v1,{sig}"}
    for secret in ("whsec_", "whsec_!!!!", "!!!!"):
        with pytest.raises(AuthError):
            verify_standard_webhook([secret], headers, body, 300)
