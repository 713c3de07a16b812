"""The user's cache folder: what one run computes that the next can read back instead (draws, compiled templates).

``$TEMPLATECHECK_CACHE_DIR`` (``off``: nothing is kept), else ``templatecheck`` under the user's cache directory
(``$XDG_CACHE_HOME`` or ``~/.cache``). Entries are written atomically and read defensively: a damaged or
foreign entry is computed again and replaced, and a cache that cannot be written is no cache. A folder that
holds code (compiled templates) is used only when it is this user's own and no one else can write to it, as
Python treats ``__pycache__``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from functools import cache
from pathlib import Path

#: Entries one folder keeps; past this, the oldest quarter is removed (once per process, at its first write).
MAX_ENTRIES = 4096


def folder(name: str) -> Path | None:
    """The cache folder ``name`` (not created here), or ``None`` when caching is switched off."""
    given = os.environ.get("TEMPLATECHECK_CACHE_DIR")
    if given == "off":
        return None
    if given:
        return Path(given).expanduser() / name
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(home) / "templatecheck" / name


def private(path: Path) -> bool:
    """Whether ``path`` (a folder or a file) belongs to this user and no one else can write to it."""
    if not hasattr(os, "getuid"):
        return True
    try:
        found = path.lstat()
    except OSError:
        return False
    writable_by_others = found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return found.st_uid == os.getuid() and not writable_by_others and not stat.S_ISLNK(found.st_mode)


def write(path: Path, data: bytes, *, private_folder: bool = False) -> None:
    """Keep ``data`` at ``path`` atomically (the folder made first; with ``private_folder``, made for this user
    only, and nothing written where it is not :func:`private`)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if private_folder else 0o777)
        if private_folder and not private(path.parent):
            return
        _prune(path.parent)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as out:
            out.write(data)
        os.replace(out.name, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(out.name)


def read(path: Path, *, limit: int, private_file: bool = False) -> bytes | None:
    """The bytes kept at ``path``; ``None`` when there are none, they exceed ``limit``, or (``private_file``)
    the file or its folder is not :func:`private`."""
    if private_file and not (private(path.parent) and private(path)):
        return None
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        return path.read_bytes()
    except OSError:
        return None


@cache
def _prune(directory: Path) -> None:
    """Remove the oldest quarter of ``directory``'s entries when it holds more than :data:`MAX_ENTRIES`."""
    try:
        entries = [(e.stat().st_mtime, e.path) for e in os.scandir(directory) if e.is_file()]
    except OSError:
        return
    if len(entries) <= MAX_ENTRIES:
        return
    for _, path in sorted(entries)[: len(entries) // 4]:
        with contextlib.suppress(OSError):
            os.unlink(path)
