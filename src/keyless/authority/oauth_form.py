"""Parsing the form bodies of the OAuth endpoints (RFC 6749 3.2), strictly.

Each refusal names the one thing that is wrong (docs/errors.md, code 90014), so a client
author can fix it: the byte that is not UTF-8, the '%' without two hex digits, the field
without '=', the empty field, too many fields, a field over 16 KiB (known to Keyless or not),
a repeated field. A field is named only when it is one of the OAuth fields Keyless knows;
anything else is "field N", so a value sent in the wrong place is never echoed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from keyless.authority.errors import invalid_request

# The token, device code and revocation endpoints refuse larger bodies before parsing them.
MAX_FORM_BODY = 64 * 1024
MAX_FIELDS = 32
MAX_FIELD_CHARS = 16 * 1024
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Names that may be echoed in an error: the fields of the grants and endpoints Keyless serves.
_KNOWN = frozenset(
    {
        "grant_type",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "scope",
        "claims",
        "device_code",
        "refresh_token",
        "token",
        "token_type_hint",
        "assertion",
        "requested_token_use",
        "client_info",
        "resource",
    }
)


def _label(name: str | None, index: int) -> str:
    return f"the form field {name}" if name in _KNOWN else f"form field {index}"


def _decode(raw: bytes, where: str) -> str:
    """One percent-encoded name or value, '+' as space, refused with the reason."""
    if _BAD_ESCAPE.search(raw):  # unquote would keep "%zz" as it is
        raise invalid_request(
            f"the form body is not valid URL encoding: {where} has a '%' not followed by two "
            "hex digits; write a literal '%' as %25"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request(
            f"the form body has bytes that are not UTF-8 in {where}; send text as UTF-8, "
            "percent-encoded"
        ) from None
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request(
            f"the form body percent-encodes bytes that are not UTF-8 in {where} (such as %ff); "
            "encode text as UTF-8 before percent-encoding it"
        ) from None


def _check_content_type(content_type: str) -> None:
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise invalid_request(
            "the token request must be form-encoded "
            "(Content-Type: application/x-www-form-urlencoded)"
        )


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """An OAuth form body: UTF-8, valid escapes, name=value pairs, each field once and at
    most 16 KiB."""
    _check_content_type(content_type)
    if not body:
        return {}
    segments = body.split(b"&")
    if len(segments) > MAX_FIELDS:
        raise invalid_request(
            f"the form body has {len(segments)} fields; a request has at most {MAX_FIELDS}"
        )
    form: dict[str, str] = {}
    for index, segment in enumerate(segments, 1):
        form_field(form, segment, index)
    return form


def form_field(form: dict[str, str], segment: bytes, index: int) -> None:
    """Add one `name=value` segment of the body to `form`, or refuse it (OAuthError)."""
    if not segment:
        raise invalid_request(
            f"the form body has an empty field (form field {index}: '&&', or '&' at the start "
            "or end); separate name=value pairs with a single '&'"
        )
    raw_name, equals, raw_value = segment.partition(b"=")
    name = _decode(raw_name, f"the name of form field {index}")
    label = _label(name, index)
    if not equals:
        raise invalid_request(
            f"the form body is not name=value pairs: {label} has no '='; send name=value "
            "(name= for an empty value)"
        )
    if not name:
        raise invalid_request(f"the form body has a field with no name before '=' ({label})")
    if len(name) > MAX_FIELD_CHARS:
        raise invalid_request(f"the form body has a field name longer than 16 KiB ({label})")
    value = _decode(raw_value, f"the value of {label}")
    if len(value) > MAX_FIELD_CHARS:
        # Refused whether Keyless reads the field or not: the documented limit holds for all.
        raise invalid_request(f"{label} is longer than 16 KiB; no field of a request may be")
    if name in form:
        raise invalid_request(f"{label} appears more than once in the form body")
    form[name] = value
