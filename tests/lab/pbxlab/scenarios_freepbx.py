"""Scenarios of the FreePBX dialplan profile (tests/lab/profiles/freepbx), each with its truth.

Same contract as pbxlab.scenarios: a scenario starts phones and callers, sets what an admin or
an agent would have set (follow-me, call forwards, DND: FreePBX keeps them in the astdb; the
driver writes them with AMI DBPut and logs every action in the truth), and returns one truth
dict per call, written from what the SIP side was made to do.  Two extra truth keys:

* ``handler_forwarded_to``: parallel to ``handlers``; the outside number that took the call for
  that agent (the agent's follow-me or call forward answered on an external phone), else None.
* ``forward``/``dnd``/``parked``/``conference``/``spy``: driver facts, not compared.

Names start with ``fpbx_`` (the recordings share tests/data/ami with the lab profile's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pbxlab.context import ScenarioContext, Truth
from pbxlab.scenarios import SCENARIOS, Scenario, call_truth
from pbxlab.sipp import Call, Phone

GROUP_DID = "4930100600"  # ring group 600: 101 102 103, then voicemail 100
EXT101_DID = "4930100601"  # extension 101 (follow-me when enabled)
QUEUE_OVERFLOW_DID = "4930100602"  # queue 700 (101 102, Local /n) -> queue 701 (103)
QUEUE_LOCAL_DID = "4930100603"  # queue 702 (101 102, Local without /n) -> voicemail 100
IVR_DID = "4930100604"  # IVR: 1 -> ring group 600
CONF_DID = "4930100605"  # conference 8000
GROUP2_DID = "4930100606"  # ring group 601: 102 103, then hang up
EXT103_DID = "4930100607"  # extension 103 (follow-me when enabled)
MOBILE = "0671234567"  # the agents' mobile / forward target, through the trunk
SETTINGS_FAMILIES = ("CF", "CFB", "CFU", "DND", "AMPUSER")


def _settings(ctx: ScenarioContext, **values: str) -> None:
    """Start from FreePBX's defaults, then set astdb keys ("CF/101": "0671234567", ...)."""
    for family in SETTINGS_FAMILIES:
        ctx.act(
            "DBDelTree",
            lambda family=family: ctx.ami.action("DBDelTree", Family=family),  # type: ignore[misc]
            family=family,
        )
    for path, value in values.items():
        family, _, key = path.partition("/")
        ctx.act(
            "DBPut",
            lambda family=family, key=key, value=value: ctx.ami.checked(  # type: ignore[misc]
                "DBPut", Family=family, Key=key, Val=value
            ),
            family=family,
            key=key,
            value=value,
        )


def _inbound(caller: str, line: str, *, handlers: list[str] | None = None, **facts: Any) -> Truth:
    answered = bool(handlers)
    facts.setdefault("hangup_by", "external")
    return call_truth(
        direction="inbound",
        answered=answered,
        external=caller,
        line=line,
        handlers=handlers,
        routing=None,
        **facts,
    )


def _followme(ctx: ScenarioContext, ext: str) -> None:
    _settings(
        ctx,
        **{
            f"AMPUSER/{ext}/followme/ddial": "DIRECT",
            f"AMPUSER/{ext}/followme/grplist": f"{MOBILE}#",
            f"AMPUSER/{ext}/followme/prering": "3",
            f"AMPUSER/{ext}/followme/grptime": "6",
        },
    )


# ---- ring groups: one Dial(PJSIP/101&PJSIP/102&PJSIP/103) ---------------------------------
def ring_group_abandoned(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers(), a103=Phone.never_answers())
    caller = "+380502220001"
    ctx.call(Call(GROUP_DID, caller, "Group Caller", answer_timeout_ms=4000))
    return [
        _inbound(caller, GROUP_DID, missed_at="queue", rang=["101", "102", "103"], caller_name="Group Caller")
    ]


def ring_group_answered_by_one(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.answers(ring_ms=1500), a103=Phone.never_answers())
    caller = "+380502220002"
    ctx.call(Call(GROUP_DID, caller, "Group Caller", hold_ms=3000))
    return [_inbound(caller, GROUP_DID, handlers=["102"], rang=["101", "102", "103"])]


