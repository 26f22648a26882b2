"""The named call scenarios of the lab, each with its ground truth.

A scenario function starts phones, the route stub and callers through the
ScenarioContext, performs mid-call AMI actions, and returns one truth dict per
call it placed: what the driver did and therefore what pbxlink must report.
The keys follow the call-outcome contract (docs/lab.md lists them):
direction, answered, missed_at, external.raw, line, initiator,
first_answered_by, last_handled_by, handlers, rang, transfers, queue,
hangup_by, routing — plus a few driver facts (caller_name, busy, pickup,
consultation).  Durations are timing-dependent and are not part of the truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pbxlab.context import ScenarioContext, Truth
from pbxlab.route_stub import StubRoute
from pbxlab.sipp import Call, Phone

ROUTING_DID = "4930100200"
IVR_DID = "4930100300"
RECORDED_DID = "4930100400"
EXTERNAL_1 = "0671234567"
EXTERNAL_2 = "0671234568"

TO_101 = StubRoute("PJSIP/101", "owner", "101")
NO_ROUTE = StubRoute("", "unknown_caller", "")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    run: Callable[[ScenarioContext], list[Truth]]
    heavy: bool = False  # many calls: not run in quick test passes


def call_truth(
    *,
    direction: str,
    answered: bool,
    external: str | None,
    missed_at: str | None = None,
    line: str | None = None,
    initiator: str | None = None,
    handlers: list[str] | None = None,
    rang: list[str] | None = None,
    transfers: list[dict[str, str]] | None = None,
    queue: str | None = None,
    hangup_by: str | None = None,
    routing: StubRoute | str | None = "absent",
    **extra: Any,
) -> Truth:
    """One call's expected outcome (the subset the driver knows for certain)."""
    handlers = handlers or []
    truth: Truth = {
        "direction": direction,
        "answered": answered,
        "missed_at": missed_at,
        "external": {"raw": external} if external is not None else None,
        "line": line,
        "initiator": initiator,
        "first_answered_by": handlers[0] if handlers else None,
        "last_handled_by": handlers[-1] if handlers else None,
        "handlers": handlers,
        "rang": rang or [],
        "transfers": transfers or [],
        "queue": queue,
        "hangup_by": hangup_by,
    }
    if isinstance(routing, StubRoute):
        truth["routing"] = {
            "target": routing.target or None,
            "reason": routing.reason,
            "owner": routing.owner or None,
            "source": "pbxlab route stub",
        }
    elif routing == "absent":
        truth["routing"] = (
            None
            if direction != "inbound" or line != ROUTING_DID
            else {
                "target": None,
                "reason": None,
                "owner": None,
                "source": "no FastAGI server (AGISTATUS=FAILURE)",
            }
        )
    else:
        truth["routing"] = None
    truth.update(extra)
    return truth


# ---- inbound: routing DID ---------------------------------------------------------------
def inbound_answered(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.answers(ring_ms=1000))
    caller = "+380501110001"
    ctx.call(Call(ROUTING_DID, caller, "Alice Caller", hold_ms=4000))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101"],
            rang=["101"],
            hangup_by="external",
            routing=TO_101,
            caller_name="Alice Caller",
        )
    ]


def inbound_agent_rings_caller_hangs_up(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.never_answers())
    caller = "0501110002"
    ctx.call(Call(ROUTING_DID, caller, "Bob Caller", hold_ms=3000))
    return [
        call_truth(
            direction="inbound",
            answered=False,
            missed_at="agent",
            external=caller,
            line=ROUTING_DID,
            rang=["101"],
            hangup_by="external",
            routing=TO_101,
            caller_name="Bob Caller",
        )
    ]


def queue_abandoned(ctx: ScenarioContext) -> list[Truth]:
    # no FastAGI server: AGI() fails at once and the call goes to the queue
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers(), a103=Phone.never_answers())
    caller = "380501110003"
    ctx.call(Call(ROUTING_DID, caller, "Carol Caller", hold_ms=3000))
    return [
        call_truth(
            direction="inbound",
            answered=False,
            missed_at="queue",
            external=caller,
            line=ROUTING_DID,
            rang=["101", "102", "103"],
            queue="support",
            hangup_by="external",
            caller_name="Carol Caller",
        )
    ]


