"""Who may call a served pipeline: the access token check, free of Triton.

`dnsvr serve` (or the production container) sets DNSVR_ACCESS_TOKEN_SHA256, the hex SHA-256 of the token; a
caller sends the token itself in the `dnsvr-token` header, which Triton forwards to the python models as a
request parameter (`--grpc-header-forward-pattern`).  Writes (index, delete) need it whenever a token is set;
reads (search, stats) too, unless DNSVR_OPEN_SEARCH is "1".  Without DNSVR_ACCESS_TOKEN_SHA256 (a server on
127.0.0.1 for one user) nothing is checked.  Tokens are compared in constant time, as digests.

    policy = AccessPolicy.from_environment()
    policy.check(inputs.parameters, "write")        # Forbidden unless the request carries the token
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from dnsvr.client.errors import Forbidden
from dnsvr.client.protocol import TOKEN_HEADER
from dnsvr.training import paths

ACCESS = ("read", "write")


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token: what the server keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AccessPolicy:
    """token_sha256: None = no token required; open_search: reads need no token."""

    token_sha256: str | None = None
    open_search: bool = False

    @classmethod
    def from_environment(cls) -> AccessPolicy:
        return cls(paths.environment(paths.ACCESS_TOKEN_SHA256), paths.environment(paths.OPEN_SEARCH) == "1")

    def check(self, parameters: dict[str, object], access: str) -> None:
        """Raise Forbidden unless a request with these parameters may make an `access` ("read"/"write") call."""
        if access not in ACCESS:
            raise ValueError(f"access must be one of {ACCESS}, got {access!r}")
        if self.token_sha256 is None or (access == "read" and self.open_search):
            return
        given = parameters.get(TOKEN_HEADER)
        if not isinstance(given, str) or not hmac.compare_digest(token_digest(given), self.token_sha256):
            raise Forbidden(f"this {access} needs the server's access token (header '{TOKEN_HEADER}'): "
                            + ("none was sent" if given is None else "the one sent is wrong"))
