"""Files written whole: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write, renamed to ``path`` when the block succeeds
    and removed when it fails (Ctrl-C included). Hidden, and with ``path``'s suffix, so writers that choose
    the format by the suffix (matplotlib) still can; created by the writer, so with the usual permissions."""
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