def queue_timeout_voicemail(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers(), a103=Phone.never_answers())
    caller = "+380501110004"
    t = ctx.instance.timings
    # greeting + queue timeout, then ~2.5 s into the voicemail greeting
    hold = 500 + t.queue_timeout * 1000 + 2500
    ctx.call(Call(ROUTING_DID, caller, "Dave Caller", hold_ms=hold))
    return [
        call_truth(
            direction="inbound",
            answered=False,
            missed_at="voicemail",
            external=caller,
            line=ROUTING_DID,
            rang=["101", "102", "103"],
            queue="support",
            hangup_by="external",
            caller_name="Dave Caller",
            voicemail={"mailbox": "100@default", "message_left": False},
        )
    ]


def agent_busy_group_answers(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.busy(), a102=Phone.answers(ring_ms=1000), a103=Phone.never_answers())
    caller = "+380501110005"
    ctx.call(Call(ROUTING_DID, caller, "Erin Caller", hold_ms=4500))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["102"],
            rang=["102", "103"],
            busy=["101"],
            queue="support",
            hangup_by="external",
            routing=TO_101,
            caller_name="Erin Caller",
        )
    ]


def agent_no_answer_group_answers(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    # 101 rings AGENT_RING_TIMEOUT without answering; then queue support rings
    # 101, 102 and 103 and 102 answers after 1 s
    ctx.phones(a101=Phone.never_answers(), a102=Phone.answers(ring_ms=1000), a103=Phone.never_answers())
    caller = "+380501110017"
    hold = 500 + ctx.instance.timings.agent_ring_timeout * 1000 + 3500
    ctx.call(Call(ROUTING_DID, caller, "Paul Caller", hold_ms=hold))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["102"],
            rang=["101", "102", "103"],
            queue="support",
            hangup_by="external",
            routing=TO_101,
            caller_name="Paul Caller",
        )
    ]


def ringall_one_answers(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(NO_ROUTE)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers(), a103=Phone.answers(ring_ms=1500))
    caller = "+380501110006"
    ctx.call(Call(ROUTING_DID, caller, "Frank Caller", hold_ms=4500))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["103"],
            rang=["101", "102", "103"],
            queue="support",
            hangup_by="external",
            routing=NO_ROUTE,
            caller_name="Frank Caller",
        )
    ]


# ---- IVR -------------------------------------------------------------------------------
def ivr_hangup(ctx: ScenarioContext) -> list[Truth]:
    caller = "+380501110007"
    ctx.call(Call(IVR_DID, caller, "Grace Caller", hold_ms=1500))
    return [
        call_truth(
            direction="inbound",
            answered=False,
            missed_at="ivr",
            external=caller,
            line=IVR_DID,
            hangup_by="external",
            caller_name="Grace Caller",
        )
    ]


def ivr_sales_answered(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(a102=Phone.answers(ring_ms=1000), a103=Phone.never_answers())
    caller = "+380501110008"
    ctx.call(Call(IVR_DID, caller, "Heidi Caller", hold_ms=3500, dtmf="1", dtmf_delay_ms=700))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=IVR_DID,
            handlers=["102"],
            rang=["102", "103"],
            queue="sales",
            hangup_by="external",
            caller_name="Heidi Caller",
            ivr_choice="1",
        )
    ]


# ---- transfers -------------------------------------------------------------------------------
def blind_transfer_refer(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(
        a101=Phone.transfers("102", ring_ms=1000, talk_ms=2000),
        a102=Phone.answers(ring_ms=1000, talk_ms=3000),
    )
    caller = "+380501110009"
    ctx.call(Call(ROUTING_DID, caller, "Ivan Caller", hold_ms=30000))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101", "102"],
            rang=["101", "102"],
            transfers=[{"kind": "blind", "from": "101", "to": "102", "via": "SIP REFER"}],
            hangup_by="agent",
            routing=TO_101,
            caller_name="Ivan Caller",
        )
    ]


