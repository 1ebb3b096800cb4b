"""`reidlib reproduce` and `reidlib summary`: run the paper notebooks with papermill and gather results.

Each notebook runs in its own `papermill` process so that one failure or a timeout never stops the others.
Layout under OUT_DIR (default `runs/`):
    notebooks/<profile>/<name>.ipynb        the executed notebook (outputs included)
    notebooks/<profile>/<name>.log          papermill's stdout/stderr
    notebooks/<profile>/<name>.status.json  running/passed/failed/timeout/interrupted, duration, error
    results/<profile>/<paper>/metrics.json  the notebook's own sidecar of headline metrics
    summary.{csv,md}                        one row per notebook: status, duration, mAP, Rank-1, error
    summary_details.{csv,md}                one row per notebook and headline metric

Before a notebook starts, what its previous run left is removed (its results folder and the figures its
sidecar lists) and its status becomes `running`: a run that fails, times out or is stopped never shows an
earlier run's numbers, tables or figures as its own. Training runs stay cached, so a rerun brings them back.

Stopping: a timeout, or SIGINT / SIGTERM / SIGHUP to the batch, kills the notebook's whole process tree:
papermill, the kernel (which jupyter_client starts in a session of its own) and whatever the kernel started.
`kill -9` of the batch takes papermill with it (`reidlib.die_with_parent`) and the kernel follows its parent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from reidlib import die_with_parent
from reidlib.config import check_profile
from reidlib.paths import figures_dir, notebooks_dir, paper_name, project_root, results_dir
from reidlib.runs import atomic_write_json

STATUS_PASSED, STATUS_FAILED, STATUS_TIMEOUT = "passed", "failed", "timeout"
STATUS_INTERRUPTED, STATUS_RUNNING = "interrupted", "running"
# Signals that stop a batch: Ctrl-C, `kill`, and the terminal closing (papermill, in a session of its own,
# would not get any of them).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_POLL_S = 0.2   # how long a notebook's wait may take to notice a stop request
KILL_WAIT_S = 5.0   # how long to wait for killed processes to be gone (SIGKILL cannot be ignored)
GONE_POLL_S = 0.02  # how often to look whether they are
EXIT_SIGNAL_BASE = 128  # a shell's exit status for "ended by signal N" is 128 + N


class StopRequest:
    """Set by a stop signal (in the main thread); the threads running notebooks poll it and kill theirs."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, frame=None) -> None:  # a signal handler: no work here, only the flag
        self.signum = self.signum or signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name

    def exit_code(self) -> int:
        return EXIT_SIGNAL_BASE + (self.signum or signal.SIGINT)


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
    """Notebooks `NN_name.ipynb` in order; `selection` items match a number ("03"), a name ("qpm",
    "pab_reid"), the name's first word ("pab" for 01_pab_reid) or the whole stem."""
    folder = notebooks_dir(root)
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return found
    chosen = []
    for item in selection:
        key = item.removesuffix(".ipynb")
        hits = [p for p in found
                if key in (p.stem, p.stem[:2], paper_name(p.stem), paper_name(p.stem).split("_")[0])]
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


def run_notebook(nb: Path, profile: str, out_dir: Path, params: dict, timeout: float | None,
                 stop: StopRequest | None = None) -> NotebookResult:
    """Execute one notebook in a subprocess; a timeout or a stop request kills its whole process tree."""
    out_nb = out_dir / "notebooks" / profile / nb.name
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_nb.with_suffix(".log")
    _clear_previous_run(nb, profile, out_dir)
    _write_status(NotebookResult(notebook=nb.stem, profile=profile, status=STATUS_RUNNING, duration_s=0.0,
                                 output=str(out_nb)))
    start = time.monotonic()
    env = {**os.environ, "REIDLIB_BATCH": "1"}  # the engine prints line-based progress in batch runs
    # papermill in a session of its own: a Ctrl-C meant for the batch reaches it only through the batch.
    # Started from this thread, which waits for it: its death signal follows this thread (die_with_parent).
    cmd = die_with_parent.command(os.getpid(), _papermill_command(nb, out_nb, params))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        stop = stop or StopRequest()
        status = _wait_or_kill(proc, timeout, stop)
    error = _error_line(status, timeout, stop, log_path)
    result = NotebookResult(
        notebook=nb.stem, profile=profile, status=status, duration_s=round(time.monotonic() - start, 1),
        output=str(out_nb), error=error, metrics=_read_metrics(out_dir, profile, nb.stem),
    )
    _write_status(result)
    return result


def _write_status(result: NotebookResult) -> None:
    atomic_write_json(Path(result.output).with_suffix(".status.json"), asdict(result))


