"""Open the Bitrix24 backend for the adapter: settings, secrets, HTTP client, external lines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import structlog

from pbxlink.adapters.backends.bitrix24.api import Bitrix24Api, TokenStore, open_client
from pbxlink.adapters.backends.bitrix24.backend import Bitrix24
from pbxlink.adapters.backends.bitrix24.directory import Bitrix24Directory
from pbxlink.adapters.backends.bitrix24.settings import Bitrix24Settings
from pbxlink.adapters.backends.remote import RemoteRejected, RemoteUnavailable
from pbxlink.adapters.store import Store
from pbxlink.rules.settings import CrmSettings

log = structlog.get_logger()


@contextlib.asynccontextmanager
async def open_bitrix24(
    store: Store,
    crm: CrmSettings,
    s: Bitrix24Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Bitrix24]:
    """The backend with its HTTP client (closed on exit); the external lines added if asked."""
    tokens = None
    if s.auth == "oauth":
        assert s.client_secret is not None
        assert s.refresh_token is not None
        tokens = TokenStore(s, s.client_secret, s.refresh_token, transport=transport)
    async with open_client(s, transport=transport) as client:
        backend = Bitrix24(store, crm, s, Bitrix24Api(client, s, tokens))
        if s.register_lines and s.lines:
            try:
                await backend.register_lines()
            except RemoteUnavailable as exc:
                log.warning("crm.bitrix24.lines_not_registered", error=str(exc), retry="at the next start")
            except RemoteRejected as exc:
                log.error("crm.bitrix24.lines_refused", error=exc.reason)
        yield backend


def bitrix24_directory(backend: Bitrix24) -> Bitrix24Directory | None:
    """The directory feed of an open backend (sharing its client, so one rate limit), if on."""
    if not backend.s.directory:
        return None
    return Bitrix24Directory(backend.store, backend.api, backend.s, backend.crm)
