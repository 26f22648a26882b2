"""Fixtures of the gateway tests: a real IMAP server (dovecot) and the fake Telegram Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pbxlab.dovecot import TEST_MAILBOX, TEST_PASSWORD, Dovecot, dovecot_available, running_dovecot
from pbxlab.telegram_fake import FakeBotApi


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A dovecot-imapd on 127.0.0.1 (IMAPS, the lab's throw-away CA) with the mailbox TEST_MAILBOX.
    Installed by tests/lab/host-packages.sh mail; fails (never skips) when it cannot start."""
    if not dovecot_available():
        pytest.fail("dovecot is not installed (tests/lab/host-packages.sh mail) or not root", pytrace=False)
    with running_dovecot({TEST_MAILBOX: TEST_PASSWORD, "sales@shop.example": TEST_PASSWORD}) as server:
        yield server


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeBotApi]:
    api = await FakeBotApi().start()
    try:
        yield api
    finally:
        await api.stop()
