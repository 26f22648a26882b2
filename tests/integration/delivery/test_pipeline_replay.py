"""The daemon's hot path on real recorded AMI sessions: what reaches MQTT is what replay says.

Each recording from the lab (tests/data/ami/*.ami) is fed, in arbitrary chunks, through the same
objects `pbxlink run` uses (framer → CallPipeline → OutboxWriter → outbox → OutcomePublisher)
to a real mosquitto. The consumer must receive every outcome of `pbxlink replay` on that file,
each exactly once after dedupe, with the same content (the 100-call load recording included).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mqtt_support import recording_consumer, until
from pbxlab.mosquitto import BrokerHandle

from pbxlink.ami.framing import AmiFramer
from pbxlink.calls.tracker import CallTracker, CallTrackerSettings
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import Outbox
from pbxlink.daemon.pipeline import CallPipeline, OutboxWriter
from pbxlink.daemon.publisher import OutcomePublisher
from pbxlink.daemon.replay import read_chunks, replay_outcomes
from pbxlink.foundation.config import MqttSettings
from pbxlink.toolkit.metrics import sample

_DATA = Path(__file__).parents[2] / "data" / "ami"
RECORDINGS = sorted([*_DATA.glob("*.ami"), *_DATA.glob("*.ami.gz")])


@contextlib.asynccontextmanager
async def daemon_path(tmp_path: Path, port: int) -> AsyncIterator[tuple[CallPipeline, DaemonMetrics]]:
    metrics = DaemonMetrics()
    async with await Outbox.open(tmp_path / "outbox.sqlite") as outbox:
        publisher = OutcomePublisher(MqttSettings(port=port), outbox, node="pbx1", metrics=metrics)
        writer = OutboxWriter(outbox, metrics=metrics, event_ttl=300, on_commit=publisher.wake)
        pipeline = CallPipeline(CallTracker(CallTrackerSettings()), writer, node="pbx1", metrics=metrics)
        async with asyncio.TaskGroup() as tasks:
            writing = tasks.create_task(writer.run(), name="outbox-writer")
            publishing = tasks.create_task(publisher.run(), name="publisher")
            try:
                yield pipeline, metrics
            finally:
                writer.stop()
                await writing
                publisher.stop()
                await publishing


def test_there_are_recordings_to_replay() -> None:
    assert len(RECORDINGS) >= 10


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.name.split(".")[0])
async def test_a_recorded_session_reaches_mqtt_once_per_call_as_replay_computes_it(
    recording: Path,
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    expected = list(replay_outcomes(read_chunks(recording)))
    async with (
        recording_consumer(mosquitto_broker.port, "pbxlink/v1/pbx1/call/#") as consumer,
        daemon_path(tmp_path, mosquitto_broker.port) as (pipeline, metrics),
    ):
        framer = AmiFramer()
        for chunk in read_chunks(recording, chunk_size=997):  # frames split across reads
            for frame in framer.feed(chunk):
                pipeline.feed(frame)
        pipeline.tick(float("inf"))  # end of input: finalize what has ended (as replay does)
        await until(lambda: len(consumer.unique_ids("call/outcome")) >= len(expected))
        await until(
            lambda: (
                sample(metrics.registry, "pbxlink_outbox_written_total", kind="call.event")
                == sample(metrics.registry, "pbxlink_published_total", kind="call.event")
            )
        )

    received: dict[str, object] = {}
    for message in consumer.messages:
        if message.topic.endswith("/call/outcome"):
            received[message.body["id"]] = message.body["data"]
    assert received == {o["id"]: o for o in expected}
    events = [m.body for m in consumer.messages if m.topic.endswith("/call/event")]
    assert len({e["id"] for e in events}) == len(events)  # no duplicate in a clean run
    assert all(e["id"] == f"{e['data']['call_id']}:{e['data']['seq']}" for e in events)
