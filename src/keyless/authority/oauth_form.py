"""Parsing the form bodies of the OAuth endpoints (RFC 6749 3.2), strictly."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from keyless.authority.errors import invalid_request

# The token, device code and revocation endpoints refuse larger bodies before parsing them.
MAX_FORM_BODY = 64 * 1024
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """An OAuth form body: UTF-8, valid escapes, each field once."""
    if content_type.split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise invalid_request(
            "the token request must be form-encoded "
            "(Content-Type: application/x-www-form-urlencoded)"
        )
    try:
        if _BAD_ESCAPE.search(body):  # parse_qsl would keep "%zz" as is
            raise ValueError("invalid percent-encoding")
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=32,
            errors="strict",  # "%ff" is not UTF-8: refuse it, do not replace it
        )
    except (ValueError, UnicodeDecodeError):
        raise invalid_request("the form body is not valid URL-encoded UTF-8") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise invalid_request(f"the form field {key[:40]!r} appears more than once")
        form[key] = value
    return form