def blind_transfer_unanswered(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    # 101 answers and transfers blind (REFER) to 103, which never answers: after
    # INTERNAL_RING_TIMEOUT the dialplan hangs the caller up
    ctx.phones(a101=Phone.transfers("103", ring_ms=1000, talk_ms=2000), a103=Phone.never_answers())
    caller = "+380501110020"
    ctx.call(Call(ROUTING_DID, caller, "Tom Caller", hold_ms=60000))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101"],
            rang=["101", "103"],
            transfers=[{"kind": "blind", "from": "101", "to": "103", "via": "SIP REFER"}],
            hangup_by="system",
            routing=TO_101,
            caller_name="Tom Caller",
            transfer_target_answered=False,
        )
    ]


def blind_transfer_ami(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.answers(ring_ms=1000), a102=Phone.answers(ring_ms=1000, talk_ms=3000))
    caller = "+380501110010"
    ctx.call(Call(ROUTING_DID, caller, "Judy Caller", hold_ms=30000))
    chan = ctx.wait_bridged("101")
    time.sleep(1.5)
    ctx.act(
        "BlindTransfer",
        lambda: ctx.ami.blind_transfer(chan, "102"),
        channel=chan,
        exten="102",
        context="from-agents",
    )
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101", "102"],
            rang=["101", "102"],
            transfers=[{"kind": "blind", "from": "101", "to": "102", "via": "AMI BlindTransfer"}],
            hangup_by="agent",
            routing=TO_101,
            caller_name="Judy Caller",
        )
    ]


def attended_transfer_completed(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    # 101 answers, consults 102 (Atxfer), hangs up 4.5 s after answering,
    # which completes the transfer; 102 then talks to the caller and hangs up
    ctx.phones(a101=Phone.answers(ring_ms=1000, talk_ms=4500), a102=Phone.answers(ring_ms=1000, talk_ms=5000))
    caller = "+380501110011"
    ctx.call(Call(ROUTING_DID, caller, "Ken Caller", hold_ms=30000))
    chan = ctx.wait_bridged("101")
    time.sleep(1.5)
    ctx.act("Atxfer", lambda: ctx.ami.atxfer(chan, "102"), channel=chan, exten="102", context="from-agents")
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101", "102"],
            rang=["101", "102"],
            transfers=[{"kind": "attended", "from": "101", "to": "102", "via": "AMI Atxfer"}],
            hangup_by="agent",
            routing=TO_101,
            caller_name="Ken Caller",
            consultation={"agent": "102", "answered": True, "completed": True},
        )
    ]


def attended_transfer_refer(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    # 101's phone: answers the caller (dialog A) and stays until Asterisk hangs it up
    ctx.phones(a101=Phone.answers(ring_ms=1000), a102=Phone.answers(ring_ms=1000, talk_ms=4000))
    caller = "+380501110019"
    ctx.call(Call(ROUTING_DID, caller, "Sara Caller", hold_ms=30000))
    chan = ctx.wait_bridged("101")
    # dialog A as 101 sees it: its own tag is the From tag, Asterisk's the To tag
    call_id = ctx.ami.getvar(chan, "CHANNEL(pjsip,call-id)")
    asterisk_tag = ctx.ami.getvar(chan, "CHANNEL(pjsip,local_tag)")
    phone_tag = ctx.ami.getvar(chan, "CHANNEL(pjsip,remote_tag)")
    replaces = quote(f"{call_id};to-tag={asterisk_tag};from-tag={phone_tag}", safe="")
    ctx.notes["replaces"] = {"call_id": call_id, "to_tag": asterisk_tag, "from_tag": phone_tag}
    time.sleep(1.0)
    # 101 calls 102 from the same phone (consultation), then REFER with Replaces
    ctx.call(
        Call(
            "102",
            "101",
            "Agent 101",
            answer_timeout_ms=10000,
            template="uac_refer_replaces.xml",
            params=(("CONSULT_MS", "1500"), ("REPLACES", replaces)),
        )
    )
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101", "102"],
            rang=["101", "102"],
            transfers=[{"kind": "attended", "from": "101", "to": "102", "via": "SIP REFER with Replaces"}],
            hangup_by="agent",
            routing=TO_101,
            caller_name="Sara Caller",
            consultation={"agent": "102", "answered": True, "completed": True},
        )
    ]