def ring_group_timeout_voicemail(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers(), a103=Phone.never_answers())
    caller = "+380502220003"
    # the group rings GRPTIME (QUEUE_TIMEOUT) s, then voicemail 100 answers; the caller
    # hangs up 2.5 s into the greeting
    ctx.call(Call(GROUP_DID, caller, "Group Caller", hold_ms=2500))
    return [
        _inbound(
            caller,
            GROUP_DID,
            missed_at="voicemail",
            rang=["101", "102", "103"],
            voicemail={"mailbox": "100@default", "message_left": False},
        )
    ]


def ring_group_member_dnd(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx, **{"DND/102": "YES"})
    ctx.phones(a101=Phone.never_answers(), a102=Phone.answers(ring_ms=500), a103=Phone.answers(ring_ms=1500))
    caller = "+380502220004"
    ctx.call(Call(GROUP_DID, caller, "Group Caller", hold_ms=3000))
    return [_inbound(caller, GROUP_DID, handlers=["103"], rang=["101", "103"], dnd=["102"])]


def ring_group_two_abandoned(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a102=Phone.never_answers(), a103=Phone.never_answers())
    caller = "+380502220005"
    ctx.call(Call(GROUP2_DID, caller, "Group Caller", answer_timeout_ms=3000))
    return [_inbound(caller, GROUP2_DID, missed_at="queue", rang=["102", "103"])]


# ---- one agent alone -------------------------------------------------------------------------
def extension_no_answer_abandoned(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers())
    caller = "+380502220006"
    ctx.call(Call(EXT101_DID, caller, "Direct Caller", answer_timeout_ms=3000))
    return [_inbound(caller, EXT101_DID, missed_at="agent", rang=["101"])]


# ---- follow-me and call forwards ------------------------------------------------------------
def followme_answered_on_mobile(ctx: ScenarioContext) -> list[Truth]:
    _followme(ctx, "101")
    ctx.phones(a101=Phone.never_answers(), carrier=Phone.answers(ring_ms=1000))
    caller = "+380502220010"
    ctx.call(Call(EXT101_DID, caller, "Followme Caller", hold_ms=3000))
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101"],
            handler_forwarded_to=[MOBILE],
            rang=["101"],
            forward={"agent": "101", "kind": "follow-me", "to": MOBILE},
        )
    ]


def followme_answered_on_extension(ctx: ScenarioContext) -> list[Truth]:
    _followme(ctx, "101")
    ctx.phones(a101=Phone.answers(ring_ms=1000), carrier=Phone.answers(ring_ms=1000))
    caller = "+380502220011"
    ctx.call(Call(EXT101_DID, caller, "Followme Caller", hold_ms=3000))
    return [_inbound(caller, EXT101_DID, handlers=["101"], rang=["101"])]


def _forward(
    ctx: ScenarioContext,
    key: str,
    target: str,
    agent_phone: Phone,
    carrier: Phone | None,
    caller: str,
    call: dict[str, int],
    truth: dict[str, Any],
) -> list[Truth]:
    _settings(ctx, **{f"{key}/101": target})
    phones: dict[str, Phone] = {"a101": agent_phone}
    if carrier is not None:
        phones["carrier"] = carrier
    ctx.phones(**phones)
    ctx.call(
        Call(
            EXT101_DID,
            caller,
            "Forward Caller",
            hold_ms=call.get("hold_ms", 5000),
            answer_timeout_ms=call.get("answer_timeout_ms", 60000),
        )
    )
    kind = {"CF": "unconditional", "CFB": "busy", "CFU": "no answer"}[key]
    return [_inbound(caller, EXT101_DID, forward={"agent": "101", "kind": kind, "to": target}, **truth)]


def cf_unconditional_external_answered(ctx: ScenarioContext) -> list[Truth]:
    return _forward(
        ctx,
        "CF",
        MOBILE,
        Phone.never_answers(),
        Phone.answers(ring_ms=1000),
        "+380502220020",
        {"hold_ms": 3000},
        {"handlers": ["101"], "handler_forwarded_to": [MOBILE]},
    )


def cf_unconditional_external_unanswered(ctx: ScenarioContext) -> list[Truth]:
    return _forward(
        ctx,
        "CF",
        MOBILE,
        Phone.never_answers(),
        Phone.never_answers(),
        "+380502220021",
        {"answer_timeout_ms": 3000},
        {"missed_at": "agent"},
    )


