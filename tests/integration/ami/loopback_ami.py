"""Small real TCP servers on 127.0.0.1 for the AMI shell's fault tests.

``LoopbackAmi`` speaks the parts of AMI the shell uses, the way Asterisk 22 does
(``main/manager.c``): the banner line on accept, ``Login`` answered with
``Authentication accepted`` or — after Asterisk's one second of delay — ``Authentication
failed`` and a close, ``Ping``/``CoreSettings``/``CoreShowChannels``/``BridgeList``/
``Logoff`` answered with their ActionID. A test can push any bytes to the connected clients
(events, garbage, an oversized frame) and can stop answering (``silent=True``: accepts and
reads, never writes — a dead peer).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

BANNER = b"Asterisk Call Manager/9.0.0\r\n"


def frame(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class LoopbackAmi:
    username: str = "pbxlink"
    secret: str = "pbxlink"
    silent: bool = False  # accept, read, never write (not even the banner)
    mute: bool = False  # after login: keep reading, stop answering (a hung Asterisk)
    ignore_actions: frozenset[str] = frozenset()  # actions (lower case) never answered
    greeting: bytes = BANNER
    login_delay_on_failure: float = 1.0
    channels: list[list[str]] = field(default_factory=list)
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    actions: list[dict[str, str]] = field(default_factory=list)
    accepted: int = 0
    logins: int = 0
    # set each time a client has had its BridgeList answered (the shell's last snapshot step)
    snapshot_served: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def push(self, data: bytes) -> None:
        for writer in list(self.writers):
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def drop_clients(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.silent:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            writer.close()
            return
        self.writers.append(writer)
        writer.write(self.greeting)
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, str] = {}
                for line in block.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    if key:
                        headers.setdefault(key.lower(), value)
                self.actions.append(headers)
                if self.mute or headers.get("action", "").lower() in self.ignore_actions:
                    continue
                if not await self._answer(headers, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    async def _answer(self, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        action = headers.get("action", "").lower()
        aid = f"ActionID: {headers.get('actionid', '')}"
        if action == "login":
            if headers.get("username") != self.username or headers.get("secret") != self.secret:
                await asyncio.sleep(self.login_delay_on_failure)
                writer.write(frame("Response: Error", aid, "Message: Authentication failed"))
                await writer.drain()
                return False
            self.logins += 1
            writer.write(frame("Response: Success", aid, "Message: Authentication accepted"))
            writer.write(frame("Event: FullyBooted", "Privilege: system,all", "Status: Fully Booted"))
        elif action == "ping":
            writer.write(frame("Response: Success", aid, "Ping: Pong", "Timestamp: 1.0"))
        elif action == "coresettings":
            writer.write(frame("Response: Success", aid, "AMIversion: 9.0.0", "AsteriskVersion: 22.0.0"))
        elif action == "coreshowchannels":
            writer.write(
                frame(
                    "Response: Success",
                    aid,
                    "EventList: start",
                    "Message: Channels will follow",
                )
            )
            for channel in self.channels:
                writer.write(frame("Event: CoreShowChannel", aid, *channel))
            writer.write(
                frame(
                    "Event: CoreShowChannelsComplete",
                    aid,
                    "EventList: Complete",
                    f"ListItems: {len(self.channels)}",
                )
            )
        elif action == "bridgelist":
            writer.write(
                frame("Response: Success", aid, "EventList: start", "Message: Bridge listing will follow")
            )
            writer.write(frame("Event: BridgeListComplete", aid, "EventList: Complete", "ListItems: 0"))
            self.snapshot_served.set()
        elif action == "logoff":
            writer.write(frame("Response: Goodbye", aid, "Message: Thanks for all the fish."))
            await writer.drain()
            return False
        else:
            writer.write(frame("Response: Error", aid, "Message: Invalid/unknown command"))
        await writer.drain()
        return True
