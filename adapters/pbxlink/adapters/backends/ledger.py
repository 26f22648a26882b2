"""The exactly-once half of the remote-backend contract: every CRM write happens once.

A remote CRM cannot join the adapter's SQLite transaction, so a write to it can succeed while
the local commit that records it is lost (a crash, an outage mid-message). Three things make
every effect of a message happen once anyway; RetailCRM settled them, Bitrix24 and the signed
webhook use them as they are:

1. **The ledger** (`crm_effects`): message id + effect key → the CRM's id. A backend wraps
   every create in `EffectLedger.once(message_id, key, create, find)`. The row is written in
   the message's own transaction, beside its inbox row, so a redelivered or replayed message
   finds its customer/order/task and creates nothing. Keys name the effect, not its position
   ("client", "order", "task:101"), so a re-plan of the same message maps to the same keys.
2. **In-flight marks** (`crm_inflight`): before a batch touches the CRM, its message ids are
   committed as in flight (`begin`); the batch's commit removes them (`finish`). A message
   still in flight at its next attempt was interrupted (SIGKILL, outage) after writing to the
   CRM perhaps; for it (and only for it, to keep requests low) `once` first asks the backend's
   `find` whether the effect exists already, and records that id instead of creating again.
3. **The CRM's own idempotency keys** where it has them (RetailCRM: `externalId` of calls,
   customers and orders; Bitrix24: `EXTERNAL_CALL_ID`): the backend sends a key derived from
   the message, so even a lost ledger row meets a duplicate the CRM refuses or reports.

When a message fails transiently partway, the processor keeps (RELEASEs) its savepoint: the
ledger rows of the effects that did happen stay, and only the message's "done" mark is
missing. `crm_links` maps local keys to CRM ids (a phone number's E.164 form → customer ids),
so one real number keeps one customer whatever form it was typed in.

Batch hooks: a remote backend also implements `BatchHooks` so the processor can tell it where
batches begin and end (flush batched uploads before the commit) and show it the batch's
messages up front (`prepare_batch`: look-ups of a whole batch at once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from pbxlink.adapters.store import Store
from pbxlink.rules.calls import Envelope


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BatchHooks(Protocol):
    """What the processor tells a remote backend about batches (all inside the adapter's loop)."""

    async def begin_batch(self, message_ids: Sequence[str]) -> None:
        """Before the batch's transaction: commit in-flight marks (`EffectLedger.begin`)."""
        ...

    async def prepare_batch(self, envelopes: Sequence[Envelope]) -> None:
        """After `begin_batch`, before any message is planned: the batch's valid envelopes, so a
        backend can make the look-ups of the whole batch in a few requests (Bitrix24 `batch`)."""
        ...

    def begin_message(self, message_id: str, envelope: Envelope) -> None:
        """The message whose plan is applied next (ledger keys are per message)."""
        ...

    async def message_applied(self, message_id: str, envelope: Envelope) -> None:
        """Inside the message's savepoint, after its plan was applied, before it is marked done."""
        ...

    async def end_batch(self) -> None:
        """Inside the batch's transaction, before the commit: flush batched writes (may raise)."""
        ...

    def forget_batch(self) -> None:
        """The batch was rolled back: drop whatever it queued."""
        ...


class EffectLedger:
    """`crm_effects`, `crm_inflight` and `crm_links` of the adapter's database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._suspects: set[str] = set()

    async def begin(self, message_ids: Sequence[str]) -> frozenset[str]:
        """Mark a batch in flight (own committed transaction); return the ids that already were."""
        if not message_ids:
            return frozenset()
        async with self.store.transaction() as db:
            # Marks of messages that were dead-lettered meanwhile (never finished) go.
            await db.execute(
                "DELETE FROM crm_inflight "
                "WHERE message_id NOT IN (SELECT id FROM inbox WHERE state = 'pending')"
            )
            marks = ",".join("?" * len(message_ids))
            rows = await db.execute_fetchall(
                f"SELECT message_id FROM crm_inflight WHERE message_id IN ({marks})",  # noqa: S608 - placeholders only
                tuple(message_ids),
            )
            already = frozenset(str(r[0]) for r in rows)
            await db.executemany(
                "INSERT OR IGNORE INTO crm_inflight (message_id, since) VALUES (?, ?)",
                [(m, _now()) for m in message_ids],
            )
        self._suspects |= already
        return already

    def suspect(self, message_id: str) -> bool:
        """True if an earlier attempt of this message may have written to the CRM unrecorded."""
        return message_id in self._suspects

    async def finish(self, message_id: str) -> None:
        """In the message's transaction: it is done (or dead); no longer in flight."""
        await self.store.db.execute("DELETE FROM crm_inflight WHERE message_id = ?", (message_id,))
        self._suspects.discard(message_id)

    async def recorded(self, message_id: str, key: str) -> str | None:
        rows = await self.store.db.execute_fetchall(
            "SELECT crm_id FROM crm_effects WHERE message_id = ? AND key = ?", (message_id, key)
        )
        return next((str(r[0]) for r in rows), None)

    async def record(self, message_id: str, key: str, crm_id: str) -> None:
        await self.store.db.execute(
            "INSERT OR REPLACE INTO crm_effects (message_id, key, crm_id, at) VALUES (?, ?, ?, ?)",
            (message_id, key, crm_id, _now()),
        )

    async def once(
        self,
        message_id: str,
        key: str,
        create: Callable[[], Awaitable[str]],
        find: Callable[[], Awaitable[str | None]] | None = None,
    ) -> str:
        """The CRM id of this message's effect `key`: recorded, found (after an interruption) or created."""
        known = await self.recorded(message_id, key)
        if known is not None:
            return known
        if find is not None and self.suspect(message_id):
            found = await find()
            if found is not None:
                await self.record(message_id, key, found)
                return found
        created = await create()
        await self.record(message_id, key, created)
        return created

    async def effects(self, message_id: str) -> dict[str, str]:
        rows = await self.store.db.execute_fetchall(
            "SELECT key, crm_id FROM crm_effects WHERE message_id = ? ORDER BY rowid", (message_id,)
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def link(self, kind: str, key: str, crm_id: str) -> None:
        await self.store.db.execute(
            "INSERT OR IGNORE INTO crm_links (kind, key, crm_id) VALUES (?, ?, ?)", (kind, key, crm_id)
        )

    async def links(self, kind: str, key: str) -> tuple[str, ...]:
        rows = await self.store.db.execute_fetchall(
            "SELECT crm_id FROM crm_links WHERE kind = ? AND key = ? ORDER BY rowid", (kind, key)
        )
        return tuple(str(r[0]) for r in rows)


async def prune_ledger(store: Store) -> int:
    """Forget the effects of messages the inbox forgot (after `inbox_retention_days`)."""
    async with (
        store.transaction() as db,
        db.execute("DELETE FROM crm_effects WHERE message_id NOT IN (SELECT id FROM inbox)") as cursor,
    ):
        return cursor.rowcount
