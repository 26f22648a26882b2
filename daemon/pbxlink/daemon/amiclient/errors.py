"""The AMI shell's errors: each carries the data an admin or a caller needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbxlink.foundation.errors import PbxlinkError

if TYPE_CHECKING:
    from pbxlink.daemon.amiclient.protocol import ActionReply

__all__ = [
    "AmiActionError",
    "AmiActionTimeout",
    "AmiConnectError",
    "AmiConnectionLost",
    "AmiError",
    "AmiLoginError",
    "AmiNotConnected",
    "AmiProtocolError",
]


class AmiError(PbxlinkError):
    """Base of the AMI shell's errors."""


class AmiLoginError(AmiError):
    """Asterisk refused the login: wrong user/secret or an ACL. Not retried."""

    def __init__(self, username: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"AMI login failed for user {username!r} at {host}:{port}: {reason}")
        self.username = username
        self.host = host
        self.port = port
        self.reason = reason


class AmiProtocolError(AmiError):
    """The peer does not speak AMI (no ``Asterisk Call Manager/`` banner). Not retried."""

    def __init__(self, host: str, port: int, head: bytes) -> None:
        super().__init__(f"{host}:{port} is not an Asterisk manager interface (it sent {head!r})")
        self.host = host
        self.port = port
        self.head = head


class AmiConnectError(AmiError):
    """The first connection could not be made and retrying was not asked for."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot reach AMI at {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


class AmiConnectionLost(AmiError):
    """The connection ended while an action waited for its reply."""


class AmiNotConnected(AmiError):
    """An action was sent while no session was logged in."""


class AmiActionTimeout(AmiError):
    """No complete reply to an action in time."""

    def __init__(self, action: str, timeout: float) -> None:
        super().__init__(f"AMI action {action} got no complete reply within {timeout:g} s")
        self.action = action
        self.timeout = timeout


class AmiActionError(AmiError):
    """Asterisk answered an action with an error response."""

    def __init__(self, action: str, reply: ActionReply) -> None:
        message = reply.message or reply.response.response or "?"
        super().__init__(f"AMI action {action} failed: {message}")
        self.action = action
        self.reply = reply
