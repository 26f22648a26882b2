"""E-mail bytes → the parts of a request (pbxlink.gateway.mail), on mails built as mail clients send them."""

from __future__ import annotations

from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxlink.gateway.mail import MailRejected, message_ids, parse_mail

CAP = 1024 * 1024


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return parse_mail(raw, max_bytes=CAP, max_body_chars=5000)


def test_plain_mail_gives_sender_name_subject_body_and_message_id() -> None:
    m = EmailMessage()
    m["From"] = "Иван Петров <Ivan@Client.example>"
    m["To"] = "service@shop.example"
    m["Subject"] = "Не работает холодильник"
    m["Message-ID"] = "<abc-1@client.example>"
    m.set_content("Здравствуйте, сломался холодильник.\n")
    mail = parse(m.as_bytes())
    assert mail.sender_email == "ivan@client.example"
    assert mail.sender_name == "Иван Петров"
    assert mail.subject == "Не работает холодильник"
    assert mail.body == "Здравствуйте, сломался холодильник."
    assert mail.message_id == "abc-1@client.example"
    assert mail.attachments == ()
    assert mail.problems == ()


def test_html_only_mail_is_turned_into_text() -> None:
    m = EmailMessage()
    m["From"] = "a@b.example"
    m["Subject"] = "html"
    m.set_content(
        "<html><body><p>Хочу <b>купить</b> диван</p><ul><li>синий</li></ul></body></html>", subtype="html"
    )
    mail = parse(m.as_bytes())
    assert "Хочу купить диван" in mail.body
    assert "синий" in mail.body
    assert "<" not in mail.body


def test_plain_part_is_preferred_to_html_in_an_alternative() -> None:
    m = EmailMessage()
    m["From"] = "a@b.example"
    m.set_content("plain text")
    m.add_alternative("<p>html text</p>", subtype="html")
    assert parse(m.as_bytes()).body == "plain text"


@pytest.mark.parametrize("charset", ["koi8-r", "windows-1251", "utf-8"])
def test_cyrillic_in_legacy_charsets_is_decoded(charset: str) -> None:
    text = "Прошу счёт на оплату"
    part = MIMEText(text, "plain", charset)
    part["From"] = (
        "=?koi8-r?b?" + __import__("base64").b64encode("Олег".encode("koi8-r")).decode() + "?= <o@b.example>"
    )
    part["Subject"] = "=?windows-1251?q?=D1=F7=E5=F2?="
    mail = parse(part.as_bytes())
    assert mail.body == text
    assert mail.sender_name == "Олег"
    assert mail.subject == "Счет"


def test_invalid_utf8_bytes_are_replaced_and_reported() -> None:
    raw = (
        b"From: a@b.example\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nhello \xff\xfe world\r\n"
    )
    mail = parse(raw)
    assert mail.body.startswith("hello ")
    assert "world" in mail.body
    assert "\ufffd" in mail.body
    assert any("not utf-8" in p for p in mail.problems)


def test_attachments_are_listed_with_name_type_and_size() -> None:
    m = EmailMessage()
    m["From"] = "a@b.example"
    m.set_content("see attached")
    m.add_attachment(b"%PDF-1.4 12345", maintype="application", subtype="pdf", filename="счёт.pdf")
    m.add_attachment(b"\x89PNG....", maintype="image", subtype="png", filename="photo.png")
    mail = parse(m.as_bytes())
    assert mail.body == "see attached"
    assert [(a.filename, a.content_type, a.size) for a in mail.attachments] == [
        ("счёт.pdf", "application/pdf", 14),
        ("photo.png", "image/png", 8),
    ]


def test_thread_lists_in_reply_to_then_references_newest_first() -> None:
    raw = (
        b"From: a@b.example\r\nIn-Reply-To: <c@x>\r\nReferences: <a@x> <b@x>\r\n <c@x>\r\n"
        b"Subject: Re: x\r\n\r\nreply\r\n"
    )
    assert parse(raw).thread == ("c@x", "b@x", "a@x")


def test_mail_without_a_sender_address_is_rejected() -> None:
    m = EmailMessage()
    m["Subject"] = "no from"
    m.set_content("x")
    with pytest.raises(MailRejected) as caught:
        parse(m.as_bytes())
    assert caught.value.kind == "no_sender"
    m["From"] = "undisclosed-recipients:;"
    with pytest.raises(MailRejected):
        parse(m.as_bytes())


