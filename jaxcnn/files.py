"""Files written whole: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def read_format_json(
    path: Path, file_format: str, error: type[Exception], missing: str, damaged: str
) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``"format"`` field is ``file_format``, or ``error`` with one line:
    ``missing`` when there is no such file, ``damaged`` (what to do) when it is unreadable or of another format."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable ({err}); {damaged}") from None
    if not isinstance(content, dict) or content.get("format") != file_format:
        raise error(f"{path}: not a {file_format} file; {damaged}")
    return content
