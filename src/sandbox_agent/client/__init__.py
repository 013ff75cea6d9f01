"""The Python SDK: ``Client`` (sync) and ``AsyncClient``, on httpx.

_protocol   what both share, with no I/O: requests, parsing, errors, following, waiting
_sync       Client
_async      AsyncClient
"""

from __future__ import annotations

from ._async import AsyncClient
from ._sync import Client

__all__ = ["AsyncClient", "Client"]
