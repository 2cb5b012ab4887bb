"""The plain text tables `oomsweep calibrate` prints: columns padded to their widest cell, two spaces
apart, no colour and no box drawing, so a table reads the same in a terminal, piped, or in a mail."""

from __future__ import annotations

from collections.abc import Sequence


def plain_table(rows: Sequence[Sequence[str]]) -> str:
    """`rows[0]` is the header; every row has as many cells as it."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