def cf_unconditional_voicemail(ctx: ScenarioContext) -> list[Truth]:
    return _forward(
        ctx,
        "CF",
        "*101",
        Phone.never_answers(),
        None,
        "+380502220022",
        {"hold_ms": 2000},
        {"missed_at": "voicemail", "voicemail": {"mailbox": "101@default", "message_left": False}},
    )


def cf_busy_external_answered(ctx: ScenarioContext) -> list[Truth]:
    return _forward(
        ctx,
        "CFB",
        MOBILE,
        Phone.busy(),
        Phone.answers(ring_ms=1000),
        "+380502220023",
        {"hold_ms": 3000},
        {"handlers": ["101"], "handler_forwarded_to": [MOBILE], "busy": ["101"]},
    )


def cf_busy_voicemail(ctx: ScenarioContext) -> list[Truth]:
    # no busy forward set: FreePBX's default, the extension's voicemail (busy greeting)
    _settings(ctx)
    ctx.phones(a101=Phone.busy())
    caller = "+380502220024"
    ctx.call(Call(EXT101_DID, caller, "Forward Caller", hold_ms=2000))
    return [
        _inbound(
            caller,
            EXT101_DID,
            missed_at="voicemail",
            busy=["101"],
            voicemail={"mailbox": "101@default", "message_left": False},
        )
    ]


def cf_no_answer_external_answered(ctx: ScenarioContext) -> list[Truth]:
    return _forward(
        ctx,
        "CFU",
        MOBILE,
        Phone.never_answers(),
        Phone.answers(ring_ms=1000),
        "+380502220025",
        {"hold_ms": 3000},
        {"handlers": ["101"], "handler_forwarded_to": [MOBILE], "rang": ["101"]},
    )


def cf_no_answer_external_unanswered(ctx: ScenarioContext) -> list[Truth]:
    # 101 rings RINGTIMER, the forward rings RINGTIMER unanswered, then 101's voicemail
    return _forward(
        ctx,
        "CFU",
        MOBILE,
        Phone.never_answers(),
        Phone.never_answers(),
        "+380502220026",
        {"hold_ms": 2000},
        {
            "missed_at": "voicemail",
            "rang": ["101"],
            "voicemail": {"mailbox": "101@default", "message_left": False},
        },
    )


def cf_no_answer_voicemail(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers())
    caller = "+380502220027"
    ctx.call(Call(EXT101_DID, caller, "Forward Caller", hold_ms=2000))
    return [
        _inbound(
            caller,
            EXT101_DID,
            missed_at="voicemail",
            rang=["101"],
            voicemail={"mailbox": "101@default", "message_left": False},
        )
    ]


# ---- queues with Local members -----------------------------------------------------------
def queue_overflow_answered(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers(), a103=Phone.answers(ring_ms=1000))
    caller = "+380502220030"
    # queue 700 answers the caller, rings 101+102 for QUEUE_TIMEOUT s, then queue 701: 103
    hold = ctx.instance.timings.queue_timeout * 1000 + 4000
    ctx.call(Call(QUEUE_OVERFLOW_DID, caller, "Queue Caller", hold_ms=hold))
    return [_inbound(caller, QUEUE_OVERFLOW_DID, handlers=["103"], rang=["101", "102", "103"], queue="701")]


def queue_local_members_optimized(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.answers(ring_ms=1000))
    caller = "+380502220031"
    ctx.call(Call(QUEUE_LOCAL_DID, caller, "Queue Caller", hold_ms=4000))
    return [_inbound(caller, QUEUE_LOCAL_DID, handlers=["102"], rang=["101", "102"], queue="702")]


def queue_local_members_abandoned(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.never_answers(), a102=Phone.never_answers())
    caller = "+380502220032"
    ctx.call(Call(QUEUE_LOCAL_DID, caller, "Queue Caller", hold_ms=3000))
    return [_inbound(caller, QUEUE_LOCAL_DID, missed_at="queue", rang=["101", "102"], queue="702")]


# ---- parking -------------------------------------------------------------------------------
def _parked_slot(ctx: ScenarioContext) -> str:
    frame = ctx.wait_event(lambda f: f.get("Event") == "ParkedCall", timeout=20)
    return frame.get("ParkingSpace", "")