def attended_transfer_abandoned(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    t = ctx.instance.timings
    # 101 answers and consults 103, which never answers; after
    # atxfernoanswertimeout 101 is back with the caller and hangs up later
    talk = 1500 + t.atxfer_noanswer_timeout * 1000 + 2500
    ctx.phones(a101=Phone.answers(ring_ms=1000, talk_ms=talk), a103=Phone.never_answers())
    caller = "+380501110012"
    ctx.call(Call(ROUTING_DID, caller, "Liam Caller", hold_ms=30000))
    chan = ctx.wait_bridged("101")
    time.sleep(1.5)
    ctx.act("Atxfer", lambda: ctx.ami.atxfer(chan, "103"), channel=chan, exten="103", context="from-agents")
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101"],
            rang=["101"],
            hangup_by="agent",
            routing=TO_101,
            caller_name="Liam Caller",
            consultation={"agent": "103", "answered": False, "completed": False},
        )
    ]


# ---- pickup ----------------------------------------------------------------------------------
def _pickup(ctx: ScenarioContext, code: str, caller: str, name: str) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.never_answers())
    ctx.call(Call(ROUTING_DID, caller, name, hold_ms=30000))
    ctx.wait_ringing("101")
    time.sleep(0.5)
    # agent 102 dials the pickup code from its phone and hangs up 3 s later
    ctx.call(Call(code, "102", "Agent 102", hold_ms=3000))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["102"],
            rang=["101"],
            hangup_by="agent",
            routing=TO_101,
            caller_name=name,
            pickup={"by": "102", "ringing_at": "101", "code": code},
        )
    ]


def call_pickup_group(ctx: ScenarioContext) -> list[Truth]:
    return _pickup(ctx, "*8", "+380501110013", "Mia Caller")


def call_pickup_directed(ctx: ScenarioContext) -> list[Truth]:
    return _pickup(ctx, "**101", "+380501110014", "Noah Caller")


