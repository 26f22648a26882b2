"""The webhook signature as docs/webhook.md specifies it, checked against a hand-computed HMAC."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path

from pbxlink.adapters.backends.webhook import signing

BODY = b'{"id":"pbx1:1.1","type":"call.outcome"}'


def test_v1_is_hmac_sha256_hex_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signing.header([b"s3cret"], 1700000000, BODY) == f"t=1700000000,v1={expected}"


def test_during_rotation_both_signatures_are_sent_and_either_secret_verifies() -> None:
    value = signing.header([b"new", b"old"], 1700000000, BODY)
    assert value.count("v1=") == 2
    assert signing.verify(value, BODY, [b"old"], now=1700000010)
    assert signing.verify(value, BODY, [b"new"], now=1700000010)
    assert not signing.verify(value, BODY, [b"other"], now=1700000010)


def test_a_changed_body_or_a_timestamp_outside_the_window_is_refused() -> None:
    value = signing.header([b"k"], 1700000000, BODY)
    assert not signing.verify(value, BODY + b" ", [b"k"], now=1700000000)
    assert not signing.verify(value, BODY, [b"k"], now=1700000000 + signing.REPLAY_WINDOW_SECONDS + 1)
    assert not signing.verify(value, BODY, [b"k"], now=1700000000 - signing.REPLAY_WINDOW_SECONDS - 1)
    assert signing.verify(value, BODY, [b"k"], now=1700000000 + signing.REPLAY_WINDOW_SECONDS)


def test_a_header_without_timestamp_or_signature_is_refused() -> None:
    assert not signing.verify("v1=abc", BODY, [b"k"], now=0)
    assert not signing.verify("t=1700000000", BODY, [b"k"], now=1700000000)
    assert not signing.verify("", BODY, [b"k"], now=1700000000)


def test_the_python_snippet_in_docs_webhook_md_verifies_what_pbxlink_signs() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "webhook.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", doc, re.S)
    assert found is not None
    snippet: dict[str, object] = {}
    exec(found.group(1), snippet)
    verified = snippet["verified"]
    assert callable(verified)
    now = int(time.time())
    assert verified(signing.header([b"current-secret"], now, BODY), BODY)
    assert verified(signing.header([b"new", b"previous-secret"], now, BODY), BODY)
    assert not verified(signing.header([b"current-secret"], now, BODY), BODY + b"x")
    assert not verified(signing.header([b"current-secret"], now - 301, BODY), BODY)
