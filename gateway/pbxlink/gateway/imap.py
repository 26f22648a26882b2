"""E-mail accounts: a mailbox read over IMAP (TLS), each new message → a request.

The loop, per account::

    connect (TLS) → LOGIN → SELECT folder (UIDVALIDITY, UIDNEXT)
    loop: UID FETCH the messages above the last processed UID, one by one:
              parse (pbxlink.gateway.mail) → request or dead letter
              store it WITH the new last UID in one transaction   ← durable first
              UID STORE +FLAGS (\\Seen)                             ← then the server is told
          IDLE until the server reports a change (or idle_seconds), else sleep poll_seconds
    on a lost connection or a timeout: back off (the one reconnect policy) and start again

The cursor is ``{"uidvalidity", "uid"}`` per source. A different UIDVALIDITY (the folder was
re-created) starts the folder again from its first message; the Message-IDs already turned into
requests are skipped, so nothing is processed twice. The first connection ever processes only the
unseen messages (an existing mailbox's history is not the CRM's work).

A request's id is ``<gateway>:email:<address>:<uidvalidity>:<uid>``. A reply (``In-Reply-To`` /
``References``) names the requests its thread became (``replies_to``); the adapter links it to the
interest they created.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from typing import Any, Final

import aioimaplib
import structlog

from pbxlink.gateway.config import EmailAccount
from pbxlink.gateway.intake import DeadLetter, Intake
from pbxlink.gateway.mail import MailRejected, parse_mail
from pbxlink.gateway.shutdown import unless_stopped
from pbxlink.toolkit.reconnect import Backoff, Reconnect
from pbxlink.wire.model import Attachment, Request, RequestChannel, Sender

__all__ = ["ImapError", "ImapSource"]

log = structlog.get_logger("pbxlink.gateway.imap")

_UIDVALIDITY: Final = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT: Final = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_UID: Final = re.compile(rb"UID (\d+)")
_FETCH_SIZE: Final = re.compile(rb"RFC822\.SIZE (\d+)")
_MAX_MESSAGE_FAILURES: Final = 3  # attempts (each after a reconnect) before a message is a dead letter


class ImapError(Exception):
    """The server said NO/BAD, or the connection is gone."""


@dataclass(frozen=True, slots=True)
class _Fetched:
    uid: int
    size: int


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        text = b" ".join(x for x in response.lines if isinstance(x, bytes))[:200]
        raise ImapError(f"{what}: {response.result} {text.decode('utf-8', 'replace')}")
    return response


def _tls_context(account: EmailAccount) -> ssl.SSLContext | None:
    if not account.tls:
        return None
    return ssl.create_default_context(cafile=str(account.ca_file) if account.ca_file else None)


class ImapSource:
    def __init__(self, name: str, account: EmailAccount, intake: Intake) -> None:
        self.name = name
        self.account = account
        self.intake = intake
        self.source = f"email:{account.mailbox_address}"
        self.policy = Reconnect(
            Backoff(1.0, 120.0),
            transient=(OSError, TimeoutError, ImapError, aioimaplib.AioImapException),
        )
        self._failures: dict[tuple[int, int], int] = {}
        self.wake = asyncio.Event()  # tests and SIGHUP-like nudges: look now instead of after poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        metrics = self.intake.metrics
        while not stop.is_set():
            try:
                await self._session(stop)
            except self.policy.transient as exc:
                metrics.source_up.labels(self.source).set(0)
                metrics.source_errors.labels(self.source).inc()
                delay = self.policy.failed()
                log.warning(
                    "gateway_imap_retry",
                    source=self.source,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 2),
                )
                if not await self.policy.wait(delay, stop):
                    break
        metrics.source_up.labels(self.source).set(0)

    async def _session(self, stop: asyncio.Event) -> None:
        account = self.account
        lost = asyncio.Event()
        client = aioimaplib.IMAP4(
            host=account.host,
            port=account.port,
            timeout=account.command_timeout_seconds,
            conn_lost_cb=lambda _exc: lost.set(),
            ssl_context=_tls_context(account),
        )
        try:
            await client.wait_hello_from_server()
            assert account.password is not None
            _ok(await client.login(account.username, account.password.reveal()), "LOGIN")
            selected = _ok(await client.select(account.folder), f"SELECT {account.folder}")
            uidvalidity, uidnext = self._select_info(selected.lines)
            self.policy.succeeded()
            self.intake.metrics.source_up.labels(self.source).set(1)
            idle = account.idle and client.has_capability("IDLE")
            log.info(
                "gateway_imap_connected",
                source=self.source,
                host=account.host,
                folder=account.folder,
                uidvalidity=uidvalidity,
                idle=idle,
            )
            while not stop.is_set():
                if lost.is_set():
                    raise ImapError("connection lost")
                await self._catch_up(client, uidvalidity, uidnext)
                if idle:
                    await self._idle(client, stop, lost)
                else:
                    self.wake.clear()
                    await unless_stopped(
                        _wait_any(self.wake, lost, account.poll_seconds),
                        stop,
                        name=f"gateway:{self.source}:poll",
                    )
                    if not lost.is_set() and not stop.is_set():
                        _ok(await client.noop(), "NOOP")
        finally:
            if not lost.is_set():
                with contextlib.suppress(OSError, TimeoutError, aioimaplib.AioImapException):
                    await asyncio.wait_for(client.logout(), 5)
            transport = client.protocol.transport if client.protocol is not None else None
            if transport is not None:
                transport.close()

    @staticmethod
    def _select_info(lines: list[Any]) -> tuple[int, int | None]:
        data = b" ".join(x for x in lines if isinstance(x, bytes))
        validity = _UIDVALIDITY.search(data)
        if validity is None:
            raise ImapError("SELECT: the server reported no UIDVALIDITY")
        nxt = _UIDNEXT.search(data)
        return int(validity.group(1)), int(nxt.group(1)) if nxt else None

    async def _idle(self, client: aioimaplib.IMAP4, stop: asyncio.Event, lost: asyncio.Event) -> None:
        idle = await client.idle_start(timeout=self.account.idle_seconds)
        try:
            await unless_stopped(
                _first_push(client, lost, self.account.idle_seconds + 5),
                stop,
                name=f"gateway:{self.source}:idle",
            )
        finally:
            if not lost.is_set():
                client.idle_done()
                try:
                    await asyncio.wait_for(idle, 10)
                except TimeoutError as exc:
                    raise ImapError("no answer to IDLE DONE") from exc

    async def _catch_up(self, client: aioimaplib.IMAP4, uidvalidity: int, uidnext: int | None) -> None:
        state = await self.intake.store.cursor(self.source)
        if state is None:
            # first connection ever: the unseen messages are the work; the rest is history.
            found = _ok(await client.uid_search("UNSEEN", charset=None), "UID SEARCH UNSEEN")
            unseen = sorted(
                int(x)
                for line in found.lines[:-1]
                if isinstance(line, bytes)
                for x in line.split()
                if x.isdigit()
            )
            start = (uidnext - 1) if uidnext else 0
            sizes = {item.uid: item.size for item in await self._new_uids(client, 0)} if unseen else {}
            for uid in unseen:
                await self._process_or_give_up(client, uidvalidity, uid, 0, size=sizes.get(uid))
            if not unseen or unseen[-1] < start:
                await self.intake.store.store(
                    [], self.intake.clock(), cursor=(self.source, {"uidvalidity": uidvalidity, "uid": start})
                )
            return
        last = int(state["uid"])
        if int(state["uidvalidity"]) != uidvalidity:
            log.warning(
                "gateway_imap_uidvalidity_changed",
                source=self.source,
                old=state["uidvalidity"],
                new=uidvalidity,
                action="reading the folder again; Message-IDs already processed are skipped",
            )
            last = 0
            cursor = (self.source, {"uidvalidity": uidvalidity, "uid": 0})
            await self.intake.store.store([], self.intake.clock(), cursor=cursor)
        for item in await self._new_uids(client, last):
            await self._process_or_give_up(client, uidvalidity, item.uid, last, size=item.size)
            last = item.uid

    async def _process_or_give_up(
        self,
        client: aioimaplib.IMAP4,
        uidvalidity: int,
        uid: int,
        previous: int,
        *,
        size: int | None,
    ) -> None:
        try:
            await self._process(client, uidvalidity, uid, previous=previous, size=size)
        except self.policy.transient as exc:
            # a server that cannot read a message answers NO, or drops the connection (dovecot
            # does): both count against the message. An outage fails at connect time instead,
            # so it takes a message failing while connected, several times in a row, to give up.
            await self._give_up_after_retries(uidvalidity, uid, previous, exc)

    async def _give_up_after_retries(
        self, uidvalidity: int, uid: int, previous: int, exc: BaseException
    ) -> None:
        """The server keeps failing on one message (NO to its FETCH, or no answer while the
        connection stays up): after a few reconnects it
        becomes a dead letter, so one broken message does not stop the mailbox for ever."""
        key = (uidvalidity, uid)
        self._failures[key] = self._failures.get(key, 0) + 1
        if self._failures[key] < _MAX_MESSAGE_FAILURES:
            raise exc  # reconnect and try again
        del self._failures[key]
        gateway = self.intake.settings.gateway
        request_id = f"{gateway.name}:email:{self.account.mailbox_address}:{uidvalidity}:{uid}"
        reason = f"the server failed {_MAX_MESSAGE_FAILURES} times on this message: {exc}"
        letter = DeadLetter(request_id, self.source, "unfetchable", reason, b"")
        cursor = (self.source, {"uidvalidity": uidvalidity, "uid": max(uid, previous)})
        await self.intake.accept((), (letter,), cursor=cursor)

    async def _new_uids(self, client: aioimaplib.IMAP4, last: int) -> list[_Fetched]:
        response = _ok(await client.uid("fetch", f"{last + 1}:*", "(UID RFC822.SIZE)"), "UID FETCH")
        found: dict[int, _Fetched] = {}
        for line in response.lines:
            if not isinstance(line, bytes | bytearray) or b"FETCH" not in line:
                continue
            uid, size = _FETCH_UID.search(line), _FETCH_SIZE.search(line)
            if uid is not None and int(uid.group(1)) > last:  # "n:*" always returns the newest one
                found[int(uid.group(1))] = _Fetched(int(uid.group(1)), int(size.group(1)) if size else 0)
        return [found[k] for k in sorted(found)]

    async def _fetch_raw(self, client: aioimaplib.IMAP4, uid: int, part: str) -> bytes:
        response = _ok(await client.uid("fetch", str(uid), f"({part})"), f"UID FETCH {uid}")
        literals = [bytes(x) for x in response.lines if isinstance(x, bytearray)]
        if not literals:
            raise ImapError(f"UID FETCH {uid}: no message data (expunged meanwhile?)")
        return literals[0]

    async def _process(
        self, client: aioimaplib.IMAP4, uidvalidity: int, uid: int, *, previous: int, size: int | None = None
    ) -> None:
        gateway = self.intake.settings.gateway
        request_id = f"{gateway.name}:email:{self.account.mailbox_address}:{uidvalidity}:{uid}"
        cursor = (self.source, {"uidvalidity": uidvalidity, "uid": max(uid, previous)})
        if size is not None and size > gateway.max_message_bytes:
            head = await self._fetch_raw(client, uid, "BODY.PEEK[HEADER]")
            reason = f"message of {size} bytes is over the cap of {gateway.max_message_bytes}"
            await self.intake.accept(
                (), (DeadLetter(request_id, self.source, "too_large", reason, head),), cursor=cursor
            )
        else:
            raw = await self._fetch_raw(client, uid, "BODY.PEEK[]")
            await self._store_mail(raw, request_id, cursor)
        _ok(await client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"), f"UID STORE {uid}")

    async def _store_mail(self, raw: bytes, request_id: str, cursor: tuple[str, dict[str, int]]) -> None:
        gateway = self.intake.settings.gateway
        try:
            mail = parse_mail(raw, max_bytes=gateway.max_message_bytes, max_body_chars=gateway.max_body_chars)
        except MailRejected as exc:
            await self.intake.accept(
                (), (DeadLetter(request_id, self.source, exc.kind, exc.reason, raw),), cursor=cursor
            )
            return
        except Exception as exc:  # noqa: BLE001 - one unreadable mail must not block the mailbox forever
            reason = f"could not be read: {type(exc).__name__}: {exc}"
            letter = DeadLetter(request_id, self.source, "malformed_mime", reason, raw)
            await self.intake.accept((), (letter,), cursor=cursor)
            return
        if mail.message_id is not None and await self.intake.store.requests_of_thread([mail.message_id]):
            log.info("gateway_imap_already_processed", source=self.source, message_id=mail.message_id)
            await self.intake.store.store([], self.intake.clock(), cursor=cursor)
            return
        if self.intake.flooding(self.source, mail.sender_email):
            reason = f"flood from {mail.sender_email}: over {gateway.flood_per_minute}/min"
            await self.intake.accept(
                (), (DeadLetter(request_id, self.source, "flood", reason, raw),), cursor=cursor
            )
            return
        request = Request(
            id=request_id,
            channel=RequestChannel.EMAIL,
            source=self.source,
            received_at=self.intake.now(),
            sender=Sender(name=mail.sender_name, email=mail.sender_email),
            subject=mail.subject,
            body=mail.body,
            message_id=mail.message_id,
            replies_to=await self.intake.store.requests_of_thread(mail.thread),
            attachments=tuple(
                Attachment(name=a.filename, content_type=a.content_type, size=a.size)
                for a in mail.attachments
            ),
        )
        threads = [(mail.message_id, request_id)] if mail.message_id else []
        await self.intake.accept(
            (request,), cursor=cursor, threads=threads, repaired={request_id: mail.problems}
        )


async def _wait_any(wake: asyncio.Event, lost: asyncio.Event, seconds: float) -> None:
    async with asyncio.TaskGroup() as group:
        waits = [
            group.create_task(wake.wait(), name="gateway:imap:wake"),
            group.create_task(lost.wait(), name="gateway:imap:lost"),
        ]
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()


async def _first_push(client: aioimaplib.IMAP4, lost: asyncio.Event, seconds: float) -> None:
    """Until the server pushes something during IDLE (EXISTS, EXPUNGE…), the connection is lost,
    or ``seconds`` pass."""

    async def push() -> None:
        with contextlib.suppress(TimeoutError):
            await client.wait_server_push(timeout=seconds)

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(push(), name="gateway:imap:push"),
            group.create_task(lost.wait(), name="gateway:imap:lost"),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
