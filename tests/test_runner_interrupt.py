"""Stopping a batch: Ctrl-C, SIGTERM and `kill -9` of `reidlib reproduce`, and a notebook timeout, leave no
process of it behind (papermill, the Jupyter kernel jupyter_client starts in a session of its own, and what
the kernel starts), and Ctrl-C / SIGTERM still record the notebook as interrupted and write the summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

from reidlib import die_with_parent, runner

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MARKER = "REIDLIB_TEST_BATCH"   # every process of a test batch inherits it: finds them wherever they went
KERNEL_START_S = 90             # reidlib start, SynthOcc ci check, papermill and kernel start-up
KERNEL_RUNNING_S = 3            # let the kernel get into the notebook before the signal
STOP_WITHIN_S = 10              # what "stops within seconds" means here
ORPHANS_GONE_S = 5              # after kill -9: ipykernel's parent poller checks once a second
STALE_MAP = 0.987               # an earlier run's headline, which must not survive a rerun that stops
NOTEBOOK_TIMEOUT_S = 15         # the timeout test: kernel start-up on a busy machine fits well inside it
GUARDED_EXIT_S = 2              # a guarded child of a killed parent: the kernel kills it at once


def _processes_of(tag: str) -> list[psutil.Process]:
    """Live processes that inherited the batch's marker (a zombie is dead: it only awaits its reaping)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _kill_all(tag: str) -> None:
    """Test clean-up, so that a failing test leaves no training behind either."""
    for proc in _processes_of(tag):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid}: {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return out


def _wait_for_kernel(batch: subprocess.Popen, tag: str) -> None:
    deadline = time.monotonic() + KERNEL_START_S
    while time.monotonic() < deadline:
        if batch.poll() is not None:
            pytest.fail(f"the batch ended before its kernel started:\n{batch.stdout.read()}")
        if any("ipykernel_launcher" in " ".join(p.cmdline()) for p in _processes_of(tag)):
            return
        time.sleep(0.5)
    pytest.fail(f"no kernel started within {KERNEL_START_S} s")


def _seed_earlier_pass(out: Path) -> None:
    """An out dir holding an earlier passing run of notebook 00 (status and headline sidecar)."""
    sidecar = out / "results" / "ci" / "baselines" / "metrics.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"headline": {"mAP": STALE_MAP}}))
    status = out / "notebooks" / "ci" / "00_baselines.status.json"
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"notebook": "00_baselines", "profile": "ci", "status": "passed",
                                  "duration_s": 1.0, "output": "", "error": "",
                                  "metrics": {"headline": {"mAP": STALE_MAP}}}))


def _start_batch(out: Path, tag: str) -> subprocess.Popen:
    """`reidlib reproduce --papers 00 --profile ci` as a user starts it: in a terminal's foreground group."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's reidlib
    env = {**os.environ, "PYTHONPATH": path, MARKER: tag}
    cmd = [sys.executable, "-m", "reidlib.cli", "reproduce", "--papers", "00", "--profile", "ci",
           "--out-dir", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _send(batch: subprocess.Popen, signum: int) -> None:
    if signum == signal.SIGINT:
        os.killpg(batch.pid, signum)  # Ctrl-C goes to the terminal's whole foreground process group
    else:
        batch.send_signal(signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_batch_kills_everything_and_writes_the_summary(signum, tmp_path):
    out, tag = tmp_path / "runs", uuid.uuid4().hex
    _seed_earlier_pass(out)
    batch = _start_batch(out, tag)
    try:
        _wait_for_kernel(batch, tag)
        time.sleep(KERNEL_RUNNING_S)
        _send(batch, signum)
        try:
            batch.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the batch did not stop within {STOP_WITHIN_S} s of {signal.Signals(signum).name}")
        output = batch.stdout.read()
        assert batch.returncode != 0, output
        assert not _processes_of(tag), f"left running: {_describe(_processes_of(tag))}\n{output}"
        status = json.loads((out / "notebooks" / "ci" / "00_baselines.status.json").read_text())
        assert status["status"] == "interrupted", output
        assert (status["metrics"].get("headline") or {}).get("mAP") != STALE_MAP
        row = pd.read_csv(out / "summary.csv").set_index("notebook").loc["00_baselines"]
        assert row["status"] == "interrupted"
        assert row["mAP"] != round(100 * STALE_MAP, 1)  # the short summary shows percent
        assert STALE_MAP not in set(pd.read_csv(out / "summary_details.csv").value)
    finally:
        _kill_all(tag)
        batch.kill()
        batch.wait()


def test_kill_9_of_reidlib_takes_papermill_and_the_kernel_with_it(tmp_path):
    out, tag = tmp_path / "runs", uuid.uuid4().hex
    _seed_earlier_pass(out)
    batch = _start_batch(out, tag)
    try:
        _wait_for_kernel(batch, tag)
        batch.kill()
        batch.wait()
        deadline = time.monotonic() + ORPHANS_GONE_S
        while _processes_of(tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_of(tag), f"orphans of kill -9: {_describe(_processes_of(tag))}"
        # the killed run's status says it never finished, not the earlier run's "passed"
        status = json.loads((out / "notebooks" / "ci" / "00_baselines.status.json").read_text())
        assert status["status"] == "running" and str(STALE_MAP) not in json.dumps(status)
    finally:
        _kill_all(tag)


SPAWNING_NOTEBOOK = """
import os, pathlib, subprocess, time
child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # in a session of its own, as the kernel
pathlib.Path("pids.txt").write_text(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""


def _live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_timeout_kills_the_kernel_and_what_it_started(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SPAWNING_NOTEBOOK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / "01_spawn.ipynb"
    nbformat.write(nb, path)
    pids: list[int] = []
    try:
        result = runner.run_notebook(path, "ci", tmp_path / "runs", {}, timeout=NOTEBOOK_TIMEOUT_S)
        assert result.status == "timeout"
        pids_file = path.parent / "pids.txt"
        assert pids_file.is_file(), "the kernel never reached the cell: raise NOTEBOOK_TIMEOUT_S"
        pids = [int(p) for p in pids_file.read_text().split()]
        left = [pid for pid in pids if _live(pid)]
        assert not left, f"kernel {pids[0]} / its child {pids[1]} outlived the timeout: {left}"
    finally:
        for pid in pids:
            if _live(pid):
                os.kill(pid, signal.SIGKILL)


START_GUARDED_SLEEP = """
import os, subprocess, sys, time
from reidlib import die_with_parent
child = subprocess.Popen(die_with_parent.command(os.getpid(), ["sleep", "300"]))
print(child.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_die_with_parent_kills_the_child_with_its_parent():
    parent = subprocess.Popen([sys.executable, "-c", START_GUARDED_SLEEP], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + GUARDED_EXIT_S
        while _live(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _live(child), "the guarded child outlived kill -9 of its parent"
    finally:
        if _live(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_die_with_parent_does_not_start_an_orphan():
    """A parent that died before the guard was set (its pid is no longer the parent's): no command runs."""
    assert subprocess.run(die_with_parent.command(os.getpid(), ["true"])).returncode == 0
    late = subprocess.run(die_with_parent.command(os.getppid(), ["true"]))
    assert late.returncode == die_with_parent.EXIT_PARENT_GONE
