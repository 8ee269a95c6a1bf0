"""Run a call that may crash native code (a runtime reading a file) in a forked child process first.

LiteRT and TensorFlow Lite Micro trust what a .tflite file says; some files crash them (segfault, abort). The
child runs the call; if it dies on a signal, the caller gets the signal's name instead of losing its process.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
import warnings
from typing import Any

_IN_CHILD_OK: set[Any] = set()  # keys of calls that already ran to completion in a child process
_CHILD_TIMEOUT = 600.0
FORK = hasattr(os, "fork") and sys.platform.startswith("linux")  # macOS: fork is unsafe once frameworks load


def run_in_child(key: Any, call: Any) -> str | None:
    """Run ``call`` in a forked child so that a crash in C++ code cannot take this process down.

    Returns the signal's name if the child crashed, else None. If ``call`` raised in the child it is called
    again here, where it raises the same error (it failed cleanly, so it is safe to repeat); if it returned,
    it is not repeated. Calls with a ``key`` that already completed, and every call off Linux (TFLM's wheels
    are Linux-only; macOS's fork is unsafe in a process with threads), run here directly.
    """
    if not FORK or key in _IN_CHILD_OK:
        call()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns on fork with threads
        pid = os.fork()
    if pid == 0:  # the child: the call, then leave without running any Python cleanup
        code = 0
        try:
            faulthandler.disable()  # a crash here is the expected outcome, not one to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            call()
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + _CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"no result in {_CHILD_TIMEOUT:.0f} s"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    if os.WEXITSTATUS(status) == 0:
        _IN_CHILD_OK.add(key)
    else:
        call()  # raises the child's error here
    return None
