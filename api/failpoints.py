"""Crash points for recovery tests: HEXABASE_FAILPOINTS=name[,name] makes the process die
(exit 137, like SIGKILL) when it reaches that point. Unset in normal operation."""

from __future__ import annotations

import os


def failpoint(name: str) -> None:
    if name in os.environ.get("HEXABASE_FAILPOINTS", "").split(","):
        os._exit(137)
