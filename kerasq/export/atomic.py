"""Write files and directories atomically: build next to the target, then rename over it."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kerasq.errors import ExportError, KerasqError

_NEW_FILE_MODE = 0o666  # what open() asks for; the process umask then removes bits, as for any new file


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty file with an unused name in ``folder``, with the permissions ``open()`` would give it.

    ``tempfile.mkstemp`` makes its files 0600 whatever the umask; the file renamed into place would keep that.
    """
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(folder))


def _temporary(target: Path, directory: bool) -> Path:
    """An unused sibling of ``target`` to write; an empty file, or (``directory``) a name no file has yet."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.stem}.kerasq-tmp-"
    if not directory:
        return _new_file(target.parent, prefix, target.suffix)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    tmp.rmdir()  # writers such as tf.saved_model.save create the directory themselves
    return tmp


def _swap(tmp: Path, target: Path) -> None:
    """Put ``tmp`` where ``target`` is, then delete the old ``target``; on failure the old one goes back."""
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.kerasq-old-", dir=target.parent))
    old = trash / target.name
    target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        old.rename(target)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _put_in_place(tmp: Path, target: Path) -> None:
    in_the_way = target.is_dir() and not target.is_symlink()
    if in_the_way or (tmp.is_dir() and (target.exists() or target.is_symlink())):
        _swap(tmp, target)  # os.replace cannot put a file over a directory, nor a directory over a file
    else:
        os.replace(tmp, target)


def _write_error(target: Path, err: OSError) -> ExportError:
    reason = err.strerror or str(err)
    return ExportError(
        f"cannot write {str(target)!r} ({reason}); choose a folder you can write to and with free space, or "
        "change the folder's permissions."
    )


@contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary output is removed and an existing ``path``
    is left untouched. Keeping the suffix lets writers that infer the format from it (``.keras``) work. Files
    get the permissions ``open()`` gives new files (0666 less the umask). What may be replaced is the caller's
    decision (``kerasq.export.keras_export.check_export_target``). An ``OSError`` (a folder that cannot be written,
    a full disk) becomes an ``ExportError`` naming ``path``, not the temporary.
    """
    target = Path(path)
    try:
        tmp = _temporary(target, directory)
    except OSError as err:
        raise _write_error(target, err) from err
    try:
        yield tmp
        _put_in_place(tmp, target)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, KerasqError):
            raise _write_error(target, err) from err
        raise
