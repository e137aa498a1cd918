"""Page tokens for ``ListCameras`` (AIP-158): opaque to callers, signed by the core.

A token carries where the next page starts (the last camera id served) and a fingerprint of the
query it belongs to, then an HMAC-SHA256 over both under a key of this core. An altered token, one
from another core (or from before a restart, the key being per process unless one is passed), or
one replayed with a different filter is refused with a message that says which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from cloud_core.exceptions import InvalidRequest

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
_MAC_BYTES = 16


def page_size(requested: int) -> int:
    """AIP-158: 0 is the default; negative or above the maximum is an error naming the maximum."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < requested <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"page_size must be between 1 and {MAX_PAGE_SIZE} (0: the default, "
            f"{DEFAULT_PAGE_SIZE}), got {requested}")
    return requested


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, after: str, query: str) -> str:
        """A token for the page after camera id ``after`` of the query ``query`` (a fingerprint)."""
        body = json.dumps({"after": after, "query": query}, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def read(self, token: str, query: str) -> str:
        """The camera id the page starts after; InvalidRequest when the token is not ours."""
        body_text, _, mac_text = token.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("page_token is malformed: pass next_page_token unchanged") from exc
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidRequest("page_token was not issued by this core or was altered: start "
                                 "again with an empty page_token")
        fields = json.loads(body)
        if fields.get("query") != query:
            raise InvalidRequest("page_token belongs to another query: district_id and status "
                                 "must stay the same from page to page")
        return str(fields["after"])