def park_picked_up_by_another(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # 101 answers and parks the caller: blind transfer (SIP REFER) to the park extension 70
    ctx.phones(a101=Phone.transfers("70", ring_ms=1000, talk_ms=1500))
    caller = "+380502220040"
    ctx.call(Call(EXT101_DID, caller, "Parked Caller", hold_ms=60000))
    slot = _parked_slot(ctx)
    time.sleep(1.0)
    ctx.call(Call(slot, "102", "Agent 102", hold_ms=3000))
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101", "102"],
            rang=["101"],
            transfers=[{"kind": "blind", "from": "101", "to": "70", "via": "SIP REFER"}],
            hangup_by="agent",
            parked={"by": "101", "slot": slot, "picked_up_by": "102"},
        )
    ]


def park_timeout_rings_parker_back(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # 101 answers; the driver parks the caller with AMI Park (the parker's channel is 101's);
    # after parkingtime (8 s) the lot rings 101 back, 101 answers and hangs up 3 s later
    ctx.phones(a101=Phone.answers(ring_ms=1000, talk_ms=3000))
    caller = "+380502220041"
    ctx.call(Call(EXT101_DID, caller, "Parked Caller", hold_ms=60000))
    agent_chan = ctx.wait_bridged("101")
    caller_chan = next(
        f["Channel"] for f in ctx.ami.channels() if f.get("Channel", "").startswith("PJSIP/trunk-")
    )
    time.sleep(1.0)
    ctx.act(
        "Park",
        lambda: ctx.ami.checked("Park", Channel=caller_chan, TimeoutChannel=agent_chan),
        channel=caller_chan,
        timeout_channel=agent_chan,
    )
    slot = _parked_slot(ctx)
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101", "101"],
            rang=["101"],
            hangup_by="agent",
            parked={"by": "101", "slot": slot, "timed_out": True, "rang_back": "101"},
        )
    ]


def park_caller_hangs_up(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.transfers("70", ring_ms=1000, talk_ms=1500))
    caller = "+380502220042"
    # answered after ~1 s, parked ~1.5 s later, hangs up 4 s after the answer (parkingtime 8 s)
    ctx.call(Call(EXT101_DID, caller, "Parked Caller", hold_ms=4500))
    slot = _parked_slot(ctx)
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101"],
            rang=["101"],
            transfers=[{"kind": "blind", "from": "101", "to": "70", "via": "SIP REFER"}],
            parked={"by": "101", "slot": slot, "caller_left": True},
        )
    ]


# ---- conference, supervisor ------------------------------------------------------------------
def conference_caller_and_two_agents(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # each joins ~1.5 s after dialing (Answer, Wait(1), ConfBridge); the caller stays
    # 14 s, 101 4 s, 102 3 s: the agents have left well before the caller
    caller = "+380502220050"
    ctx.call(Call(CONF_DID, caller, "Conference Caller", hold_ms=14000))
    ctx.wait_event(
        lambda f: f.get("Event") == "ConfbridgeJoin" and f.get("Channel", "").startswith("PJSIP/trunk-"),
        timeout=20,
    )
    time.sleep(0.5)
    ctx.call(Call("8000", "101", "Agent 101", hold_ms=4000))
    ctx.wait_event(
        lambda f: f.get("Event") == "ConfbridgeJoin" and f.get("Channel", "").startswith("PJSIP/101-"),
        timeout=20,
    )
    time.sleep(0.5)
    ctx.call(Call("8000", "102", "Agent 102", hold_ms=3000))
    return [
        _inbound(
            caller,
            CONF_DID,
            handlers=["101", "102"],
            conference={"room": "8000", "joined": ["caller", "101", "102"]},
        )
    ]


def _spy(ctx: ScenarioContext, code: str, mode: str, caller: str) -> list[Truth]:
    _settings(ctx)
    ctx.phones(a101=Phone.answers(ring_ms=1000))
    ctx.call(Call(EXT101_DID, caller, "Spied Caller", hold_ms=8000))
    ctx.wait_bridged("101")
    time.sleep(0.5)
    # supervisor 103 dials the spy code from its phone and listens 3 s
    ctx.call(Call(f"{code}101", "103", "Agent 103", hold_ms=3000))
    return [
        _inbound(caller, EXT101_DID, handlers=["101"], rang=["101"]),
        call_truth(
            direction="internal",
            answered=False,
            external=None,
            initiator="103",
            hangup_by="agent",
            routing=None,
            spy={"supervisor": "103", "target": "101", "mode": mode},
        ),
    ]


def chanspy_supervisor(ctx: ScenarioContext) -> list[Truth]:
    return _spy(ctx, "555", "spy", "+380502220060")


def whisper_supervisor(ctx: ScenarioContext) -> list[Truth]:
    return _spy(ctx, "556", "whisper", "+380502220061")


# ---- transfers -------------------------------------------------------------------------------
def blind_transfer_to_external(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # 101 answers, talks 1.5 s and transfers blind (REFER) to an outside number; the caller's
    # channel runs the outbound route; the carrier answers; the caller hangs up 9 s after its answer
    ctx.phones(a101=Phone.transfers(MOBILE, ring_ms=1000, talk_ms=1500), carrier=Phone.answers(ring_ms=1000))
    caller = "+380502220090"
    ctx.call(Call(EXT101_DID, caller, "Transferred Caller", hold_ms=9000))
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101"],
            rang=["101"],
            transfers=[{"kind": "blind", "from": "101", "to": MOBILE, "via": "SIP REFER"}],
            transfer_target_answered=True,
        )
    ]


