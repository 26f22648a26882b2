"""E-mail accounts against a real dovecot-imapd on loopback (IMAPS), mail delivered by doveadm."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from pbxlab.dovecot import TEST_MAILBOX as MAILBOX
from pbxlab.dovecot import TEST_PASSWORD as PASSWORD
from pbxlab.dovecot import Dovecot

from pbxlink.foundation.config import Secret
from pbxlink.gateway.config import EmailAccount, GatewaySettings, Settings
from pbxlink.gateway.imap import ImapSource
from pbxlink.gateway.intake import Intake
from pbxlink.gateway.metrics import GatewayMetrics
from pbxlink.gateway.store import GatewayStore, open_store
from pbxlink.toolkit.metrics import sample
from pbxlink.toolkit.reconnect import Backoff
from pbxlink.wire.codec import decode_envelope

pytestmark = pytest.mark.lab


def mail(sender: str, subject: str, body: str, *, message_id: str, in_reply_to: str | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = MAILBOX
    m["Subject"] = subject
    m["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        m["In-Reply-To"] = f"<{in_reply_to}>"
        m["References"] = f"<{in_reply_to}>"
    m.set_content(body)
    return m.as_bytes()


def account(server: Dovecot, **extra: object) -> EmailAccount:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "ca_file": server.ca_file,
        "username": MAILBOX,
        "password": Secret(PASSWORD),
        "poll_seconds": 1.0,
    }
    values.update(extra)
    return EmailAccount(**values)  # type: ignore[arg-type]


def make_source(store: GatewayStore, acc: EmailAccount, **gateway: object) -> tuple[Intake, ImapSource]:
    settings = Settings(gateway=GatewaySettings(name="gw1", email={"service": acc}, **gateway))  # type: ignore[arg-type]
    intake = Intake(store, settings, GatewayMetrics())
    return intake, ImapSource("service", acc, intake)


@contextlib.asynccontextmanager
async def reading(source: ImapSource) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(source.run(stop), name="test:imap")
        try:
            yield
        finally:
            stop.set()


async def wait_rows(store: GatewayStore, n: int, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while await store.backlog() < n:
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {n} rows stored"
        await asyncio.sleep(0.05)


async def requests_of(store: GatewayStore) -> list:  # type: ignore[type-arg]
    return [decode_envelope(r.payload).body for r in await store.pending() if r.topic.endswith("crm/request")]


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "polling"])
async def test_new_mail_becomes_a_request_and_is_marked_seen_after_it_is_stored(
    tmp_path: Path, dovecot: Dovecot, idle: bool
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_source(store, account(dovecot, idle=idle))
        async with reading(source):
            await asyncio.sleep(0.5)  # connected, the (empty) mailbox read
            dovecot.deliver(
                MAILBOX,
                mail(
                    "Иван Петров <ivan@client.example>",
                    "Сломался холодильник",
                    "Не работает с утра",
                    message_id="m1@client.example",
                ),
            )
            await wait_rows(store, 1)
            deadline = asyncio.get_running_loop().time() + 10
            while dovecot.flags(MAILBOX)[0][1].find("\\Seen") < 0:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        [request] = await requests_of(store)
        state = await store.cursor(f"email:{MAILBOX}")
        assert state is not None
        assert request.id == f"gw1:email:{MAILBOX}:{state['uidvalidity']}:1"
        assert state["uid"] == 1
        assert request.source == f"email:{MAILBOX}"
        assert request.channel.value == "email"
        assert request.sender.email == "ivan@client.example"
        assert request.sender.name == "Иван Петров"
        assert request.subject == "Сломался холодильник"
        assert request.body == "Не работает с утра"
        assert request.message_id == "m1@client.example"
        assert (
            sample(
                intake.metrics.registry,
                "pbxlink_gateway_requests_total",
                source=f"email:{MAILBOX}",
                channel="email",
            )
            == 1
        )
    finally:
        await store.close()


async def test_first_connection_reads_only_unseen_mail_and_restart_neither_repeats_nor_skips(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.deliver(MAILBOX, mail("a@x.example", "old", "history", message_id="old@x"))
    dovecot.deliver(MAILBOX, mail("b@x.example", "unseen", "waiting", message_id="unseen@x"))
    dovecot.mark_seen(MAILBOX, 1)  # read by a person before the gateway was set up
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_source(store, account(dovecot))
        async with reading(source):
            await wait_rows(store, 1)
            await asyncio.sleep(0.5)
        assert [r.subject for r in await requests_of(store)] == ["unseen"]
        # while the gateway is down, two more arrive; a restart reads exactly those
        dovecot.deliver(MAILBOX, mail("c@x.example", "third", "x", message_id="3@x"))
        dovecot.deliver(MAILBOX, mail("d@x.example", "fourth", "y", message_id="4@x"))
        _, source = make_source(store, account(dovecot))
        async with reading(source):
            await wait_rows(store, 3)
            await asyncio.sleep(0.5)
        assert [r.subject for r in await requests_of(store)] == ["unseen", "third", "fourth"]
    finally:
        await store.close()


async def test_a_reply_names_the_request_of_the_mail_it_answers(tmp_path: Path, dovecot: Dovecot) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_source(store, account(dovecot))
        dovecot.deliver(
            MAILBOX, mail("ivan@client.example", "Диван", "хочу диван", message_id="first@client.example")
        )
        async with reading(source):
            await wait_rows(store, 1)
            dovecot.deliver(
                MAILBOX,
                mail(
                    "ivan@client.example",
                    "Re: Диван",
                    "а синий есть?",
                    message_id="second@client.example",
                    in_reply_to="first@client.example",
                ),
            )
            await wait_rows(store, 2)
        first, reply = await requests_of(store)
        assert reply.replies_to == (first.id,)
        assert first.replies_to == ()
    finally:
        await store.close()


async def test_bad_mails_become_dead_letters_and_the_good_one_after_them_a_request(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_source(store, account(dovecot), max_message_bytes=4096)
        dovecot.deliver(MAILBOX, b"Subject: nobody\r\nMessage-ID: <n@x>\r\n\r\nwho sent this?\r\n")
        dovecot.deliver(MAILBOX, mail("big@x.example", "big", "z" * 10000, message_id="big@x"))
        dovecot.deliver(
            MAILBOX,
            b"From: a@x.example\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="zzz"\r\n\r\nno parts here at all\r\n',
        )
        dovecot.deliver(MAILBOX, mail("good@x.example", "fine", "a real request", message_id="good@x"))
        async with reading(source):
            await wait_rows(store, 4)
        rows = await store.pending()
        kinds = [json.loads(r.payload)["kind"] for r in rows if r.topic.endswith("deadletter")]
        assert kinds == ["no_sender", "too_large", "malformed_mime"]
        assert [r.subject for r in await requests_of(store)] == ["fine"]
        metric = "pbxlink_gateway_dead_letters_total"
        for kind in kinds:
            assert sample(intake.metrics.registry, metric, source=f"email:{MAILBOX}", kind=kind) == 1
    finally:
        await store.close()


async def test_imap_server_restart_is_survived_without_loss_or_duplicates(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_source(store, account(dovecot))
        async with reading(source):
            dovecot.deliver(MAILBOX, mail("a@x.example", "one", "1", message_id="1@x"))
            await wait_rows(store, 1)
            dovecot.stop()
            await asyncio.sleep(1.5)
            dovecot.start()  # doveadm needs the server's auth service: deliver while we are in backoff
            dovecot.deliver(MAILBOX, mail("a@x.example", "two", "2", message_id="2@x"))
            dovecot.deliver(MAILBOX, mail("a@x.example", "three", "3", message_id="3@x"))
            await wait_rows(store, 3, seconds=60)
            await asyncio.sleep(0.5)
        assert [r.subject for r in await requests_of(store)] == ["one", "two", "three"]
        assert (
            sample(intake.metrics.registry, "pbxlink_gateway_source_errors_total", source=f"email:{MAILBOX}")
            >= 1
        )
    finally:
        await store.close()


async def test_a_new_uidvalidity_reads_the_folder_again_without_repeating_known_mail(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_source(store, account(dovecot))
        dovecot.deliver(MAILBOX, mail("a@x.example", "kept", "1", message_id="kept@x"))
        async with reading(source):
            await wait_rows(store, 1)
        old = await store.cursor(f"email:{MAILBOX}")
        dovecot.stop()
        dovecot.recreate_inbox(MAILBOX)
        dovecot.start()
        await asyncio.sleep(1.1)  # dovecot's UIDVALIDITY is the creation time in seconds
        dovecot.deliver(
            MAILBOX, mail("a@x.example", "kept", "1", message_id="kept@x")
        )  # restored from a backup
        dovecot.deliver(MAILBOX, mail("b@x.example", "new", "2", message_id="new@x"))
        _, source = make_source(store, account(dovecot))
        async with reading(source):
            await wait_rows(store, 2)
            await asyncio.sleep(0.5)
        new = await store.cursor(f"email:{MAILBOX}")
        assert old is not None
        assert new is not None
        assert new["uidvalidity"] != old["uidvalidity"]
        assert [r.subject for r in await requests_of(store)] == ["kept", "new"]
    finally:
        await store.close()


async def test_one_sender_flooding_the_mailbox_gets_dead_letters_and_others_go_on(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_source(store, account(dovecot), flood_per_minute=1.0, flood_burst=2)
        for n in range(4):
            dovecot.deliver(MAILBOX, mail("bot@spam.example", f"offer {n}", "buy", message_id=f"o{n}@spam"))
        dovecot.deliver(MAILBOX, mail("ivan@client.example", "question", "real", message_id="q@client"))
        async with reading(source):
            await wait_rows(store, 5)
        assert [r.subject for r in await requests_of(store)] == ["offer 0", "offer 1", "question"]
        metric = "pbxlink_gateway_dead_letters_total"
        assert sample(intake.metrics.registry, metric, source=f"email:{MAILBOX}", kind="flood") == 2
    finally:
        await store.close()


async def test_a_message_the_server_cannot_read_becomes_a_dead_letter_after_retries(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.deliver(MAILBOX, mail("a@x.example", "broken on disk", "1", message_id="broken@x"))
    dovecot.deliver(MAILBOX, mail("b@x.example", "fine", "2", message_id="fine@x"))
    maildir = dovecot.directory / "mail" / MAILBOX / "Maildir"
    [broken] = [p for p in sorted((maildir / "new").iterdir()) if b"broken on disk" in p.read_bytes()]
    broken.chmod(0)  # the IMAP server (uid mail) can no longer read it: FETCH answers NO
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        acc = account(dovecot, command_timeout_seconds=2.0)
        intake, source = make_source(store, acc)
        source.policy.backoff = Backoff(0.05, 0.1)  # the retries themselves are not what is tested
        async with reading(source):
            await wait_rows(store, 2)
        rows = await store.pending()
        assert [json.loads(r.payload)["kind"] for r in rows if r.topic.endswith("deadletter")] == [
            "unfetchable"
        ]
        assert [r.subject for r in await requests_of(store)] == ["fine"]
        # two failed attempts, then the dead letter (dovecot drops the connection each time)
        errors = sample(
            intake.metrics.registry, "pbxlink_gateway_source_errors_total", source=f"email:{MAILBOX}"
        )
        assert errors >= 2
    finally:
        await store.close()