# ---- outbound and internal --------------------------------------------------------------
def outbound_answered(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(carrier=Phone.answers(ring_ms=1000))
    ctx.call(Call(EXTERNAL_1, "101", "Agent 101", hold_ms=3000))
    return [
        call_truth(
            direction="outbound",
            answered=True,
            external=EXTERNAL_1,
            initiator="101",
            handlers=["101"],
            hangup_by="agent",
        )
    ]


def outbound_unanswered(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(carrier=Phone.never_answers())
    ctx.call(Call(EXTERNAL_1, "101", "Agent 101", answer_timeout_ms=3000))
    return [
        call_truth(
            direction="outbound",
            answered=False,
            missed_at="external",
            external=EXTERNAL_1,
            initiator="101",
            hangup_by="agent",
        )
    ]


def outbound_busy(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(carrier=Phone.busy())
    ctx.call(Call(EXTERNAL_1, "101", "Agent 101", answer_timeout_ms=5000))
    return [
        call_truth(
            direction="outbound",
            answered=False,
            missed_at="external",
            external=EXTERNAL_1,
            initiator="101",
            hangup_by="external",
            external_status="busy",
        )
    ]


def internal_answered(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(a102=Phone.answers(ring_ms=1000))
    ctx.call(Call("102", "101", "Agent 101", hold_ms=2500))
    return [
        call_truth(
            direction="internal",
            answered=True,
            external=None,
            initiator="101",
            handlers=["102"],
            rang=["102"],
            hangup_by="agent",
        )
    ]


def internal_unanswered(ctx: ScenarioContext) -> list[Truth]:
    ctx.phones(a103=Phone.never_answers())
    ctx.call(Call("103", "101", "Agent 101", answer_timeout_ms=3000))
    return [
        call_truth(
            direction="internal",
            answered=False,
            missed_at="agent",
            external=None,
            initiator="101",
            rang=["103"],
            hangup_by="agent",
        )
    ]


def click_to_call(ctx: ScenarioContext) -> list[Truth]:
    # AMI Originate: agent 101's phone rings first; when 101 answers, the
    # dialplan (from-agents) dials the external number via the trunk
    ctx.phones(a101=Phone.answers(ring_ms=1000, talk_ms=5000), carrier=Phone.answers(ring_ms=1000))
    ctx.act(
        "Originate",
        lambda: ctx.ami.originate(
            "PJSIP/101",
            context="from-agents",
            exten=EXTERNAL_2,
            caller_id='"Agent 101" <101>',
            timeout_ms=15000,
        ),
        channel="PJSIP/101",
        exten=EXTERNAL_2,
        context="from-agents",
    )
    ctx.wait_event(lambda f: f.get("Event") == "OriginateResponse", timeout=20)
    ctx.wait_bridged("101")
    # the call ends when 101 hangs up; wait for it here (no SIPp caller)
    ctx.wait_event(
        lambda f: f.get("Event") == "Hangup" and f.get("Channel", "").startswith("PJSIP/trunk-"), timeout=30
    )
    return [
        call_truth(
            direction="outbound",
            answered=True,
            external=EXTERNAL_2,
            initiator="101",
            handlers=["101"],
            hangup_by="agent",
            originated_by="AMI Originate",
        )
    ]


# ---- caller identities, concurrency, load ----------------------------------------------------
def two_calls_same_number(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(NO_ROUTE)
    # call 1 rings 101/102/103, 101 answers after 1 s; call 2 arrives 1 s
    # later while 101 talks (ringinuse=no): only 102/103 ring, 102 answers
    ctx.phones(a101=Phone.answers(ring_ms=1000), a102=Phone.answers(ring_ms=2000), a103=Phone.never_answers())
    caller = "+380501110015"
    ctx.call(Call(ROUTING_DID, caller, "Olga Caller", hold_ms=5000))
    ctx.wait_bridged("101")
    time.sleep(1.0)
    ctx.call(Call(ROUTING_DID, caller, "Olga Caller", hold_ms=4000))
    common: dict[str, Any] = {
        "direction": "inbound",
        "answered": True,
        "external": caller,
        "line": ROUTING_DID,
        "queue": "support",
        "hangup_by": "external",
        "routing": NO_ROUTE,
        "caller_name": "Olga Caller",
    }
    return [
        call_truth(handlers=["101"], rang=["101", "102", "103"], **common),
        call_truth(handlers=["102"], rang=["102", "103"], **common),
    ]


def anonymous_caller(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(NO_ROUTE)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.answers(ring_ms=1000), a103=Phone.never_answers())
    ctx.call(
        Call(
            ROUTING_DID,
            "anonymous",
            "Anonymous",
            hold_ms=4000,
            from_host="anonymous.invalid",
            extra_headers=("Privacy: id",),
        )
    )
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external="anonymous",
            line=ROUTING_DID,
            handlers=["102"],
            rang=["101", "102", "103"],
            queue="support",
            hangup_by="external",
            routing=NO_ROUTE,
            caller_name="Anonymous",
            anonymous=True,
        )
    ]


def recorded_call_answered(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.answers(ring_ms=800))
    caller = "+380501110018"
    monitor = ctx.instance.spool_dir / "monitor"
    before = set(monitor.glob("*.wav")) if monitor.exists() else set()
    ctx.call(Call(RECORDED_DID, caller, "Rita Caller", hold_ms=3500))
    ctx.finish_calls()
    ctx.ami.wait_idle(15)  # MixMonitor closes its file when the channel is gone
    new = sorted(set(monitor.glob("*.wav")) - before)
    # the path as Asterisk names it (inside the chroot)
    inside = [f"/var/spool/{ctx.instance.conf_dir.name}/monitor/{p.name}" for p in new]
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=RECORDED_DID,
            handlers=["101"],
            rang=["101"],
            hangup_by="external",
            routing=TO_101,
            caller_name="Rita Caller",
            recordings=inside,
        )
    ]


NON_ASCII_NAME = "Олена Петренко ☎ Київ"


def non_ascii_caller_name(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.answers(ring_ms=800))
    caller = "+380501110016"
    ctx.call(Call(ROUTING_DID, caller, NON_ASCII_NAME, hold_ms=3500))
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=caller,
            line=ROUTING_DID,
            handlers=["101"],
            rang=["101"],
            hangup_by="external",
            routing=TO_101,
            caller_name=NON_ASCII_NAME,
        )
    ]


