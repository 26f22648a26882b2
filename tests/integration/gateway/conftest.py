"""Fixtures of the gateway tests: a real IMAP server (dovecot) and the fake Telegram Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pbxlab.dovecot import Dovecot, dovecot_available, running_dovecot
from pbxlab.telegram_fake import FakeBotApi

MAILBOX = "service@shop.example"
PASSWORD = "imap-s3cret"  # noqa: S105 - a test mailbox


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A dovecot-imapd on 127.0.0.1 (IMAPS, the lab's throw-away CA) with the mailbox MAILBOX.
    Installed by tests/lab/host-packages.sh mail; fails (never skips) when it cannot start."""
    if not dovecot_available():
        pytest.fail("dovecot is not installed (tests/lab/host-packages.sh mail) or not root", pytrace=False)
    with running_dovecot({MAILBOX: PASSWORD, "sales@shop.example": PASSWORD}) as server:
        yield server


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeBotApi]:
    api = await FakeBotApi().start()
    try:
        yield api
    finally:
        await api.stop()
