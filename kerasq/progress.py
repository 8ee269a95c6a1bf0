"""Progress bars for long stages; on by default, off via ``set_progress(False)`` or ``KERASQ_PROGRESS=0``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_enabled: bool | None = None


def set_progress(enabled: bool) -> None:
    """Show (True) or hide (False) kerasq's progress bars for this process."""
    global _enabled
    _enabled = bool(enabled)


def progress_enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("KERASQ_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "batch") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar when progress is enabled."""
    if not progress_enabled():
        yield from iterable
        return
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
