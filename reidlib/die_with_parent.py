"""`python die_with_parent.py PARENT_PID COMMAND [ARG ...]`: run COMMAND so that it is killed when
the process PARENT_PID dies, even by `kill -9`, which no handler of the parent can see.

The batch runner starts papermill through it, so that killing `reidlib reproduce` outright does not leave a
notebook training on as an orphan (the kernel then follows papermill: ipykernel exits when its parent goes).
Linux only: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG, kept across the exec).
The signal follows the *thread* that started the child, so the parent must start it from a thread that lives
as long as the child runs. Elsewhere COMMAND runs without the guard.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1      # <linux/prctl.h>
EXIT_PARENT_GONE = 125    # the parent died before the guard was set: nobody waits for COMMAND any more


def guard_against_parent_death(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit if it has died already."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != parent_pid:  # reparented between fork and prctl: the signal will never come
        os._exit(EXIT_PARENT_GONE)


def command(parent_pid: int, argv: list[str]) -> list[str]:
    """`argv` wrapped so that it dies with `parent_pid`. The guard runs as a script in isolated mode (-I): it
    needs only the standard library, not reidlib on the path, and the script's folder is not put on it."""
    return [sys.executable, "-I", str(Path(__file__).resolve()), str(parent_pid), *argv]


def main(args: list[str]) -> None:
    if len(args) < 2:
        raise SystemExit("usage: python die_with_parent.py PARENT_PID COMMAND [ARG ...]")
    guard_against_parent_death(int(args[0]))
    os.execvp(args[1], args[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