def test_mail_over_the_size_cap_is_rejected_naming_the_sizes() -> None:
    with pytest.raises(MailRejected) as caught:
        parse_mail(b"From: a@b.example\r\n\r\n" + b"x" * 2000, max_bytes=1024, max_body_chars=100)
    assert caught.value.kind == "too_large"
    assert "2021 bytes" in caught.value.reason


def test_multipart_without_its_boundary_is_malformed() -> None:
    raw = (
        b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="zzz"\r\n\r\n'
        b"--yyy\r\nContent-Type: text/plain\r\n\r\nhello\r\n--yyy--\r\n"
    )
    with pytest.raises(MailRejected) as caught:
        parse(raw)
    assert caught.value.kind == "malformed_mime"


def test_long_body_is_cut_and_reported() -> None:
    m = EmailMessage()
    m["From"] = "a@b.example"
    m.set_content("слово " * 2000)
    mail = parse_mail(m.as_bytes(), max_bytes=CAP, max_body_chars=100)
    assert len(mail.body) == 100
    assert any("cut" in p for p in mail.problems)


def test_message_ids_reads_bracketed_and_bare_ids() -> None:
    assert message_ids("<a@b> <c@d>") == ["a@b", "c@d"]
    assert message_ids("a@b") == ["a@b"]
    assert message_ids(None) == []
    assert message_ids("not an id") == []


def test_multipart_mixed_with_alternative_body_and_attachment() -> None:
    outer = MIMEMultipart("mixed")
    outer["From"] = "Anna <anna@b.example>"
    inner = MIMEMultipart("alternative")
    inner.attach(MIMEText("plain body", "plain", "utf-8"))
    inner.attach(MIMEText("<p>html body</p>", "html", "utf-8"))
    outer.attach(inner)
    att = MIMEText("a,b\n1,2\n", "csv", "utf-8")
    att.add_header("Content-Disposition", "attachment", filename="data.csv")
    outer.attach(att)
    mail = parse(outer.as_bytes())
    assert mail.body == "plain body"
    assert [a.filename for a in mail.attachments] == ["data.csv"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: a@b.example\r\n",
                b"From: =?utf-8?b?!!!?= <>\r\n",
                b'From: "unterminated <x@y\r\n',
                b"Subject: =?koi8-r?q?=FF=?=\r\n",
                b"Message-ID: <<>>\r\n",
                b"References: <a@b> <c\r\n",
                b"MIME-Version: 1.0\r\n",
                b'Content-Type: multipart/mixed; boundary="b"\r\n',
                b"Content-Type: text/html; charset=x-unknown\r\n",
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Transfer-Encoding: quoted-printable\r\n",
                b'Content-Disposition: attachment; filename="=?utf-8?q?=D0?="\r\n',
                b"\r\n",
                b"--b\r\n",
                b"--b--\r\n",
                b"<p>hi</p>\r\n",
                b"\xff\xfe\x00garbage\r\n",
                b"Subject: caf\xe9 \xff\r\n",
                b"From: \xd0\x98\xff <a@b.example>\r\n",
                b'Content-Disposition: attachment; filename="\xff.pdf"\r\n',
                b"aGVsbG8=\r\n",
            ]
        ),
        max_size=30,
    ),
    st.binary(max_size=200),
)
def test_any_bytes_give_a_mail_or_one_rejection_never_another_error(parts: list[bytes], tail: bytes) -> None:
    raw = b"".join(parts) + tail
    try:
        mail = parse_mail(raw, max_bytes=CAP, max_body_chars=5000)
    except MailRejected as exc:
        kind = exc.kind
    else:
        kind = "request"
        assert "@" in mail.sender_email
        # every text can be published (no lone surrogates from undeclared 8-bit bytes)
        texts = [mail.sender_email, mail.sender_name or "", mail.subject, mail.body, mail.message_id or ""]
        texts += [*mail.thread, *(a.filename for a in mail.attachments)]
        "".join(texts).encode("utf-8")
    assert kind in {"request", "too_large", "no_sender", "malformed_mime"}


def test_undeclared_8bit_header_bytes_are_read_as_utf8_and_reported() -> None:
    raw = b"From: \xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd <a@b.example>\r\nSubject: caf\xc3\xa9 \xff\r\n\r\nhi\r\n"
    mail = parse(raw)
    assert mail.sender_name == "Иван"
    assert mail.subject == "café \ufffd"
    assert any("Subject" in p for p in mail.problems)
