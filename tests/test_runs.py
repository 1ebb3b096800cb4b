"""Run folders: safe paths, atomic writes, run keys, data identity, manifest, run table, lock."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_method import kill_mid_write

from reidlib import runs
from reidlib.config import DataConfig, RunConfig, TrainConfig, from_dict, load_yaml, replace, to_dict
from reidlib.data.records import Record, ReidDataset

IDENTITY = {"name": "synthocc", "synthocc": {"identities": 10, "seed": 0}}


# ------------------------------------------------------------------------------------ safe_path
def test_safe_path_joins_inside_base(tmp_path):
    assert runs.safe_path(tmp_path, "cache", "bot", "abc") == tmp_path / "cache" / "bot" / "abc"
    assert runs.safe_path(tmp_path, "a/../b") == tmp_path / "b"  # stays inside: allowed


@pytest.mark.parametrize("parts", [("..",), ("cache", "../../etc"), ("/etc/passwd",), ("a", ""),
                                   ("cache", "bot/../../..", "x")])
def test_safe_path_refuses_escapes(tmp_path, parts):
    with pytest.raises(runs.UnsafePathError):
        runs.safe_path(tmp_path / "runs", *parts)


def test_run_dir_rejects_a_method_name_that_climbs_out(tmp_path):
    with pytest.raises(runs.UnsafePathError, match="escapes"):
        runs.run_dir(tmp_path, "../../outside", "key")


# -------------------------------------------------------------------------------- atomic writes
def test_atomic_writers_round_trip(tmp_path):
    runs.atomic_write_text(tmp_path / "a.txt", "héllo")
    runs.atomic_write_json(tmp_path / "b.json", {"x": 1, "p": Path("/q")})
    runs.atomic_write_yaml(tmp_path / "sub" / "c.yaml", TrainConfig(epochs=7, warmup_epochs=2))
    runs.atomic_write_jsonl(tmp_path / "d.jsonl", [{"a": 1}, {"a": 2}])
    runs.atomic_torch_save({"w": torch.arange(3)}, tmp_path / "e.pt")
    assert (tmp_path / "a.txt").read_text() == "héllo"
    assert runs.read_json(tmp_path / "b.json") == {"x": 1, "p": "/q"}
    assert from_dict(TrainConfig, load_yaml(tmp_path / "sub" / "c.yaml")).epochs == 7
    assert runs.read_jsonl(tmp_path / "d.jsonl") == [{"a": 1}, {"a": 2}]
    assert torch.equal(torch.load(tmp_path / "e.pt", weights_only=True)["w"], torch.arange(3))
    assert runs.read_json(tmp_path / "missing.json") is None and runs.read_jsonl(tmp_path / "no") == []


def test_failed_atomic_write_keeps_old_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "ckpt.pt"
    runs.atomic_torch_save({"epoch": 1}, target)
    before = target.read_bytes()
    # A tensor is written first, then pickling the lambda fails half-way through the file.
    with pytest.raises(Exception):  # noqa: B017 - pickling errors differ between Python versions
        runs.atomic_torch_save({"w": torch.zeros(1000), "bad": lambda: 0}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]

    def write_half_then_fail(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt  # also on interrupts, not only on exceptions

    with pytest.raises(KeyboardInterrupt):
        runs._atomic_write(tmp_path / "new.json", write_half_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]



@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_atomic_writes_get_the_mode_open_would_give_under_the_umask(tmp_path, umask):
    """A shared runs folder follows the umask: mkstemp alone would make every file 0600."""
    previous = os.umask(umask)
    try:
        written = [runs.atomic_write_text(tmp_path / "a.txt", "x"),
                   runs.atomic_torch_save({}, tmp_path / "b.pt")]
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [expected, expected]

# ------------------------------------------------------------------------------------- run keys
def _cfg(**changes) -> RunConfig:
    base = RunConfig(method="tiny", model={"width": 8}, data=DataConfig(height=64, width=32),
                     train=TrainConfig(epochs=5, warmup_epochs=1), seed=1)
    return replace(base, **changes) if changes else base


def test_run_key_is_stable_across_construction_and_yaml(tmp_path):
    key = runs.run_key(_cfg(), IDENTITY)
    assert len(key) == 12 and key == runs.run_key(_cfg(), IDENTITY)
    _cfg().to_yaml(tmp_path / "c.yaml")
    assert runs.run_key(RunConfig.from_yaml(tmp_path / "c.yaml"), IDENTITY) == key
    shuffled = dict(reversed(list(to_dict(_cfg()).items())))
    assert runs.run_key(from_dict(RunConfig, shuffled), dict(reversed(list(IDENTITY.items())))) == key


@pytest.mark.parametrize("changes", [{"tag": "ablation A"}, {"train": {"log_every": 1}},
                                     {"data": {"root": "/somewhere/else"}}])
def test_run_key_ignores_labels_printing_and_where_data_was_opened(changes):
    assert runs.run_key(_cfg(**changes), IDENTITY) == runs.run_key(_cfg(), IDENTITY)


@pytest.mark.parametrize("changes", [{"seed": 2}, {"model": {"width": 16}}, {"train": {"lr": 1e-3}},
                                     {"train": {"milestones": [2]}}, {"data": {"height": 32}},
                                     {"train": {"eval_every": 1}}, {"method": "other"}])
def test_run_key_changes_with_anything_that_changes_the_result(changes):
    assert runs.run_key(_cfg(**changes), IDENTITY) != runs.run_key(_cfg(), IDENTITY)


def test_run_key_changes_with_the_data_identity():
    other = {"name": "synthocc", "synthocc": {"identities": 11, "seed": 0}}
    assert runs.run_key(_cfg(), other) != runs.run_key(_cfg(), IDENTITY)


# -------------------------------------------------------------------------------- data identity
def _dataset(root: Path, n_train: int = 2) -> ReidDataset:
    train = [Record(str(root / f"train/{i}.jpg"), i, 0) for i in range(n_train)]
    return ReidDataset("market1501", str(root), train, [Record(str(root / "q/0.jpg"), 5, 0)],
                       [Record(str(root / "g/0.jpg"), 5, 1)])


def test_synthocc_identity_is_its_generator_parameters(tmp_path):
    params = {"seed": 0, "identities": 40, "size": "ci"}
    (tmp_path / "synthocc.json").write_text(json.dumps({**params, "created": "2026-01-01T00:00"}))
    identity = runs.data_identity(_dataset(tmp_path / "occluded_duke"))  # a protocol folder
    assert identity == {"name": "market1501", "synthocc": params, "subset": "occluded_duke"}
    assert runs.data_identity(_dataset(tmp_path))["subset"] == "."  # timestamps never enter the key


def test_real_identity_is_root_and_records(tmp_path):
    identity = runs.data_identity(_dataset(tmp_path))
    assert identity["root"] == str(tmp_path.resolve())
    assert runs.data_identity(_dataset(tmp_path)) == identity
    assert runs.data_identity(_dataset(tmp_path, n_train=3))["records"] != identity["records"]


# ----------------------------------------------------------------------- manifest and run table
def test_manifest_records_environment():
    info = runs.manifest(seed=7, device="cpu", world_size=1)
    assert info["seed"] == 7 and info["device"] == "cpu" and info["threads"] == torch.get_num_threads()
    assert torch.__version__.startswith(info["packages"]["torch"].split("+")[0])
    assert set(info["packages"]) == {"torch", "torchvision", "timm", "numpy", "reidlib"}
    assert {"git_sha", "git_dirty", "start_time", "python", "platform"} <= set(info)
    json.dumps(info)  # serialisable as is


def test_list_runs_gathers_every_run_with_its_status(tmp_path):
    assert list(runs.list_runs(tmp_path).columns[:4]) == ["method", "key", "tag", "status"]
    for key, files in {"k1": {"metrics.json": {"finished": True, "mAP": 0.5}}, "k2": {"last.pt": None},
                       "k3": {}}.items():
        folder = tmp_path / "cache" / "tiny" / key
        runs.atomic_write_yaml(folder / "config.yaml", replace(_cfg(), tag=f"t{key}"))
        for name, content in files.items():
            runs.atomic_write_json(folder / name, content or {})
    table = runs.list_runs(tmp_path).set_index("key")
    assert table["status"].to_dict() == {"k1": "finished", "k2": "interrupted", "k3": "started"}
    assert table.loc["k1", "mAP"] == 0.5 and table.loc["k2", "tag"] == "tk2"
    assert (table["method"] == "tiny").all() and (table["epochs"] == 5).all()


def test_run_lock_serialises_two_holders(tmp_path):
    events: list[str] = []
    holding = threading.Event()

    def first():
        with runs.run_lock(tmp_path):
            holding.set()
            time.sleep(0.2)  # give the second holder time to block on the lock
            events.append("first released")

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait()
    with runs.run_lock(tmp_path):
        events.append("second acquired")
    thread.join()
    assert events == ["first released", "second acquired"]


def test_the_next_lock_holder_removes_what_a_writer_killed_mid_write_left(tmp_path):
    """Only the lock holder writes into a run folder, so a temporary file found by the next holder belongs
    to a dead writer: it is removed, finished files stay."""
    folder = tmp_path / "run"
    runs.atomic_write_json(folder / "metrics.json", {"finished": True})
    kill_mid_write(folder / "last.pt")
    assert len(list(folder.glob(".last.pt.*.tmp"))) == 1
    with runs.run_lock(folder):
        assert sorted(p.name for p in folder.iterdir()) == [".lock", "metrics.json"]


def test_discard_removes_only_a_folder_holding_nothing_but_disposable_files(tmp_path):
    kept, discarded = tmp_path / "cache" / "m" / "kept", tmp_path / "cache" / "m" / "gone"
    runs.atomic_write_json(kept / "last.pt", {})
    for folder in (kept, discarded):
        runs.atomic_write_yaml(folder / "config.yaml", {})
        with runs.run_lock(folder) as lock:
            assert lock.discard(("config.yaml",), root=tmp_path) is (folder == discarded)
    assert sorted(p.name for p in kept.iterdir()) == [".lock", "config.yaml", "last.pt"]
    assert sorted(p.name for p in (tmp_path / "cache" / "m").iterdir()) == ["kept"]
    with runs.run_lock(kept) as lock:
        kept.joinpath("last.pt").unlink()
        assert lock.discard(("config.yaml",), root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # empty parents go too, up to the root


def test_a_holder_that_waited_on_a_discarded_folder_locks_its_successor(tmp_path):
    """The waiter held the deleted lock file open: it must lock the folder that exists now, else it and a
    newcomer locking the new lock file would both hold the run."""
    folder = tmp_path / "cache" / "m" / "k"
    seen: list[bool] = []

    def waiter():
        with runs.run_lock(folder):
            seen.append((folder / runs.LOCK_FILE).is_file())

    with runs.run_lock(folder) as lock:
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)  # give the waiter time to open the lock file and block on it
        assert lock.discard((), root=tmp_path)
    thread.join()
    assert seen == [True]
