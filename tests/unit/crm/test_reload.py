"""`apply_reload`, what SIGHUP runs: new rules for the next batch, a bad file refused, sections
that need a restart named (the process-level test is tests/integration/crm/test_adapter_reload.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog

from pbxlink.adapters.config import Settings, settings_from_toml
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.service import apply_reload
from pbxlink.adapters.store import open_store
from pbxlink.foundation.errors import ConfigError, ConfigProblem

RULES = '[crm.inquiries]\nnext_number = 1\n[crm.inquiries.on_missed]\nenabled = true\ntype = "Первый"\n'


async def _adapter(tmp_path: Path) -> CrmAdapter:
    settings = settings_from_toml(f'[adapter]\ndatabase = "{tmp_path / "crm.sqlite3"}"\n' + RULES)
    return CrmAdapter(settings, await open_store(settings.adapter.database))


async def test_new_rules_are_used_and_a_new_next_number_reaches_the_counter(tmp_path: Path) -> None:
    adapter = await _adapter(tmp_path)
    try:
        new = settings_from_toml(
            f'[adapter]\ndatabase = "{tmp_path / "crm.sqlite3"}"\n'
            + RULES.replace("Первый", "Второй").replace("next_number = 1", "next_number = 40")
        )
        with structlog.testing.capture_logs() as logs:
            assert await apply_reload(adapter, lambda: new)
        assert adapter.processor.settings.inquiries.on_missed.type == "Второй"
        assert adapter.settings.crm == new.crm
        rows = await adapter.store.db.execute_fetchall("SELECT next_counter FROM numbering")
        assert [tuple(r) for r in rows] == [(40,)]
        [reloaded] = [e for e in logs if e["event"] == "crm_adapter_reloaded"]
        assert reloaded["changed"] == ["crm.inquiries"]
        assert not [e for e in logs if e["event"] == "crm_adapter_reload_needs_restart"]
    finally:
        await adapter.store.close()


async def test_a_bad_configuration_is_refused_and_the_running_rules_stay(tmp_path: Path) -> None:
    adapter = await _adapter(tmp_path)
    try:
        before = adapter.processor.settings

        def bad() -> Settings:
            raise ConfigError(
                [ConfigProblem("crm.tasks.assignee", "unknown key"), ConfigProblem("crm.pick", "bad")]
            )

        with structlog.testing.capture_logs() as logs:
            assert not await apply_reload(adapter, bad)
        assert adapter.processor.settings is before
        [refused] = [e for e in logs if e["event"] == "crm_adapter_reload_refused"]
        assert refused["problems"] == ["crm.tasks.assignee: unknown key", "crm.pick: bad"]
    finally:
        await adapter.store.close()


async def test_adapter_and_broker_changes_are_named_as_needing_a_restart(tmp_path: Path) -> None:
    adapter = await _adapter(tmp_path)
    try:
        old = adapter.settings
        new = replace(
            old,
            adapter=replace(old.adapter, name="other"),
            mqtt=replace(old.mqtt, port=old.mqtt.port + 1),
        )
        with structlog.testing.capture_logs() as logs:
            assert await apply_reload(adapter, lambda: new)
        [restart] = [e for e in logs if e["event"] == "crm_adapter_reload_needs_restart"]
        assert restart["keys"] == ["adapter.name", "mqtt.port"]
        assert (adapter.settings.adapter, adapter.settings.mqtt) == (old.adapter, old.mqtt)  # kept running
    finally:
        await adapter.store.close()
