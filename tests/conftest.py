"""Session fixtures for the real lab (owned by the lab part; see docs/lab.md).

* ``asterisk_lab`` (session): a real Asterisk 22 from the cached Debian sid
  chroot on 127.0.0.1, on its own instance offset (``PBXLAB_OFFSET`` if set,
  else the first free one of 13-39, claimed with a lock so concurrent test
  sessions never share one).  Yields a :class:`pbxlab.session.LabSession`:
  ``.host .ami_port .ami_user .ami_secret .sip_port .agi_port .offset``,
  ``.ami()`` for a stdlib AMI session, ``.run(name)`` to place a named
  scenario, ``.restart_asterisk()`` for fault tests.  Stopped by pid at the end.
* ``asterisk_lab_freepbx`` (session): the same on another offset, with the FreePBX-style
  dialplan profile (tests/lab/profiles/freepbx).
* ``mosquitto_broker`` (function): a fresh mosquitto on a free loopback port
  with its own config and persistence; ``.host .port .pid .stop(kill=)
  .start() .restart()``.  Stopped by pid at the end.

If the lab cannot start, these fixtures FAIL with the reason (they never
skip).  Tests that use them are marked ``lab`` automatically, so
``-m "not lab"`` deselects them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pbxlab.instance import LabError
from pbxlab.mosquitto import BrokerHandle, BrokerTls
from pbxlab.pki import LabPki, make_test_pki
from pbxlab.session import LabSession

LAB_FIXTURES = {"asterisk_lab", "asterisk_lab_freepbx", "mosquitto_broker", "tls_broker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def asterisk_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    env = os.environ.get("PBXLAB_OFFSET")
    try:
        offset = int(env) if env else None
    except ValueError:
        pytest.fail(f"PBXLAB_OFFSET must be an integer, got {env!r}")
    try:
        lab = LabSession.open(offset, workdir=tmp_path_factory.mktemp("pbxlab"))
    except LabError as exc:
        pytest.fail(f"the Asterisk lab could not start: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def asterisk_lab_freepbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """A second lab instance whose dialplan is the FreePBX profile (docs/lab.md); its own
    offset (the first free one of 13-39), so it runs beside ``asterisk_lab``."""
    try:
        lab = LabSession.open(workdir=tmp_path_factory.mktemp("pbxlab-freepbx"), profile="freepbx")
    except LabError as exc:
        pytest.fail(f"the FreePBX-profile Asterisk lab could not start: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[BrokerHandle]:
    try:
        broker = BrokerHandle(f"test-{os.getpid()}-{tmp_path.name}", tmp_path / "mosquitto")
    except LabError as exc:
        pytest.fail(f"mosquitto could not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[BrokerHandle, LabPki]]:
    """A mosquitto whose only listener is TLS and that requires a client certificate."""
    pki = make_test_pki(tmp_path / "pki")
    tls = BrokerTls(pki.ca_file, pki.server_cert, pki.server_key, require_certificate=True)
    try:
        broker = BrokerHandle(f"tls-{os.getpid()}-{tmp_path.name}", tmp_path / "mosquitto", tls=tls)
    except LabError as exc:
        pytest.fail(f"mosquitto could not start: {exc}", pytrace=False)
    try:
        yield broker, pki
    finally:
        broker.stop()
