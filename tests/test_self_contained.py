"""The repository stands on its own: no tracked file points to a folder beside it or on a development machine.

Papers are cited by their bibliographic reference and the design lives in docs/design.md; a path such as
the shared papers folder or an absolute /work path exists only where the project was developed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built by concatenation so that this file does not contain the patterns it looks for.
FORBIDDEN = ("../" + "shared" + "/", "shared" + "/papers", "/" + "work" + "/")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in out.split("\0") if name and not name.startswith(".git/")]


def test_no_tracked_file_points_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the work tree but still in the index
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (images, archives): not text to search
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for pattern in FORBIDDEN:
                if pattern in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {pattern!r}: {line.strip()[:120]}")
    assert not offenders, "references outside the repository:\n" + "\n".join(offenders)
