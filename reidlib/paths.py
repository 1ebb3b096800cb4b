"""Where things live: the project root, notebooks, results and figures (one place for path conventions)."""

from __future__ import annotations

import re
from pathlib import Path

from reidlib.runs import plain_name, safe_path


def project_root(start: Path | None = None) -> Path:
    """The checkout holding `notebooks/` and `pyproject.toml`, found upwards from `start` (default: cwd);
    falls back to the package's parent (an editable install) and then to the current directory."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "reidlib").is_dir():
            return folder
    pkg_parent = Path(__file__).resolve().parent.parent
    if (pkg_parent / "notebooks").is_dir():
        return pkg_parent
    return here


def notebooks_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "notebooks"


def paper_name(notebook: str) -> str:
    """`03_qpm` -> `qpm`: the name used for figures/<paper>/ and results/<profile>/<paper>/."""
    return re.sub(r"^\d+_", "", Path(notebook).stem)


def results_dir(out_dir: str | Path, profile: str, paper: str) -> Path:
    """<out_dir>/results/<profile>/<paper>; a profile or paper that is not a plain name is refused."""
    return safe_path(out_dir, "results", plain_name(profile, "profile"), plain_name(paper, "paper"))


def figures_dir(paper: str, root: Path | None = None) -> Path:
    """<root>/figures/<paper>; a paper that is not a plain name is refused."""
    return safe_path(root or project_root(), "figures", plain_name(paper, "paper"))
