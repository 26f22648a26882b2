"""Replay is the daemon by construction: the same core, the decoder told by the tracker."""

from __future__ import annotations

from pbxlink.ami.decode import DECODES_INTO
from pbxlink.ami.events import NewConnectedLine
from pbxlink.ami.framing import Frame
from pbxlink.calls.tracker import TRACKED_EVENTS, CallTracker
from pbxlink.daemon.pipeline import CallCore

CONNECTED_LINE = (
    b"Event: NewConnectedLine\r\nPrivilege: call,all\r\nTimestamp: 1795389600.000001\r\n"
    b"Channel: PJSIP/101-00000001\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n"
    b"CallerIDNum: 101\r\nCallerIDName: Anna\r\nConnectedLineNum: 0981234567\r\n"
    b"ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\nContext: agents\r\n"
    b"Exten: 0981234567\r\nPriority: 1\r\nUniqueid: 1795389600.1\r\nLinkedid: 1795389600.1\r\n\r\n"
)


def test_every_event_type_the_tracker_handles_is_decoded_and_nothing_else() -> None:
    decoded_types = {DECODES_INTO[name] for name in TRACKED_EVENTS}
    assert decoded_types == CallTracker().handled_events


def test_an_event_the_old_fixed_list_dropped_reaches_the_tracker_in_replay_and_daemon_alike() -> None:
    core = CallCore(CallTracker())
    event = core.decode(Frame(CONNECTED_LINE))
    assert isinstance(event, NewConnectedLine)
    assert event.connected_num == "0981234567"
