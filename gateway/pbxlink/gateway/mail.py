"""An e-mail's bytes → what a request needs from it (pure: no I/O).

The standard library's parser (``email.policy.default``) reads the MIME structure; this module
decides what the CRM sees: the sender's address and name, the subject, one text body (the
``text/plain`` part, else the ``text/html`` part turned into text by html2text; charsets decoded,
undecodable bytes replaced and reported), the ``Message-ID``, the thread (``In-Reply-To`` and
``References``) and the attachments by name, type and size.

A mail that cannot become a request raises :class:`MailRejected` with the reason: over the size
cap, no sender address, or a multipart structure whose boundaries are missing (its "text" would
be raw MIME).
"""

from __future__ import annotations

import email.errors
import email.header
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Final

import html2text

__all__ = ["Attachment", "MailRejected", "ParsedMail", "html_to_text", "message_ids", "parse_mail"]

_MESSAGE_ID: Final = re.compile(r"<([^<>\s]+)>")
# Defects after which the parts cannot be told apart: the "body" would be raw MIME.
_BROKEN: Final = (
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
)


class MailRejected(Exception):
    """The mail cannot become a request; ``reason`` says why (logged, counted, dead-lettered)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # the metric label: too_large | no_sender | malformed_mime
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ParsedMail:
    sender_email: str
    sender_name: str | None
    subject: str
    body: str
    message_id: str | None
    thread: tuple[str, ...]  # In-Reply-To first, then References newest first, no repeats
    attachments: tuple[Attachment, ...]
    problems: tuple[str, ...]  # what was repaired on the way (bad bytes, unknown charset, defects)


def message_ids(header: str | None) -> list[str]:
    """``<a@b> <c@d>`` → ``["a@b", "c@d"]`` (a bare id without brackets is taken as it is)."""
    if not header:
        return []
    found = _MESSAGE_ID.findall(header)
    if found:
        return found
    bare = header.strip()
    return [bare] if bare and " " not in bare else []


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = False
    converter.single_line_break = True
    return str(converter.handle(html)).strip()


def _text_of(part: Message, problems: list[str]) -> str:
    charset = part.get_content_charset() or "us-ascii"
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    try:
        text = raw.decode(charset)
    except LookupError:
        problems.append(f"unknown charset {charset!r}: read as UTF-8")
        text = raw.decode("utf-8", errors="replace")
    except UnicodeDecodeError:
        problems.append(f"bytes that are not {charset}: replaced with U+FFFD")
        text = raw.decode(charset, errors="replace")
    return text


def _body(message: EmailMessage, problems: list[str]) -> str:
    best = message.get_body(preferencelist=("plain", "html"))
    if best is None:
        return ""
    text = _text_of(best, problems)
    if best.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def _attachments(message: EmailMessage) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    for part in message.iter_attachments() if message.is_multipart() else ():
        _collect(part, found)
    return tuple(found)


def _collect(part: EmailMessage, found: list[Attachment]) -> None:
    if part.is_multipart():
        for inner in part.iter_parts():
            _collect(inner, found)  # type: ignore[arg-type]
        return
    filename = part.get_filename()
    if filename is None and part.get_content_maintype() == "text":
        return  # an alternative body, not an attachment
    payload = part.get_payload(decode=True)
    size = len(payload) if isinstance(payload, bytes) else 0
    found.append(Attachment(filename or "(unnamed)", part.get_content_type(), size))


def _raw(message: Message, name: str) -> str | None:
    """A header's value as received (unfolded), without the policy's structured parsing, which
    raises on malformed values such as ``Message-ID: <<>>``."""
    for key, value in message.raw_items():
        if key.lower() == name.lower():
            return str(value).replace("\r\n", "").replace("\n", "")
    return None


def _clean(text: str, problems: list[str], what: str) -> str:
    """Undeclared 8-bit bytes in a header reach us as lone surrogates (the parser's
    ``surrogateescape``), which no UTF-8 encoder accepts: read those bytes as UTF-8, replacing
    what is not."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    problems.append(f"{what}: undeclared 8-bit bytes read as UTF-8")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decoded(raw: str | None) -> str:
    """An unstructured header (Subject) with its RFC 2047 words decoded, leniently."""
    if not raw:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(raw))).strip()
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return raw.strip()


def _thread(message: EmailMessage) -> tuple[str, ...]:
    ids = message_ids(_raw(message, "In-Reply-To"))
    ids += reversed(message_ids(_raw(message, "References")))
    seen: dict[str, None] = {}
    for one in ids:
        seen.setdefault(one, None)
    return tuple(seen)


def _sender(message: EmailMessage) -> tuple[str, str | None]:
    raw = _raw(message, "From")
    try:
        header = message.get("From")
        addresses = tuple(getattr(header, "addresses", ())) if header is not None else ()
    except (ValueError, IndexError, TypeError, email.errors.HeaderParseError):
        addresses = ()
    for address in addresses:
        if address.username and address.domain:
            name = address.display_name.strip() or None
            return f"{address.username}@{address.domain}".lower(), name
    # the structured parser gave up: the lenient one of email.utils
    name, addr = email.utils.parseaddr(raw or "")
    if addr.count("@") == 1 and all(addr.split("@")) and " " not in addr:
        return addr.lower(), _decoded(name) or None
    raise MailRejected("no_sender", f"no sender address (From: {(raw or '')[:80]!r})")


def parse_mail(raw: bytes, *, max_bytes: int, max_body_chars: int) -> ParsedMail:
    """The request's parts of one RFC 5322 message; raises :class:`MailRejected`."""
    if len(raw) > max_bytes:
        raise MailRejected("too_large", f"message of {len(raw)} bytes is over the cap of {max_bytes}")
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    broken = [d for part in message.walk() for d in part.defects if isinstance(d, _BROKEN)]
    if broken:
        names = ", ".join(sorted({type(d).__name__ for d in broken}))
        raise MailRejected("malformed_mime", f"malformed MIME structure: {names}")
    sender_email, sender_name = _sender(message)
    problems: list[str] = []
    sender_email = _clean(sender_email, problems, "From")
    sender_name = _clean(sender_name, problems, "From") if sender_name else None
    subject = _clean(_decoded(_raw(message, "Subject")), problems, "Subject")
    try:
        body = _body(message, problems)
        attachments = _attachments(message)
    except (ValueError, IndexError, TypeError, LookupError, AttributeError, email.errors.MessageError) as exc:
        # the standard library's MIME walk gave up on this structure: nothing reliable to read
        raise MailRejected(
            "malformed_mime", f"unreadable MIME structure: {type(exc).__name__}: {exc}"
        ) from exc
    if len(body) > max_body_chars:
        problems.append(f"body cut from {len(body)} to {max_body_chars} characters")
        body = body[:max_body_chars]
    ids = [_clean(i, problems, "Message-ID") for i in message_ids(_raw(message, "Message-ID"))]
    thread = tuple(_clean(i, problems, "References") for i in _thread(message))
    attachments = tuple(
        Attachment(
            _clean(a.filename, problems, "attachment name"), _clean(a.content_type, problems, "type"), a.size
        )
        for a in attachments
    )
    return ParsedMail(
        sender_email=sender_email,
        sender_name=sender_name,
        subject=subject,
        body=_clean(body, problems, "body"),
        message_id=ids[0] if ids else None,
        thread=thread,
        attachments=attachments,
        problems=tuple(problems),
    )
