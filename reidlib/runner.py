"""`reidlib reproduce` and `reidlib summary`: run the paper notebooks with papermill and gather results.

Each notebook runs in its own `papermill` process so that one failure or a timeout never stops the others.
Layout under OUT_DIR (default `runs/`):
    notebooks/<profile>/<name>.ipynb        the executed notebook (outputs included)
    notebooks/<profile>/<name>.log          papermill's stdout/stderr
    notebooks/<profile>/<name>.status.json  status (passed/failed/timeout), duration, error line
    results/<profile>/<paper>/metrics.json  the notebook's own sidecar of headline metrics
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from reidlib.config import check_profile
from reidlib.paths import notebooks_dir, paper_name, results_dir
from reidlib.runs import atomic_write_json

STATUS_PASSED, STATUS_FAILED, STATUS_TIMEOUT = "passed", "failed", "timeout"


@dataclass
class NotebookResult:
    notebook: str
    profile: str
    status: str
    duration_s: float
    output: str
    error: str = ""
    metrics: dict = field(default_factory=dict)


def discover(selection: list[str] | None = None, root: Path | None = None) -> list[Path]:
    """Notebooks `NN_name.ipynb` in order; `selection` items match a number ("03"), a name ("qpm") or both."""
    folder = notebooks_dir(root)
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return found
    chosen = []
    for item in selection:
        key = item.removesuffix(".ipynb")
        hits = [p for p in found if key in (p.stem, p.stem[:2], paper_name(p.stem))]
        if not hits:
            known = ", ".join(p.stem for p in found) or "(none)"
            raise ValueError(f"no notebook matches {item!r}; known: {known}")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def _papermill_command(nb: Path, out: Path, params: dict) -> list[str]:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(nb.parent),
           "--kernel", "python3", "--no-progress-bar", "--log-output"]
    for key, value in params.items():
        if value is not None:  # papermill's -p parses True/False/None/ints/floats itself
            cmd += ["-p", key, str(value)]
    return cmd


def run_notebook(nb: Path, profile: str, out_dir: Path, params: dict,
                 timeout: float | None) -> NotebookResult:
    """Execute one notebook in a subprocess; a timeout kills its whole process group (kernel included)."""
    out_nb = out_dir / "notebooks" / profile / nb.name
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_nb.with_suffix(".log")
    start = time.monotonic()
    status, error = STATUS_PASSED, ""
    env = {**os.environ, "REIDLIB_BATCH": "1"}  # the engine prints line-based progress in batch runs
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_papermill_command(nb, out_nb, params), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code, status, error = -1, STATUS_TIMEOUT, f"timed out after {timeout:.0f} s"
    if code != 0 and status == STATUS_PASSED:
        status, error = STATUS_FAILED, _last_error_line(log_path)
    result = NotebookResult(
        notebook=nb.stem, profile=profile, status=status, duration_s=round(time.monotonic() - start, 1),
        output=str(out_nb), error=error, metrics=_read_metrics(out_dir, profile, nb.stem),
    )
    atomic_write_json(out_nb.with_suffix(".status.json"), asdict(result))
    return result


def _last_error_line(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "papermill failed without output"


def _read_metrics(out_dir: Path, profile: str, notebook: str) -> dict:
    path = results_dir(out_dir, profile, paper_name(notebook)) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def reproduce(papers: list[str] | None = None, profile: str = "demo", dataset: str | None = None,
              data_root: str | None = None, jobs: int = 1, timeout: float | None = None,
              out_dir: str | Path = "runs", retrain: bool = False, root: Path | None = None) -> int:
    """Run the selected notebooks; print the summary table; exit code 0 only when every notebook passed."""
    check_profile(profile)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    notebooks = discover(papers, root)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks found in {notebooks_dir(root)}")
    out_dir = Path(out_dir).resolve()
    params = {"profile": profile, "dataset": dataset, "data_root": data_root, "out_dir": str(out_dir),
              "retrain": retrain or None}
    print(f"reidlib reproduce: {len(notebooks)} notebook(s), profile {profile}, {jobs} job(s) -> {out_dir}",
          flush=True)
    if dataset in (None, "synthocc") and profile != "paper":
        _prepare_synthocc(profile)

    def one(nb: Path) -> NotebookResult:
        res = run_notebook(nb, profile, out_dir, params, timeout)
        print(f"  {res.status:7s} {res.notebook:20s} {res.duration_s:8.1f} s  {res.error}", flush=True)
        return res

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, notebooks))
    table = summary_table(out_dir, profile)
    _write_summary(table, out_dir)
    print(table.to_markdown(index=False))
    return 0 if all(r.status == STATUS_PASSED for r in results) else 1


def _prepare_synthocc(size: str) -> None:
    """Generate the profile's SynthOcc set once, before the notebooks (and their timings) start: on a fresh
    machine it is data preparation shared by every notebook, like downloading a data set."""
    from reidlib.data import synthocc
    from reidlib.data.loader import SYNTHOCC_SEED

    start = time.perf_counter()
    root = synthocc.ensure(size=size, seed=SYNTHOCC_SEED)  # the set `load_from_config` reads
    print(f"SynthOcc {size}: {root} ({time.perf_counter() - start:.1f} s)", flush=True)


def summary_table(out_dir: str | Path = "runs", profile: str | None = None) -> pd.DataFrame:
    """One row per executed notebook (status, duration, headline metrics) rebuilt from OUT_DIR."""
    rows = []
    for path in sorted(Path(out_dir).glob("notebooks/*/*.status.json")):
        rec = json.loads(path.read_text())
        if profile and rec["profile"] != profile:
            continue
        metrics = _read_metrics(Path(out_dir), rec["profile"], rec["notebook"])  # re-read: may be newer
        rows.append({"notebook": rec["notebook"], "profile": rec["profile"], "status": rec["status"],
                     "duration_s": rec["duration_s"], **_headline(metrics), "error": rec.get("error", "")})
    return pd.DataFrame(rows)


def _headline(metrics: dict) -> dict:
    """The sidecar's `headline` entries (flat name -> number) become summary columns."""
    return {k: v for k, v in (metrics.get("headline") or {}).items() if isinstance(v, int | float)}


def _write_summary(table: pd.DataFrame, out_dir: Path) -> None:
    from reidlib.runs import atomic_write_text

    atomic_write_text(out_dir / "summary.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", table.to_markdown(index=False) + "\n")


def print_summary(runs_dir: str | Path = "runs") -> int:
    """`reidlib summary`: the notebooks table and every cached training run."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"no runs folder at {runs_dir.resolve()}; run `reidlib reproduce` first")
    table = summary_table(runs_dir)
    print("Notebooks:\n" + (table.to_markdown(index=False) if len(table) else "(none executed yet)"))
    from reidlib.runs import list_runs

    runs = list_runs(runs_dir)
    print("\nTraining runs:\n" + (runs.to_markdown(index=False) if len(runs) else "(none)"))
    if len(table):
        _write_summary(table, runs_dir)
    return 0
