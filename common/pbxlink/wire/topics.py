"""The MQTT topics of the wire messages (docs/delivery.md, docs/crm.md, docs/routing.md)."""

from __future__ import annotations

from dataclasses import dataclass

from pbxlink.wire.model import MessageKind

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "DIRECTORY_TOPIC_PREFIX",
    "KIND_SUFFIX",
    "NodeTopics",
    "directory_topic",
    "request_topic",
]

DEFAULT_TOPIC_PREFIX = "pbxlink/v1"
DIRECTORY_TOPIC_PREFIX = f"{DEFAULT_TOPIC_PREFIX}/directory/"

# The last levels of the topic each kind of message is published on.
KIND_SUFFIX: dict[MessageKind, str] = {
    MessageKind.OUTCOME: "call/outcome",
    MessageKind.EVENT: "call/event",
    MessageKind.REQUEST: "crm/request",
}


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """The topics of one PBX node, under the configured prefix (``mqtt.topic_prefix``)."""

    node: str
    prefix: str = DEFAULT_TOPIC_PREFIX

    @property
    def outcome(self) -> str:
        return f"{self.prefix}/{self.node}/{KIND_SUFFIX[MessageKind.OUTCOME]}"

    @property
    def event(self) -> str:
        return f"{self.prefix}/{self.node}/{KIND_SUFFIX[MessageKind.EVENT]}"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.node}/status"

    def for_kind(self, kind: MessageKind) -> str:
        return self.outcome if kind is MessageKind.OUTCOME else self.event


def request_topic(prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """Where mail/messenger/web gateways publish A7 requests."""
    return f"{prefix}/{KIND_SUFFIX[MessageKind.REQUEST]}"


def directory_topic(e164: str, prefix: str = DIRECTORY_TOPIC_PREFIX) -> str:
    """The retained directory entry of a number: ``…/directory/<E.164 digits>``."""
    return prefix + e164.removeprefix("+")
