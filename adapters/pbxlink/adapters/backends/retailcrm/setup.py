"""Open the RetailCRM backend for the adapter: settings, API key, HTTP client, module registration."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog

from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy, RemoteRejected, RemoteUnavailable
from pbxlink.adapters.backends.retailcrm.backend import RetailCrm, describe_error
from pbxlink.adapters.backends.retailcrm.directory import RetailCrmDirectory
from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings
from pbxlink.adapters.store import Store
from pbxlink.foundation.config import Secret
from pbxlink.foundation.errors import ConfigError, ConfigProblem
from pbxlink.rules.settings import CrmSettings

log = structlog.get_logger()


def api_key(s: RetailCrmSettings) -> Secret:
    """The API key the loader read from api_key_file or the credential (ConfigError if neither)."""
    if s.api_key is None:
        raise ConfigError(
            [
                ConfigProblem(
                    "crm.retailcrm.api_key_file",
                    f"required (or the systemd credential {s.api_key_credential})",
                )
            ]
        )
    return s.api_key


def policy_of(s: RetailCrmSettings) -> RemotePolicy:
    return RemotePolicy(
        rate_per_second=float(s.rate_limit),
        read_timeout=float(s.timeout_seconds),
        retry_budget_seconds=float(s.retry_seconds),
    )


@contextlib.asynccontextmanager
async def open_retailcrm(store: Store, crm: CrmSettings, s: RetailCrmSettings) -> AsyncIterator[RetailCrm]:
    """The backend with its HTTP client (closed on exit); the module registered if asked."""
    async with RemoteClient(
        s.base_url,
        name="retailcrm",
        headers={"X-API-KEY": api_key(s).reveal()},
        policy=policy_of(s),
        describe_error=describe_error,
    ) as client:
        backend = RetailCrm(store, crm, s, client)
        if s.register_module:
            try:
                await backend.register_module()
            except RemoteUnavailable as exc:
                log.warning("retailcrm_module_not_registered", error=str(exc), retry="at the next start")
            except RemoteRejected as exc:
                log.error("retailcrm_module_refused", error=exc.reason)
        yield backend


def directory_feed(backend: RetailCrm) -> RetailCrmDirectory | None:
    """The directory feed of an open backend (sharing its client, so one rate limit), if on."""
    if not backend.s.directory:
        return None
    return RetailCrmDirectory(backend.store, backend.client, backend.s, backend.crm)
