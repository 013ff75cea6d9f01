"""What the suite hands every scenario."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._harness import Sizes
from ..peers import Availability


@dataclass
class Context:
    sizes: Sizes
    scratch: Path
    peers: Availability

    def peer_na(self, name: str) -> str | None:
        """Why peer ``name`` cannot run here ("n/a" cell), or None if it can."""
        reason: str | None = getattr(self.peers, name)
        return reason
