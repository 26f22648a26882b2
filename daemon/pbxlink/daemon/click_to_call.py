"""Click-to-call: a CRM's "call this number" lands here and becomes an AMI Originate.

RetailCRM calls the telephony module's `makeCallUrl` (registered by the RetailCRM backend from
`[crm.retailcrm] make_call_url`) with `clientId` (the module's secret), `code` (the manager's
extension) and `phone`. pbxlink checks `clientId` against `[click_to_call]`'s secret (constant
time), checks the extension against the agents' endpoint pattern and the number, then sends
AMI `Originate`: the agent's phone rings first (`channel`, e.g. PJSIP/101); when the agent
answers, the dialplan (`context`) dials the customer. Answers: 200 `{"success": true}`, 403 for
a wrong secret, 400 for a bad extension or number, 503 while AMI is down; nothing is originated
unless the answer is 200.

The listener is its own (`host`/`port`), apart from /metrics: it is the one endpoint meant to be
reached from outside (through a reverse proxy with TLS).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
from aiohttp import web

from pbxlink.foundation.config import AtLeast, Secret
from pbxlink.foundation.errors import ConfigProblem

log = structlog.get_logger(__name__)

_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")


@dataclass(frozen=True, slots=True)
class ClickToCallSettings:
    """`[click_to_call]`: the endpoint a CRM's click-to-call reaches (off by default)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9110
    path: str = "/retailcrm/make-call"
    secret_file: Path | None = None  # the integration's secret (RetailCRM: the module's clientId)
    secret_credential: str = "retailcrm-client-id"  # noqa: S105 - a credential name
    secret: Secret | None = None  # filled from the two keys above
    channel: str = "PJSIP/{extension}"  # the agent's phone, rung first
    context: str = "from-agents"  # the dialplan context that dials the customer once the agent answers
    ring_seconds: Annotated[int, AtLeast(1)] = 30  # how long the agent's phone rings


def click_to_call_problems(s: ClickToCallSettings) -> list[ConfigProblem]:
    if not s.enabled:
        return []
    problems = []
    if s.secret is None:
        problems.append(
            ConfigProblem(
                "click_to_call.secret_file",
                f"required when enabled (or the systemd credential {s.secret_credential!r})",
            )
        )
    if "{extension}" not in s.channel:
        problems.append(ConfigProblem("click_to_call.channel", "must contain {extension}"))
    if not s.path.startswith("/"):
        problems.append(ConfigProblem("click_to_call.path", "must start with /"))
    return problems


@dataclass(frozen=True, slots=True)
class MakeCall:
    extension: str
    number: str


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str


def check_request(
    query: Mapping[str, str], secret: str, agent_endpoints: re.Pattern[str]
) -> MakeCall | Refusal:
    """What a makeCallUrl request asks for, or why it is refused (pure)."""
    client_id = query.get("clientId", "")
    if not hmac.compare_digest(client_id.encode(), secret.encode()):
        return Refusal(403, "wrong clientId")
    extension = query.get("code", "")
    if not agent_endpoints.fullmatch(extension):
        return Refusal(400, f"code {extension!r} is not an agent's extension")
    number = re.sub(r"[\s\-().]", "", query.get("phone", ""))
    if not _NUMBER.fullmatch(number):
        return Refusal(400, f"phone {query.get('phone', '')!r} is not a phone number")
    return MakeCall(extension, number)


def originate_headers(call: MakeCall, s: ClickToCallSettings) -> dict[str, str]:
    """The AMI Originate: the agent's phone first, then the dialplan dials the number."""
    return {
        "Channel": s.channel.format(extension=call.extension),
        "Context": s.context,
        "Exten": call.number,
        "Priority": "1",
        "CallerID": f'"{call.number}" <{call.extension}>',
        "Timeout": str(s.ring_seconds * 1000),
        "Async": "true",
        "Variable": f"PBXLINK_CLICK_TO_CALL={call.number}",
    }


Originate = Callable[[dict[str, str]], Awaitable[None]]


class ClickToCallServer:
    """`async with ClickToCallServer(settings, agent_endpoints, originate)`: serves the endpoint."""

    def __init__(self, settings: ClickToCallSettings, agent_endpoints: str, originate: Originate) -> None:
        assert settings.secret is not None, "checked by click_to_call_problems"
        self.s = settings
        self._secret = settings.secret
        self._agents = re.compile(agent_endpoints)
        self._originate = originate
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> ClickToCallServer:
        app = web.Application()
        app.router.add_get(self.s.path, self._make_call, allow_head=False)
        app.router.add_post(self.s.path, self._make_call)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.s.host, self.s.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("click_to_call_listening", host=self.s.host, port=self.port, path=self.s.path)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _make_call(self, request: web.Request) -> web.Response:
        query: dict[str, str] = dict(request.query)
        if request.method == "POST":
            query.update({k: str(v) for k, v in (await request.post()).items()})
        checked = check_request(query, self._secret.reveal(), self._agents)
        if isinstance(checked, Refusal):
            log.warning("click_to_call_refused", status=checked.status, reason=checked.reason)
            return web.json_response({"success": False, "errorMsg": checked.reason}, status=checked.status)
        try:
            await self._originate(originate_headers(checked, self.s))
        except ConnectionError as exc:
            log.warning("click_to_call_failed", extension=checked.extension, error=str(exc))
            return web.json_response({"success": False, "errorMsg": "the PBX is not reachable"}, status=503)
        log.info("click_to_call_originated", extension=checked.extension, number=checked.number)
        return web.json_response({"success": True})
