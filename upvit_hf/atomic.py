"""Outputs are written to a temporary sibling and swapped in when complete: an interrupted run never leaves half
a file, and nothing that already exists is replaced unless the caller asked for it (`overwrite=True`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def has_content(path: str | os.PathLike) -> bool:
    """Whether `path` holds something a user could lose: a file, a link, or a folder that is not empty."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return True
    return path.is_dir() and any(path.iterdir())


def check_output(path: str | os.PathLike, *, overwrite: bool, flag: str = "overwrite=True") -> Path:
    """The output path with `~` expanded; ValueError when it exists and is not empty and `overwrite` is off.

    `flag` names the switch in the message (the CLI says `--overwrite`).
    """
    target = Path(path).expanduser()
    if not overwrite and has_content(target):
        raise ValueError(f"{target} already exists and is not empty; pass {flag} to replace it")
    return target


def _give_default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create owner-only entries; outputs get what a plain open()/mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _swap_in(new: Path, target: Path) -> None:
    """Put the complete `new` at `target`. An existing file is replaced atomically; anything else is moved
    aside, `new` renamed in, and only then the old entry deleted (put back if the rename fails)."""
    if not os.path.lexists(target):
        new.rename(target)
        return
    if new.is_file() and target.is_file() and not target.is_symlink():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)) / "old"
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        old.parent.rmdir()
        raise
    shutil.rmtree(old.parent)


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (a folder when `directory`); when the block ends without error it
    takes `path`'s place, on error it is removed and `path` is left as it was.

    An existing `path` that is not empty is refused up front (ValueError) unless `overwrite`; with
    `overwrite` its old content is deleted only after the new content is complete and in place.
    """
    target = check_output(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _give_default_permissions(tmp)
        check_output(target, overwrite=overwrite)  # something may have appeared there meanwhile
        _swap_in(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            _remove(tmp)
        raise


def write_json(path: str | os.PathLike, payload: object, *, overwrite: bool = False) -> None:
    """`payload` as indented JSON, written atomically under the same overwrite rule as every output."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
