"""Writing and reading the wire model: JSON bytes and plain objects, one codec for every process.

Reading is strict (types, enums, patterns, ``schema: 1``) and names the field of the first
problem: ``WireError("envelope.data.direction: Invalid enum value 'sideways'")``. Unknown
fields are ignored (the schema grows additively).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from pbxlink.wire.instant import Instant
from pbxlink.wire.model import (
    BODY_TYPES,
    SCHEMA_VERSION,
    Body,
    DirectoryTime,
    Envelope,
    LiveEvent,
    MessageKind,
)

__all__ = [
    "WireError",
    "convert",
    "decode",
    "decode_envelope",
    "encode",
    "to_builtins",
]

T = TypeVar("T")


class WireError(ValueError):
    """A payload that breaks the wire contract; ``reason`` names the field (``path: problem``).

    ``field`` is the path inside the decoded document (``clients[0].client_id``; empty for the
    document itself) and ``problem`` the rest, for callers that report them apart.
    """

    def __init__(self, reason: str, *, field: str = "", problem: str = "") -> None:
        self.reason = reason
        self.field = field
        self.problem = problem or reason
        super().__init__(reason)


def _enc_hook(value: object) -> object:
    if isinstance(value, Instant):
        return value.wire()
    raise NotImplementedError(f"{type(value).__name__} is not part of the wire model")


def _dec_hook(kind: type, value: object) -> object:
    if kind is Instant or kind is DirectoryTime:
        if isinstance(value, datetime):
            return kind.of(value)
        if not isinstance(value, str):
            raise TypeError("expected an ISO 8601 time")
        if kind is DirectoryTime:
            return DirectoryTime.parse_lenient(value)
        return Instant.parse(value)
    raise NotImplementedError(f"{kind.__name__} is not part of the wire model")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode(value: object) -> bytes:
    """A wire record (or a plain structure of them) → compact UTF-8 JSON, non-ASCII unescaped."""
    return _ENCODER.encode(value)


def to_builtins(value: object) -> Any:
    """A wire record → plain dicts/lists/str (times in their wire form), as ``json.loads`` gives."""
    return msgspec.json.decode(_ENCODER.encode(value))


_AT = re.compile(r"^(?P<problem>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_OWN = re.compile(r"^`(?P<field>[^`]+)`: (?P<rest>.*)$", re.DOTALL)


def _error(error: msgspec.MsgspecError, root: str) -> WireError:
    """msgspec's ``Expected `int`, got `str` - at `$.data.seq``` → ``root.data.seq: Expected …``."""
    text = str(error)
    match = _AT.match(text)
    field, problem = ("", text) if match is None else (match["path"].removeprefix("."), match["problem"])
    own = _OWN.match(problem)  # a model's own check names its field: "`external`: required …"
    if own is not None:
        field, problem = ".".join(p for p in (field, own["field"]) if p), own["rest"]
    path = ".".join(p for p in (root, field) if p) if not field.startswith("[") else root + field
    return WireError(f"{path}: {problem}", field=field, problem=problem)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(payload: bytes | str, kind: type[T], *, root: str = "data") -> T:
    """JSON bytes → a wire record of ``kind``; WireError naming the field otherwise."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind, dec_hook=_dec_hook)
    try:
        result: T = decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise _error(exc, root) from None
    except (msgspec.DecodeError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
        raise WireError(f"{root}: not JSON: {exc}", problem=f"not JSON: {exc}") from None
    return result


def convert(document: object, kind: type[T], *, root: str = "data") -> T:
    """An already parsed JSON document (dicts, lists …) → a wire record of ``kind``."""
    try:
        return msgspec.convert(document, kind, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _error(exc, root) from None


class _RawEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    schema: int
    id: str
    type: MessageKind
    node: str
    time: str  # read after the body: a broken body is the better reason to give
    data: msgspec.Raw


class _ParsedEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    schema: int
    id: str
    type: MessageKind
    node: str
    time: str  # read after the body: a broken body is the better reason to give
    data: Any


def decode_envelope(payload: bytes | str | object) -> Envelope:
    """An MQTT message (bytes, or a parsed JSON object) → its `Envelope` with a typed body.

    Checks the envelope's own fields, the body by the envelope's ``type``, and that the
    envelope's ``id`` is the body's key.
    """
    body: Body
    if isinstance(payload, bytes | str):
        raw = decode(payload, _RawEnvelope, root="envelope")
        _check_schema(raw.schema)
        body = decode(raw.data, BODY_TYPES[raw.type], root="envelope.data")
        head: _RawEnvelope | _ParsedEnvelope = raw
    else:
        parsed = convert(payload, _ParsedEnvelope, root="envelope")
        _check_schema(parsed.schema)
        body = convert(parsed.data, BODY_TYPES[parsed.type], root="envelope.data")
        head = parsed
    for name, value in (("id", head.id), ("node", head.node)):
        if not value:
            raise WireError(f"envelope.{name}: must be a non-empty string")
    expected = body.key if isinstance(body, LiveEvent) else body.id
    if head.id != expected:
        raise WireError(f"envelope.id: {head.id!r} is not the key of its data, {expected!r}")
    try:
        time = Instant.parse(head.time)
    except ValueError as exc:
        raise WireError(f"envelope.time: {exc}") from None
    return Envelope(id=head.id, type=head.type, node=head.node, time=time, data=body)


def _check_schema(schema: int) -> None:
    if schema != SCHEMA_VERSION:
        raise WireError(f"envelope.schema: only schema {SCHEMA_VERSION} is understood, not {schema}")