LOAD_CALLS = 100
LOAD_RATE = 25


def load_100_overlapping(ctx: ScenarioContext) -> list[Truth]:
    ctx.route_stub(TO_101)
    ctx.sipp.trace_messages = False
    ctx.phones(a101=Phone.answers(ring_ms=300))
    # caller numbers +38050200NNNN, NNNN = SIPp's call number (1..100)
    ctx.call(
        Call(
            ROUTING_DID,
            "+38050200[call_number]",
            "Load Caller",
            hold_ms=4000,
            count=LOAD_CALLS,
            rate=LOAD_RATE,
            rate_period_ms=1000,
            max_concurrent=150,
        ),
        trace_messages=False,
    )
    peak = 0
    caller = ctx.callers[-1]
    while caller.alive():
        peak = max(peak, ctx.ami.channel_count())
        time.sleep(0.5)
    ctx.notes["peak_channels"] = peak
    return [
        call_truth(
            direction="inbound",
            answered=True,
            external=f"+38050200{n}",
            line=ROUTING_DID,
            handlers=["101"],
            rang=["101"],
            hangup_by="external",
            routing=TO_101,
            caller_name="Load Caller",
        )
        for n in range(1, LOAD_CALLS + 1)
    ]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "inbound_answered",
            "Routing DID; the route stub names 101 (owner); 101 rings 1 s and answers; the caller hangs up.",
            inbound_answered,
        ),
        Scenario(
            "inbound_agent_rings_caller_hangs_up",
            "Routing DID; stub names 101, which rings and never answers; the caller hangs up while it rings.",
            inbound_agent_rings_caller_hangs_up,
        ),
        Scenario("ivr_hangup", "IVR DID; the caller hangs up in the menu before choosing.", ivr_hangup),
        Scenario(
            "ivr_sales_answered",
            "IVR DID; the caller presses 1 (SIP INFO); queue sales "
            "rings 102 and 103; 102 answers; the caller hangs up.",
            ivr_sales_answered,
        ),
        Scenario(
            "queue_abandoned",
            "Routing DID with no FastAGI server (AGI fails, the call "
            "falls through); queue support rings 101-103, nobody answers; the caller "
            "abandons.",
            queue_abandoned,
        ),
        Scenario(
            "queue_timeout_voicemail",
            "Routing DID, no FastAGI server; queue support "
            "times out; voicemail greeting; the caller hangs up without a message.",
            queue_timeout_voicemail,
        ),
        Scenario(
            "agent_busy_group_answers",
            "Routing DID; stub names 101, which is busy (486); queue support: 102 answers, 103 rings.",
            agent_busy_group_answers,
        ),
        Scenario(
            "agent_no_answer_group_answers",
            "Routing DID; stub names 101, which rings AGENT_RING_TIMEOUT without answering; "
            "queue support: 102 answers.",
            agent_no_answer_group_answers,
        ),
        Scenario(
            "ringall_one_answers",
            "Routing DID; stub: no route (unknown caller); queue support rings all; 103 answers.",
            ringall_one_answers,
        ),
        Scenario(
            "blind_transfer_refer",
            "Routing DID -> 101 answers, then transfers blind to "
            "102 by SIP REFER; 102 answers and later hangs up.",
            blind_transfer_refer,
        ),
        Scenario(
            "blind_transfer_unanswered",
            "Routing DID -> 101 answers, transfers blind (REFER) to 103, which never answers; "
            "after INTERNAL_RING_TIMEOUT the PBX hangs the caller up.",
            blind_transfer_unanswered,
        ),
        Scenario(
            "blind_transfer_ami",
            "Routing DID -> 101 answers; AMI BlindTransfer of 101's "
            "channel to 102; 102 answers and later hangs up.",
            blind_transfer_ami,
        ),
        Scenario(
            "attended_transfer_completed",
            "Routing DID -> 101 answers; AMI Atxfer to "
            "102; 102 answers the consultation; 101 hangs up (completes); 102 talks with "
            "the caller and hangs up.",
            attended_transfer_completed,
        ),
        Scenario(
            "attended_transfer_refer",
            "Routing DID -> 101 answers; 101's phone calls 102 (consultation), 102 answers, "
            "101 transfers by SIP REFER with Replaces; 102 talks with the caller and hangs up.",
            attended_transfer_refer,
        ),
        Scenario(
            "attended_transfer_abandoned",
            "Routing DID -> 101 answers; AMI Atxfer to "
            "103, which never answers; the consultation times out, 101 is back with the "
            "caller and hangs up.",
            attended_transfer_abandoned,
        ),
        Scenario(
            "call_pickup_group",
            "Routing DID -> 101 rings; agent 102 dials *8 (group pickup) and gets the caller; 102 hangs up.",
            call_pickup_group,
        ),
        Scenario(
            "call_pickup_directed",
            "Routing DID -> 101 rings; agent 102 dials **101 "
            "(directed pickup) and gets the caller; 102 hangs up.",
            call_pickup_directed,
        ),
        Scenario(
            "outbound_answered",
            "Agent 101 dials an external number via the trunk; the carrier answers; 101 hangs up.",
            outbound_answered,
        ),
        Scenario(
            "outbound_unanswered",
            "Agent 101 dials out; the carrier rings; 101 gives up (CANCEL).",
            outbound_unanswered,
        ),
        Scenario("outbound_busy", "Agent 101 dials out; the carrier answers 486 Busy.", outbound_busy),
        Scenario("internal_answered", "Agent 101 calls 102; 102 answers; 101 hangs up.", internal_answered),
        Scenario("internal_unanswered", "Agent 101 calls 103; 103 rings; 101 gives up.", internal_unanswered),
        Scenario(
            "click_to_call",
            "AMI Originate: agent 101's phone rings and answers, then "
            "the dialplan dials the external number via the trunk; 101 hangs up.",
            click_to_call,
        ),
        Scenario(
            "two_calls_same_number",
            "Two overlapping calls from one number to the "
            "routing DID (no route): the first is answered by 101, the second by 102.",
            two_calls_same_number,
        ),
        Scenario(
            "anonymous_caller",
            "An anonymous caller (From anonymous@anonymous.invalid, "
            "Privacy: id); no route; queue support: 102 answers.",
            anonymous_caller,
        ),
        Scenario(
            "recorded_call_answered",
            "The recorded line 4930100400 (MixMonitor while bridged, then the routing "
            "flow); stub -> 101 answers; the truth names the recording file.",
            recorded_call_answered,
        ),
        Scenario(
            "non_ascii_caller_name",
            "A caller with a non-ASCII (Cyrillic, emoji-range) display name; stub -> 101 answers.",
            non_ascii_caller_name,
        ),
        Scenario(
            "load_100_overlapping",
            f"{LOAD_CALLS} calls at {LOAD_RATE}/s to the routing "
            "DID (distinct numbers), stub -> 101 answers each after 0.3 s; each caller "
            "hangs up 4 s after the answer: ~100 calls overlap.",
            load_100_overlapping,
            heavy=True,
        ),
    ]
}


def scenarios_for(profile: str) -> dict[str, Scenario]:
    """The scenarios written for a dialplan profile ("lab" or "freepbx")."""
    if profile == "freepbx":
        from pbxlab.scenarios_freepbx import FREEPBX_SCENARIOS  # noqa: PLC0415  # it imports this module

        return FREEPBX_SCENARIOS
    return SCENARIOS