def _clear_previous_run(nb: Path, profile: str, out_dir: Path) -> None:
    """Remove the notebook's results folder (tables, metrics sidecar) and the figures its sidecar lists.
    Figures are shared by profiles (figures/<paper>/ outside ci), so only the listed ones go; the sidecar is
    data, so only files in the paper's figure folders go, wherever it points."""
    paper = paper_name(nb.stem)
    # the figure folders as the Workbook finds them (ci: under out_dir), from the notebook's own folder
    folders = {figures_dir(paper, root).resolve() for root in (out_dir, project_root(nb.parent))}
    for path in _listed_figures(_read_metrics(out_dir, profile, nb.stem)):
        if path.resolve().parent in folders and path.is_file():
            path.unlink()
    results = results_dir(out_dir, profile, paper)
    if results.is_dir():
        shutil.rmtree(results)


def _listed_figures(sidecar: dict) -> list[Path]:
    """The files of the sidecar's `figures` entry ({name: [paths]}); anything else in it is ignored."""
    listed = sidecar.get("figures") if isinstance(sidecar, dict) else None
    if not isinstance(listed, dict):
        return []
    lists = [paths for paths in listed.values() if isinstance(paths, list)]
    return [Path(p) for paths in lists for p in paths if isinstance(p, str)]


def _wait_or_kill(proc: subprocess.Popen, timeout: float | None, stop: StopRequest) -> str:
    """Wait for papermill to end; on a stop request or at the timeout kill its process tree. The status."""
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    while proc.poll() is None:
        if stop.event.wait(min(STOP_POLL_S, max(0.0, deadline - time.monotonic()))):
            _kill_process_tree(proc)
            return STATUS_INTERRUPTED
        if time.monotonic() >= deadline:
            _kill_process_tree(proc)
            return STATUS_TIMEOUT
    return STATUS_PASSED if proc.returncode == 0 else STATUS_FAILED


def _kill_process_tree(proc: subprocess.Popen) -> None:
    """SIGKILL papermill and every descendant, then wait until they are gone. Descendants are found by
    parentage, and whole process groups are killed, so that the kernel (jupyter_client puts it in a session
    of its own) dies and a child it forks at the last moment (in its group) dies with it."""
    tree = _process_tree(proc.pid)
    groups = {_process_group(p.pid) for p in tree} - {None, os.getpgrp()}  # never the batch's own group
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in tree:  # descendants that moved to a group of their own after the snapshot
        try:
            p.kill()  # psutil checks that the pid still names the same process
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _wait_until_gone(tree, KILL_WAIT_S)


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _wait_until_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Until every process has ended; a zombie counts as ended (it only waits for its parent to reap it,
    and an orphan's new parent, pid 1 in a container, may never do so)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(GONE_POLL_S)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _error_line(status: str, timeout: float | None, stop: StopRequest, log_path: Path) -> str:
    if status == STATUS_FAILED:
        return _last_error_line(log_path)
    if status == STATUS_TIMEOUT:
        return f"timed out after {timeout:.0f} s"
    if status == STATUS_INTERRUPTED:
        return f"the batch was stopped by {stop.name()}"
    return ""


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
    """Run the selected notebooks; write the summary tables and print the short one; exit code 0 only when
    every notebook passed."""
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
    stop = StopRequest()

    def one(nb: Path) -> NotebookResult | None:
        if stop.is_set():  # stopped before this notebook's turn: it does not start
            return None
        res = run_notebook(nb, profile, out_dir, params, timeout, stop)
        print(f"  {res.status:11s} {res.notebook:20s} {res.duration_s:8.1f} s  {res.error}", flush=True)
        return res

    with _stop_on_signals(stop), ThreadPoolExecutor(max_workers=jobs) as pool:
        results = [r for r in pool.map(one, notebooks) if r is not None]
    _publish_summary(out_dir, summary_table(out_dir, profile), details_table(out_dir, profile))
    if stop.is_set():
        skipped = len(notebooks) - len(results)
        print(f"reidlib reproduce: stopped by {stop.name()}; {skipped} notebook(s) not started", flush=True)
        return stop.exit_code()
    return 0 if all(r.status == STATUS_PASSED for r in results) else 1


@contextmanager
def _stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """While notebooks run, a stop signal only sets `stop` (the threads waiting for the notebooks kill them
    and record them as interrupted) instead of raising somewhere in the main thread, which would leave the
    notebooks running. Only the main thread may set signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _prepare_synthocc(size: str) -> None:
    """Generate the profile's SynthOcc set once, before the notebooks (and their timings) start: on a fresh
    machine it is data preparation shared by every notebook, like downloading a data set."""
    from reidlib.data import synthocc
    from reidlib.data.loader import SYNTHOCC_SEED

    start = time.perf_counter()
    root = synthocc.ensure(size=size, seed=SYNTHOCC_SEED)  # the set `load_from_config` reads
    print(f"SynthOcc {size}: {root} ({time.perf_counter() - start:.1f} s)", flush=True)


# The short summary's metric columns (headline key -> column), in percent with one decimal; a notebook
# without the key leaves the cell empty. Every headline key of every notebook goes to the details table.
PERCENT_COLUMNS = {"mAP": "mAP", "rank1": "Rank-1", "baseline_mAP": "baseline mAP"}
SHORT_COLUMNS = ["notebook", "profile", "status", "duration_s", *PERCENT_COLUMNS.values(), "error"]
DETAILS_COLUMNS = ["notebook", "profile", "key", "value"]
SUMMARY, DETAILS = "summary", "summary_details"  # runs/<name>.{csv,md}


def summary_table(out_dir: str | Path = "runs", profile: str | None = None) -> pd.DataFrame:
    """One row per executed notebook, rebuilt from OUT_DIR: the same columns for every notebook (status,
    duration, mAP / Rank-1 / baseline mAP in percent, error), however different their headlines are."""
    rows = [{"notebook": rec["notebook"], "profile": rec["profile"], "status": rec["status"],
             "duration_s": rec["duration_s"],
             **{column: _percent(headline.get(key)) for key, column in PERCENT_COLUMNS.items()},
             "error": rec.get("error", "")}
            for rec, headline in _notebook_records(Path(out_dir), profile)]
    return pd.DataFrame(rows, columns=SHORT_COLUMNS).astype(dict.fromkeys(PERCENT_COLUMNS.values(), float))


def details_table(out_dir: str | Path = "runs", profile: str | None = None) -> pd.DataFrame:
    """One row per (notebook, profile, headline key) with the value as the notebook registered it."""
    rows = [{"notebook": rec["notebook"], "profile": rec["profile"], "key": key, "value": value}
            for rec, headline in _notebook_records(Path(out_dir), profile) for key, value in headline.items()]
    return pd.DataFrame(rows, columns=DETAILS_COLUMNS)


def _notebook_records(out_dir: Path, profile: str | None) -> Iterator[tuple[dict, dict]]:
    """Each executed notebook's status record and headline metrics, in notebook order."""
    for path in sorted(out_dir.glob("notebooks/*/*.status.json")):
        rec = _read_status(path)
        if profile and rec["profile"] != profile:
            continue
        # the sidecar, not the status record: a notebook run by hand after the batch may have updated it
        yield rec, _headline(_read_metrics(out_dir, rec["profile"], rec["notebook"]))


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 1)


