"""The wire model: what crosses MQTT between pbxlink processes (pure, no I/O).

* :mod:`pbxlink.wire.model`   — the records, msgspec Structs, defined once: `CallOutcome`,
  `LiveEvent`, `Request` (A7 messages/web requests), `Envelope`, `RoutingDecision`, their
  parts and enums (`Direction`, `MissedAt`, `MessageKind` …), `DirectoryEntry`, `DeadLetter`.
* :mod:`pbxlink.wire.codec`   — `encode`, `decode`, `convert`, `decode_envelope`, `to_builtins`;
  bad input raises `WireError` naming the field.
* :mod:`pbxlink.wire.instant` — `Instant`, the wire time (UTC, milliseconds), `iso_utc`, `seconds`.
* :mod:`pbxlink.wire.schema`  — the published JSON Schema, generated (``pbxlink schema``).
* :mod:`pbxlink.wire.topics`  — the MQTT topics: `NodeTopics`, `request_topic`, `directory_topic`.
* :mod:`pbxlink.wire.samples` — valid sample records for tests and benchmarks.
* :mod:`pbxlink.wire.phone`   — phone numbers (E.164 normalization).
"""
