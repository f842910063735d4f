"""Key Vault list paging: `maxresults` and a `nextLink` with an opaque `$skiptoken`.

As in Key Vault, a page holds at most `maxresults` items (1-25, 25 when not given), and
`nextLink` is the URL of the next page, which the SDK's pagers follow as is. Lists are read by
key (the secret name, or a version's creation time and id) rather than by offset, so a secret
set or deleted between two pages neither repeats an item nor hides one that was there all along.

The skiptoken holds the key of the previous page's last item, sealed by the master key
(AES-256-GCM) with the listing it belongs to (vault, collection, secret) as associated data:
clients cannot read or forge it, and a token that was altered, truncated or taken from another
listing is refused rather than silently listing from the wrong place.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from keyless.authority.masterkey import MasterKey, MasterKeyError
from keyless.base.errors import KeylessError

MAX_RESULTS = 25  # Key Vault's largest page, and its default
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,2048}$")
_SIZE = re.compile(r"^[0-9]{1,3}$")
SortKey = Sequence[str | float]


class PagingError(KeylessError, ValueError):
    """A `maxresults` or `$skiptoken` that cannot be used; the message says why."""


@dataclass(frozen=True)
class Page:
    """Which page was asked for: its size, and the key it starts after (None: the first)."""

    size: int
    after: list[str | float] | None


def _purpose(listing: str) -> str:
    return f"vault-skiptoken:{listing}"


def page_of(query: Mapping[str, str], master: MasterKey, listing: str) -> Page:
    """The page a request's `maxresults` and `$skiptoken` name, for `listing` (such as
    `shop-vault/secrets`)."""
    raw_size = query.get("maxresults")
    size = MAX_RESULTS
    if raw_size is not None:
        if not _SIZE.match(raw_size) or not 1 <= int(raw_size) <= MAX_RESULTS:
            raise PagingError(
                f"maxresults must be a whole number from 1 to {MAX_RESULTS} (the most items a "
                f"page holds); leave it out for {MAX_RESULTS}"
            )
        size = int(raw_size)
    token = query.get("$skiptoken")
    if token is None:
        return Page(size, None)
    refused = PagingError(
        "the $skiptoken is not valid for this list (altered, truncated or from another list); "
        "follow the nextLink of the previous page as it is, or start again without it"
    )
    if not _TOKEN.match(token):
        raise refused
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        after = json.loads(master.open(sealed, _purpose(listing)))
    except (binascii.Error, ValueError, MasterKeyError):
        raise refused from None
    if not isinstance(after, list) or not all(isinstance(k, str | float | int) for k in after):
        raise refused
    return Page(size, after)


def next_link(
    url: str, query: Mapping[str, str], master: MasterKey, listing: str, page: Page, last: SortKey
) -> str:
    """The URL of the page after the one that ended with the sort key `last`."""
    sealed = master.seal(json.dumps(list(last)).encode(), _purpose(listing))
    token = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    params = {"api-version": query.get("api-version", ""), "$skiptoken": token}
    params["maxresults"] = str(page.size)
    return f"{url}?{urlencode(params, safe='$')}"
