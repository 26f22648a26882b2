"""`[crm.bitrix24]` and `[crm.webhook]` read by the one loader: every problem named by its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxlink.adapters.config import settings_from_toml
from pbxlink.foundation.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_toml(text)
    return [str(p) for p in caught.value.problems]


def test_a_webhook_url_is_read_from_its_file_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "hook"
    secret.write_text("https://portal.example/rest/1/s3cr3t/\n")
    settings = settings_from_toml(
        f'[crm]\nbackend = "bitrix24"\n[crm.bitrix24]\nwebhook_url_file = "{secret}"\n'
    )
    s = settings.crm.bitrix24
    assert s.webhook_url is not None
    assert s.webhook_url.reveal() == "https://portal.example/rest/1/s3cr3t/"
    assert "s3cr3t" not in repr(s)


def test_bitrix24_without_a_webhook_url_or_with_a_wrong_one_is_refused(tmp_path: Path) -> None:
    [missing] = problems('[crm]\nbackend = "bitrix24"\n')
    assert missing.startswith("crm.bitrix24.webhook_url_file: required")
    secret = tmp_path / "hook"
    secret.write_text("not a url\n")
    [wrong] = problems(f'[crm]\nbackend = "bitrix24"\n[crm.bitrix24]\nwebhook_url_file = "{secret}"\n')
    assert "https://<portal>/rest/<user>/<token>/" in wrong


def test_oauth_needs_the_portal_the_client_and_both_secrets() -> None:
    found = problems('[crm]\nbackend = "bitrix24"\n[crm.bitrix24]\nauth = "oauth"\nbatch_size = 51\n')
    paths = sorted(p.split(":")[0] for p in found)
    assert paths == [
        "crm.bitrix24.batch_size",
        "crm.bitrix24.client_id",
        "crm.bitrix24.client_secret_file",
        "crm.bitrix24.portal",
        "crm.bitrix24.refresh_token_file",
    ]


def test_a_webhook_backend_needs_subscribers_with_urls_secrets_and_known_filters() -> None:
    assert problems('[crm]\nbackend = "webhook"\n') == [
        "crm.webhook.subscribers: at least one subscriber with backend = webhook"
    ]
    found = problems(
        '[crm]\nbackend = "webhook"\n[crm.webhook.subscribers.erp]\n'
        'url = "ftp://x"\nmessages = ["call.nope"]\n'
    )
    assert sorted(p.split(":")[0] for p in found) == [
        "crm.webhook.subscribers.erp.messages",
        "crm.webhook.subscribers.erp.secret_file",
        "crm.webhook.subscribers.erp.url",
    ]


def test_other_backends_tables_are_not_checked_when_not_chosen() -> None:
    settings = settings_from_toml(
        '[crm]\nbackend = "sqlite"\n[crm.bitrix24]\nauth = "oauth"\n[crm.webhook]\n'
    )
    assert settings.crm.backend == "sqlite"