def attended_transfer_into_queue(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # 101 answers; AMI Atxfer to queue 701 (it answers the consultation and rings 103, who
    # answers); 101 hangs up 4.5 s after answering, completing the transfer; 103 talks with
    # the caller and hangs up
    ctx.phones(a101=Phone.answers(ring_ms=1000, talk_ms=4500), a103=Phone.answers(ring_ms=1000, talk_ms=5000))
    caller = "+380502220091"
    ctx.call(Call(EXT101_DID, caller, "Transferred Caller", hold_ms=30000))
    chan = ctx.wait_bridged("101")
    time.sleep(1.0)
    ctx.act(
        "Atxfer",
        lambda: ctx.ami.atxfer(chan, "701", context="from-internal"),
        channel=chan,
        exten="701",
        context="from-internal",
    )
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101", "103"],
            rang=["101", "103"],
            transfers=[{"kind": "attended", "from": "101", "to": "103", "via": "AMI Atxfer"}],
            queue="701",
            hangup_by="agent",
            consultation={"queue": "701", "answered_by": "103", "completed": True},
        )
    ]


# ---- hold -----------------------------------------------------------------------------------
def hold_resume(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # 101 answers after 1 s, talks 1.5 s, holds 2.5 s (re-INVITE sendonly), resumes, talks 2 s
    # and hangs up
    ctx.phones(a101=Phone.holds(ring_ms=1000, hold_after_ms=1500, hold_ms=2500, talk_ms=2000))
    caller = "+380502220080"
    ctx.call(Call(EXT101_DID, caller, "Held Caller", hold_ms=30000))
    return [
        _inbound(
            caller,
            EXT101_DID,
            handlers=["101"],
            rang=["101"],
            hangup_by="agent",
            hold={"by": "101", "held_ms": 2500},
        )
    ]


# ---- outbound, internal, IVR -----------------------------------------------------------------
def outbound_busy(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(carrier=Phone.busy())
    ctx.call(Call(MOBILE, "101", "Agent 101", answer_timeout_ms=5000))
    return [
        call_truth(
            direction="outbound",
            answered=False,
            missed_at="external",
            external=MOBILE,
            initiator="101",
            hangup_by="external",
            routing=None,
            external_status="busy",
            outbound_cid="4930100100",
        )
    ]


def outbound_answered(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    ctx.phones(carrier=Phone.answers(ring_ms=1000))
    ctx.call(Call(MOBILE, "101", "Agent 101", hold_ms=3000))
    return [
        call_truth(
            direction="outbound",
            answered=True,
            external=MOBILE,
            initiator="101",
            handlers=["101"],
            hangup_by="agent",
            routing=None,
            outbound_cid="4930100100",
        )
    ]


def internal_declined(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    # 102 rings 1.5 s and declines (603); 102 has no voicemail: FreePBX plays busy to 101
    ctx.phones(a102=Phone.declines(ring_ms=1500))
    ctx.call(Call("102", "101", "Agent 101", answer_timeout_ms=10000))
    return [
        call_truth(
            direction="internal",
            answered=False,
            missed_at="agent",
            external=None,
            initiator="101",
            rang=["102"],
            hangup_by="system",
            routing=None,
            declined_by="102",
        )
    ]


def ivr_invalid_choice_hangup(ctx: ScenarioContext) -> list[Truth]:
    _settings(ctx)
    caller = "+380502220070"
    # the IVR answers, waits 1 s, plays the menu; the caller presses 9 (no such option),
    # hears "invalid" and the menu again, and hangs up
    ctx.call(Call(IVR_DID, caller, "IVR Caller", hold_ms=4000, dtmf="9", dtmf_delay_ms=1500))
    return [_inbound(caller, IVR_DID, missed_at="ivr", ivr_choice="9")]


# ---- a mix of ~50 overlapping calls ------------------------------------------------------
MIX_EACH = 7


def mix_50_overlapping(ctx: ScenarioContext) -> list[Truth]:
    _followme(ctx, "103")
    ctx.sipp.trace_messages = False
    # 101 answers after 0.8 s, 102 after 3 s, 103 never; the carrier (103's mobile) after 1 s
    ctx.phones(
        a101=Phone.answers(ring_ms=800),
        a102=Phone.answers(ring_ms=3000),
        a103=Phone.never_answers(),
        carrier=Phone.answers(ring_ms=1000),
    )
    common = {"count": MIX_EACH, "rate": 2.0, "max_concurrent": MIX_EACH}
    # SIPp's [call_number] runs 1..MIX_EACH in each stream
    groups = [
        ("+380503010", GROUP_DID, {"hold_ms": 3000}),
        ("+380503020", EXT103_DID, {"hold_ms": 3000}),
        ("+380503030", IVR_DID, {"hold_ms": 3500, "dtmf": "9", "dtmf_delay_ms": 1500}),
        ("+380503040", QUEUE_LOCAL_DID, {"hold_ms": 3000}),
        ("+380503050", GROUP2_DID, {"answer_timeout_ms": 1500}),
    ]
    agents = [
        # 101's phone dials out (outbound route, the carrier answers after 1 s)
        (MOBILE, "101", {"hold_ms": 2000}),
        # 102's phone calls 103 (follow-me: 103 rings alone 3 s first) and gives up after 1.5 s
        ("103", "102", {"answer_timeout_ms": 1500}),
    ]
    for prefix, did, extra in groups:
        ctx.call(Call(did, prefix + "[call_number]", "Mix Caller", **common, **extra), trace_messages=False)  # type: ignore[arg-type]
        time.sleep(0.3)
    for dial, agent, extra in agents:
        ctx.call(Call(dial, agent, f"Agent {agent}", **common, **extra), trace_messages=False)  # type: ignore[arg-type]
        time.sleep(0.3)
    peak = 0
    while any(c.alive() for c in ctx.callers):
        peak = max(peak, ctx.ami.channel_count())
        time.sleep(0.5)
    ctx.notes["peak_channels"] = peak
    truths: list[Truth] = []
    for n in range(1, MIX_EACH + 1):
        truths += [
            _inbound(f"+380503010{n}", GROUP_DID, handlers=["101"], rang=["101", "102", "103"]),
            _inbound(
                f"+380503020{n}",
                EXT103_DID,
                handlers=["103"],
                handler_forwarded_to=[MOBILE],
                rang=["103"],
            ),
            _inbound(f"+380503030{n}", IVR_DID, missed_at="ivr", ivr_choice="9"),
            _inbound(f"+380503040{n}", QUEUE_LOCAL_DID, handlers=["101"], rang=["101", "102"], queue="702"),
            _inbound(f"+380503050{n}", GROUP2_DID, missed_at="queue", rang=["102", "103"]),
            call_truth(
                direction="outbound",
                answered=True,
                external=MOBILE,
                initiator="101",
                handlers=["101"],
                hangup_by="agent",
                routing=None,
            ),
            call_truth(
                direction="internal",
                answered=False,
                missed_at="agent",
                external=None,
                initiator="102",
                rang=["103"],
                hangup_by="agent",
                routing=None,
            ),
        ]
    return truths


# The lab profile's scenarios that mean the same on this dialplan: the routing DID goes through
# the FreePBX custom destination (pbxlink-freepbx.conf, owner first) instead of
# pbxlink-routing.conf, extensions through ext-local, outbound through macro-dialout-trunk,
# pickups through app-pickup.  Their truths are the lab's, unchanged.  Left out where the
# dialplans differ in what the caller lives through: the FreePBX snippet does not answer the
# caller with a greeting, so inbound_agent_rings_caller_hangs_up's caller (who hangs up a while
# after being answered) reaches the ring group and voicemail here; transfers by AMI name the lab's
# context; the lab's queues (support, sales), IVR and recorded line do not exist here.
LAB_SCENARIOS_ON_FREEPBX = (
    "inbound_answered",
    "blind_transfer_refer",
    "call_pickup_group",
    "call_pickup_directed",
    "outbound_unanswered",
    "internal_answered",
    "internal_unanswered",
    "non_ascii_caller_name",
)


def _on_freepbx_defaults(
    run: Callable[[ScenarioContext], list[Truth]],
) -> Callable[[ScenarioContext], list[Truth]]:
    def scenario(ctx: ScenarioContext) -> list[Truth]:
        _settings(ctx)
        return run(ctx)

    return scenario


FREEPBX_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "fpbx_ring_group_abandoned",
            "FreePBX ring group 600 (one Dial of 101&102&103); nobody answers; the caller hangs up.",
            ring_group_abandoned,
        ),
        Scenario(
            "fpbx_ring_group_answered_by_one",
            "Ring group 600; 102 answers, 101 and 103 only rang; the caller hangs up.",
            ring_group_answered_by_one,
        ),
        Scenario(
            "fpbx_ring_group_timeout_voicemail",
            "Ring group 600 rings GRPTIME unanswered; its failover, voicemail 100, answers; "
            "the caller hangs up in the greeting.",
            ring_group_timeout_voicemail,
        ),
        Scenario(
            "fpbx_ring_group_member_dnd",
            "Ring group 600 with 102 on DND (left out of the Dial); 103 answers.",
            ring_group_member_dnd,
        ),
        Scenario(
            "fpbx_ring_group_two_abandoned",
            "Ring group 601 (102&103); nobody answers; the caller hangs up.",
            ring_group_two_abandoned,
        ),
        Scenario(
            "fpbx_extension_no_answer_abandoned",
            "Extension 101 alone rings; the caller hangs up before its ring time ends.",
            extension_no_answer_abandoned,
        ),
        Scenario(
            "fpbx_followme_answered_on_mobile",
            "Follow-me of 101: 101 rings alone (prering 3 s), then Local/0671234567@from-internal/n "
            "-> the trunk; the mobile (carrier) answers.",
            followme_answered_on_mobile,
        ),
        Scenario(
            "fpbx_followme_answered_on_extension",
            "Follow-me of 101 enabled; 101 answers during the prering; the mobile is never dialed.",
            followme_answered_on_extension,
        ),
        Scenario(
            "fpbx_cf_unconditional_external_answered",
            "101 forwards all calls (CF) to 0671234567; the carrier answers.",
            cf_unconditional_external_answered,
        ),
        Scenario(
            "fpbx_cf_unconditional_external_unanswered",
            "101 forwards all calls (CF) to 0671234567; it rings, the caller gives up.",
            cf_unconditional_external_unanswered,
        ),
        Scenario(
            "fpbx_cf_unconditional_voicemail",
            "101 forwards all calls (CF) to its voicemail (*101); the caller hangs up in the greeting.",
            cf_unconditional_voicemail,
        ),
        Scenario(
            "fpbx_cf_busy_external_answered",
            "101 is busy (486); busy forward (CFB) to 0671234567; the carrier answers.",
            cf_busy_external_answered,
        ),
        Scenario(
            "fpbx_cf_busy_voicemail",
            "101 is busy (486); no busy forward: 101's voicemail (busy greeting).",
            cf_busy_voicemail,
        ),
        Scenario(
            "fpbx_cf_no_answer_external_answered",
            "101 rings RINGTIMER unanswered; no-answer forward (CFU) to 0671234567; the carrier answers.",
            cf_no_answer_external_answered,
        ),
        Scenario(
            "fpbx_cf_no_answer_external_unanswered",
            "101 rings unanswered; CFU to 0671234567 rings unanswered; then 101's voicemail.",
            cf_no_answer_external_unanswered,
        ),
        Scenario(
            "fpbx_cf_no_answer_voicemail",
            "101 rings RINGTIMER unanswered; voicemail 101; the caller hangs up in the greeting.",
            cf_no_answer_voicemail,
        ),
        Scenario(
            "fpbx_queue_overflow_answered",
            "Queue 700 (Local/101, Local/102 @from-queue/n) times out; its failover queue 701 "
            "(Local/103): 103 answers.",
            queue_overflow_answered,
        ),
        Scenario(
            "fpbx_queue_local_members_optimized",
            "Queue 702, members Local/1XX@from-queue without /n; 102 answers and the Local pair is "
            "optimized away.",
            queue_local_members_optimized,
        ),
        Scenario(
            "fpbx_queue_local_members_abandoned",
            "Queue 702 (Local members without /n); nobody answers; the caller hangs up.",
            queue_local_members_abandoned,
        ),
        Scenario(
            "fpbx_park_picked_up_by_another",
            "101 answers and parks the caller (REFER to 70); 102 dials the slot and takes the call.",
            park_picked_up_by_another,
        ),
        Scenario(
            "fpbx_park_timeout_rings_parker_back",
            "101 answers; AMI Park; nobody picks up; after parkingtime the lot rings 101 back, 101 "
            "answers and hangs up.",
            park_timeout_rings_parker_back,
        ),
        Scenario(
            "fpbx_park_caller_hangs_up",
            "101 answers and parks the caller (REFER to 70); the caller hangs up while parked.",
            park_caller_hangs_up,
        ),
        Scenario(
            "fpbx_conference_caller_and_two_agents",
            "The caller joins conference 8000 (ConfBridge); 101 and 102 dial 8000 and join; the agents "
            "leave, then the caller.",
            conference_caller_and_two_agents,
        ),
        Scenario(
            "fpbx_chanspy_supervisor",
            "101 talks with a caller; supervisor 103 dials 555101 (ChanSpy) and listens 3 s.",
            chanspy_supervisor,
        ),
        Scenario(
            "fpbx_whisper_supervisor",
            "101 talks with a caller; supervisor 103 dials 556101 (ChanSpy whisper) for 3 s.",
            whisper_supervisor,
        ),
        Scenario(
            "fpbx_blind_transfer_to_external",
            "101 answers and transfers blind (REFER) to 0671234567; the outbound route dials the "
            "trunk; the carrier answers and talks with the caller.",
            blind_transfer_to_external,
        ),
        Scenario(
            "fpbx_attended_transfer_into_queue",
            "101 answers; AMI Atxfer to queue 701, which answers the consultation and rings 103; 103 "
            "answers; 101 hangs up (completes); 103 talks with the caller.",
            attended_transfer_into_queue,
        ),
        Scenario(
            "fpbx_hold_resume",
            "101 answers, puts the caller on hold (re-INVITE sendonly) for 2.5 s, resumes, hangs up.",
            hold_resume,
        ),
        Scenario(
            "fpbx_outbound_answered",
            "101 dials 0671234567 (outbound route, macro-dialout-trunk rewrites the CallerID); "
            "the carrier answers.",
            outbound_answered,
        ),
        Scenario(
            "fpbx_outbound_busy",
            "101 dials 0671234567; the carrier answers 486; FreePBX plays busy (Busy()).",
            outbound_busy,
        ),
        Scenario(
            "fpbx_internal_declined",
            "101 calls 102; 102 rings and declines (603); 102 has no voicemail: busy to 101.",
            internal_declined,
        ),
        Scenario(
            "fpbx_ivr_invalid_choice_hangup",
            "IVR; the caller presses 9 (no such option), hears the menu again and hangs up.",
            ivr_invalid_choice_hangup,
        ),
        Scenario(
            "fpbx_mix_50_overlapping",
            f"{7 * MIX_EACH} overlapping calls, 2/s in each of seven streams: ring group 600 answered by "
            "101; follow-me of 103 answered on the mobile; IVR invalid choice; queue 702 (Local "
            "members) answered by 101; ring group 601 abandoned; 101 dials out (answered); 102 "
            "calls 103 and gives up.",
            mix_50_overlapping,
            heavy=True,
        ),
        *(
            Scenario(
                f"fpbx_{name}",
                f"The lab's {name} on the FreePBX dialplan: {SCENARIOS[name].description}",
                _on_freepbx_defaults(SCENARIOS[name].run),
            )
            for name in LAB_SCENARIOS_ON_FREEPBX
        ),
    ]
}
