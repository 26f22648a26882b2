"""Open the RetailCRM backend for the adapter: settings, API key, HTTP client, module registration."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy, RemoteRejected, RemoteUnavailable
from pbxlink.adapters.backends.retailcrm.backend import RetailCrm, describe_error
from pbxlink.adapters.backends.retailcrm.directory import RetailCrmDirectory
from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings, parse_retailcrm
from pbxlink.adapters.store import Store
from pbxlink.foundation.config import Secret, read_secret
from pbxlink.foundation.errors import ConfigError, ConfigProblem
from pbxlink.rules.settings import CrmSettings

log = structlog.get_logger()


def retailcrm_settings(crm: CrmSettings) -> RetailCrmSettings:
    """`[crm.retailcrm]` of settings whose backend is retailcrm (raises ConfigError)."""
    return parse_retailcrm(crm.backend_options)


def read_api_key(s: RetailCrmSettings) -> Secret:
    """crm.retailcrm.api_key_file, else the systemd credential retailcrm-api-key (ConfigError)."""
    if s.api_key_file is not None:
        return read_secret(s.api_key_file, "crm.retailcrm.api_key_file")
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    candidate = Path(credentials) / s.api_key_credential if credentials else None
    if candidate is not None and candidate.is_file():
        return read_secret(candidate, "crm.retailcrm.api_key_credential")
    raise ConfigError(
        [ConfigProblem("crm.retailcrm.api_key_file", f"required (or the credential {s.api_key_credential})")]
    )


def policy_of(s: RetailCrmSettings) -> RemotePolicy:
    return RemotePolicy(
        rate_per_second=float(s.rate_limit),
        read_timeout=float(s.timeout_seconds),
        retry_budget_seconds=float(s.retry_seconds),
    )


@contextlib.asynccontextmanager
async def open_retailcrm(store: Store, crm: CrmSettings, api_key: Secret) -> AsyncIterator[RetailCrm]:
    s = retailcrm_settings(crm)
    async with RemoteClient(
        s.url,
        name="retailcrm",
        headers={"X-API-KEY": api_key.reveal()},
        policy=policy_of(s),
        describe_error=describe_error,
    ) as client:
        backend = RetailCrm(store, crm, s, client)
        if s.register_module:
            try:
                await backend.register_module()
            except RemoteUnavailable as exc:
                log.warning("crm.retailcrm.module_not_registered", error=str(exc), retry="at the next start")
            except RemoteRejected as exc:
                log.error("crm.retailcrm.module_refused", error=exc.reason)
        yield backend


def directory_feed(backend: RetailCrm) -> RetailCrmDirectory | None:
    """The directory feed of an open backend (sharing its client, so one rate limit), if on."""
    if not backend.s.directory:
        return None
    return RetailCrmDirectory(backend.store, backend.client, backend.s, backend.crm)
