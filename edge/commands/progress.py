"""Progress lines for long steps: on stderr, timestamped by elapsed seconds, silent with --quiet."""
from __future__ import annotations

import sys
import time
from typing import Callable


def reporter(quiet: bool) -> Callable[[str], None]:
    start = time.monotonic()

    def report(message: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return report
