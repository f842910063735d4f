"""Reading the one credential header of a request, refusing a request that sends several.

With two `Authorization` headers, which one a server reads depends on its framework (the first,
the last, or both joined with a comma), and a proxy in front may read another: a request could
be authorized on one credential and attributed to the other. RFC 6750 3.1 makes "more than one
method" an invalid_request; Keyless refuses any repeat of a credential header before reading it,
at every route that checks one (management API, vault, token and revocation endpoints, the
managed identity endpoint).
"""

from __future__ import annotations

from starlette.datastructures import Headers

from keyless.base.errors import KeylessError


class RepeatedCredentialHeader(KeylessError, ValueError):
    """The request carries a credential header more than once; the message says which."""

    code = "RepeatedCredentialHeader"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"the request has more than one {name} header; send exactly one (a proxy or client "
            f"that adds its own {name} must replace the existing one, not add another)"
        )
        self.name = name


def single_header(headers: Headers, name: str) -> str | None:
    """The value of header `name`, None if absent; RepeatedCredentialHeader if repeated."""
    values = headers.getlist(name)  # case-insensitive, as header names are
    if len(values) > 1:
        raise RepeatedCredentialHeader(name)
    return values[0] if values else None
