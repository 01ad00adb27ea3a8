"""Files written so that nothing is lost: atomic replacement, and output paths checked first."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], Any],
                 check: Callable[[Path], Any] | None = None) -> None:
    """Write ``path`` through a temp file: ``write(fh)``, flush + fsync, ``check(temp path)``,
    rename, fsync the folder. On any failure the previous file is untouched and the temp file
    removed (one left by a killed process goes with the next ``prune_checkpoints``). The temp
    name ``.NAME.tmp-TOKEN-PID`` is unique per call, so writers of one path never share it."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself made durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def output_problem(path: Path, folder: bool = False) -> str:
    """Why no file (or ``folder``) can be made at ``path``, or ``""``; missing folders are made."""
    up = next(p for p in path.parents if p.exists())
    if path.exists() and path.is_dir() != folder:
        return "it is a file; expected a folder" if folder else "it is a folder; give a file name"
    if not up.is_dir():
        return f"{up} is a file, not a folder"
    return "" if os.access(up, os.W_OK | os.X_OK) else f"folder {up} is not writable"
