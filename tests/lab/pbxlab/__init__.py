"""pbxlab: the pbxlink test lab driver (stdlib only).

Start and stop a real Asterisk 22 (Debian sid chroot, see tests/lab/*.sh) and
mosquitto on 127.0.0.1, talk AMI, and place SIPp call scenarios with a
ground truth of what the driver did.  See docs/lab.md.
"""

from pbxlab.ami_client import AmiClient, AmiError
from pbxlab.ami_recorder import AmiRecorder
from pbxlab.driver import LabDriver, ScenarioResult
from pbxlab.instance import (
    LabError,
    LabInstance,
    LabTimings,
    running_instance,
    setup_asterisk,
    start_asterisk,
    stop_asterisk,
)
from pbxlab.mosquitto import Broker, start_mosquitto, stop_mosquitto
from pbxlab.route_stub import RouteStub
from pbxlab.scenarios import SCENARIOS, Scenario
from pbxlab.sipp import Call, Phone, PhoneBehaviour, SippProcess

__all__ = [
    "SCENARIOS",
    "AmiClient",
    "AmiError",
    "AmiRecorder",
    "Broker",
    "Call",
    "LabDriver",
    "LabError",
    "LabInstance",
    "LabTimings",
    "Phone",
    "PhoneBehaviour",
    "RouteStub",
    "Scenario",
    "ScenarioResult",
    "SippProcess",
    "running_instance",
    "setup_asterisk",
    "start_asterisk",
    "start_mosquitto",
    "stop_asterisk",
    "stop_mosquitto",
]