def _read_status(path: Path) -> dict:
    """A notebook's status record; a damaged one (a kill mid-write before writes were atomic, a hand edit)
    becomes a row saying so, so that one bad file does not hide the other notebooks' rows."""
    from reidlib.runs import DamagedFileError, read_json

    notebook, profile = path.name.removesuffix(".status.json"), path.parent.name
    try:
        rec = read_json(path, fix="run the notebook again")
        if not isinstance(rec, dict) or not {"notebook", "profile", "status", "duration_s"} <= set(rec):
            raise DamagedFileError(path, "not a notebook status record", "run the notebook again")
    except DamagedFileError as exc:
        return {"notebook": notebook, "profile": profile, "status": f"damaged: {path.name}",
                "duration_s": None, "error": str(exc)}
    return rec


def _headline(metrics: dict) -> dict:
    """The sidecar's `headline` entries (flat name -> number)."""
    return {k: v for k, v in (metrics.get("headline") or {}).items() if isinstance(v, int | float)}


def _publish_summary(out_dir: Path, table: pd.DataFrame, details: pd.DataFrame) -> None:
    """Write runs/summary.{csv,md} and runs/summary_details.{csv,md}; print the short table and a pointer
    to the details."""
    _write_table(table, out_dir / SUMMARY, floatfmt=".1f")
    _write_table(details, out_dir / DETAILS)
    print(_markdown(table, floatfmt=".1f"))
    print(f"({', '.join(PERCENT_COLUMNS.values())} in %; every headline metric: {out_dir / DETAILS}.md)")


def _write_table(table: pd.DataFrame, stem: Path, floatfmt: str = "g") -> None:
    from reidlib.runs import atomic_write_text

    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    atomic_write_text(stem.with_suffix(".md"), _markdown(table, floatfmt) + "\n")


def _markdown(table: pd.DataFrame, floatfmt: str = "g") -> str:
    """A Markdown table whose missing values are empty cells (tabulate writes NaN as `nan`)."""
    cells = table.astype(object).where(table.notna(), None)
    return cells.to_markdown(index=False, floatfmt=floatfmt, missingval="")


def print_summary(runs_dir: str | Path = "runs") -> int:
    """`reidlib summary`: the notebooks table (details written beside it) and every cached training run."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"no runs folder at {runs_dir.resolve()}; run `reidlib reproduce` first")
    table = summary_table(runs_dir)
    print("Notebooks:")
    if len(table):
        _publish_summary(runs_dir, table, details_table(runs_dir))
    else:
        print("(none executed yet)")
    from reidlib.runs import list_runs

    runs = list_runs(runs_dir)
    print("\nTraining runs:\n" + (runs.to_markdown(index=False) if len(runs) else "(none)"))
    return 0
