"""Writing outputs atomically: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import filecmp
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_json", "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    A run killed while writing leaves the previous file (or none), never a
    truncated output. When the new content equals the file's, the file is left
    as it was, modification time included, so that ``make`` chains through
    outputs (features → model → predictions) redo nothing after a re-run that
    changed nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        if not (path.is_file() and filecmp.cmp(tmp, path, shallow=False)):
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON (indented) atomically."""
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")
