"""Where a command writes: checked before any work starts, written whole or not at all.

Every command that writes a folder goes through :func:`output_dir` (checked up front by
:func:`check_output_dir`), every one that writes a file through :func:`check_output_file` and
:func:`offramp.common.atomic.atomic_path`. A folder is built in a hidden temporary sibling and
renamed into place when complete, so a killed run leaves the previous complete output (or
nothing), never a partial folder; the next run cleans up what a killed one left.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError

TMP_TAG, OLD_TAG = ".tmp-", ".old-"


def _nearest_existing(path: Path, what: str) -> Path:
    """The closest ancestor of ``path`` that exists; an error if it (or one above) is a file."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, None, f"the {what} would sit under {parent}, which is a file",
                                 "choose a path whose parent folders are folders")
            return parent
    return Path(".")


def _check_writable(folder: Path, path: Path, what: str) -> None:
    """Try to create (and remove) a temporary file in ``folder``: permission bits are not the
    whole story (root, read-only mounts, /proc)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".offramp-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(path, None, f"cannot write the {what} here: {folder} is not writable "
                         f"({exc.strerror or exc})", "choose a folder you can write to") from None


def check_output_file(path: str | Path, what: str = "output file", suffix: str | None = None
                      ) -> Path:
    """Check that ``path`` can be written as a file: not a folder, not under a file, in a
    writable place, and (``suffix``) named for what it holds. Call it before the work
    starts; nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, None, f"the {what} is an existing folder",
                         "give a file name (e.g. inside that folder)")
    if suffix is not None and path.suffix.lower() != suffix:
        raise InputError(path, None, f"the {what} is written as {suffix[1:].upper()}; its name "
                         f"ends in {path.suffix or 'no suffix'}",
                         f"name it with {suffix}, e.g. {path.stem or 'out'}{suffix}")
    if path.exists():
        _check_writable(path.parent, path, what)
        return path
    _check_writable(_nearest_existing(path, what), path, what)
    return path


def _matches(name: str, outputs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in outputs)


def check_output_dir(path: str | Path, outputs: Iterable[str], what: str = "output folder") -> Path:
    """Check that ``path`` can take this command's output folder before the work starts.

    ``outputs``: the names (glob patterns) this command writes there. The folder may be new or
    hold a previous output of the same command (it is replaced whole at the end); it must not
    be a file, sit under a file, be unwritable, or hold files this command does not write.
    """
    path = Path(path)
    outputs = list(outputs)
    if path.exists() and not path.is_dir():
        raise InputError(path, None, f"the {what} exists and is a file", "choose a folder path")
    _recover(path)
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if not _matches(p.name, outputs))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                              else "")
            raise InputError(path, None, f"the {what} holds files this command did not write "
                             f"({shown})", "choose a new or empty folder, or remove them")
        _check_writable(path.parent if path.parent.exists() else Path("."), path, what)
        return path
    _check_writable(_nearest_existing(path, what), path, what)
    return path


def _siblings(path: Path, tag: str) -> list[Path]:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    return sorted(parent.glob(f".{path.name}{tag}*"))


def _recover(path: Path) -> None:
    """Undo what a killed run left beside ``path``: a previous output moved aside but not yet
    replaced goes back; half-built temporary folders go."""
    for old in _siblings(path, OLD_TAG):
        if not path.exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in _siblings(path, TMP_TAG):
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_dir(path: str | Path, outputs: Iterable[str], what: str = "output folder",
               keep: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block ends without an error, it
    replaces ``path`` whole. It starts empty (a previous output goes), or with ``keep`` as a
    copy of what ``path`` holds (files of other runs stay; those written again are replaced).
    On an error or a kill, ``path`` keeps what it held before."""
    outputs = list(outputs)
    path = check_output_dir(path, outputs, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent))
    except OSError as exc:
        raise InputError(path, None, f"cannot create the {what} ({exc.strerror or exc})",
                         "choose a folder you can write to") from None
    try:
        if keep and path.is_dir():
            for item in path.iterdir():
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}{OLD_TAG}{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
