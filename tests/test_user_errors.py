"""Errors a careless user meets (issue 11, item 3): each one arrives before any work starts, names the key,
flag, file or folder at fault, and says what to do. Unit-level: no notebook is executed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reidlib import cli, runner
from reidlib.config import ConfigError, DataConfig, RunConfig, check_range


@pytest.fixture
def no_notebooks(monkeypatch):
    """`reproduce` with its notebooks and SynthOcc preparation replaced by recorders: a test fails if a
    check that should come first lets any of them start."""
    started = []
    monkeypatch.setattr(runner, "run_notebook", lambda nb, *args, **kwargs: started.append(nb.stem))
    monkeypatch.setattr(runner, "_prepare_synthocc", lambda size: started.append(f"synthocc {size}"))
    return started


def _fails(argv: list[str], capsys) -> str:
    """Run the command; it must fail with one `reidlib: error:` line set and no traceback. Returns stderr."""
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert "reidlib: error:" in err and "Traceback" not in err
    return err


# ------------------------------------------------------------------------------ a. data set arguments
def test_unknown_dataset_fails_before_any_notebook(no_notebooks, capsys):
    err = _fails(["reproduce", "--profile", "ci", "--dataset", "nosuch"], capsys)
    assert "unknown data set 'nosuch'" in err and "market1501" in err and "synthocc" in err
    assert no_notebooks == []


def test_real_dataset_without_data_root_names_the_flag_and_the_layout(no_notebooks, capsys):
    err = _fails(["reproduce", "--profile", "ci", "--dataset", "market1501"], capsys)
    assert "--data-root" in err and "bounding_box_train/" in err  # where the data should be
    assert no_notebooks == []


def test_paper_profile_without_data_root_fails_up_front(no_notebooks, capsys):
    err = _fails(["reproduce", "--profile", "paper"], capsys)
    assert "--data-root" in err
    assert no_notebooks == []


def test_data_root_without_the_dataset_fails_up_front(no_notebooks, tmp_path, capsys):
    err = _fails(["reproduce", "--profile", "ci", "--dataset", "market1501", "--data-root",
                  str(tmp_path / "nowhere")], capsys)
    assert "--data-root" in err and "nowhere" in err and "does not exist" in err
    (tmp_path / "Market-1501" / "query").mkdir(parents=True)  # a folder without the data set's layout
    err = _fails(["reproduce", "--profile", "ci", "--dataset", "market1501", "--data-root", str(tmp_path)],
                 capsys)
    assert f"--data-root {tmp_path}" in err and "bounding_box_train/" in err
    assert no_notebooks == []


def test_a_notebook_with_an_unknown_dataset_is_told_so_not_that_data_root_is_unset():
    from reidlib.data.loader import load_from_config

    with pytest.raises(ConfigError, match=r"^data\.dataset: unknown data set 'nosuch'; known: .*market1501"):
        load_from_config(DataConfig(dataset="nosuch"))


# ------------------------------------------------------------------------------ b. numeric flags
@pytest.mark.parametrize(("flag", "value"), [("--timeout", "-5"), ("--timeout", "0"), ("--timeout", "nan"),
                                             ("--jobs", "0"), ("--jobs", "-2")])
def test_non_positive_timeout_and_jobs_are_rejected_by_the_parser(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["reproduce", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "positive" in err


def test_positive_timeout_and_jobs_are_accepted():
    args = cli.build_parser().parse_args(["reproduce", "--timeout", "2.5", "--jobs", "2"])
    assert (args.timeout, args.jobs) == (2.5, 2)


# ------------------------------------------------------------------------------ d. output paths, OSErrors
def test_synth_out_on_an_existing_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("not a folder")
    err = _fails(["synth", "--out", str(target), "--size", "ci"], capsys)
    assert str(target) in err and "folder" in err
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("below", ["", "sub"])
def test_reproduce_out_dir_on_a_file_fails_before_any_notebook(no_notebooks, tmp_path, capsys, below):
    target = tmp_path / "taken.txt"
    target.write_text("not a folder")
    err = _fails(["reproduce", "--profile", "ci", "--out-dir", str(target / below)], capsys)
    assert "--out-dir" in err and str(target) in err and "is a file" in err
    assert no_notebooks == []


def test_read_only_out_dir_fails_before_any_notebook(no_notebooks, tmp_path, capsys, monkeypatch):
    # Simulated: the tests may run as root, for whom chmod does not make a folder read-only.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    err = _fails(["reproduce", "--profile", "ci", "--out-dir", str(tmp_path / "runs")], capsys)
    assert "--out-dir" in err and str(tmp_path) in err and "chmod" in err
    assert no_notebooks == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_synth_out_is_one_line(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        err = _fails(["synth", "--out", str(tmp_path / "s"), "--size", "ci"], capsys)
    finally:
        tmp_path.chmod(0o755)
    assert "--out" in err and str(tmp_path) in err


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "/data/x"),
                                   NotADirectoryError(20, "Not a directory", "/data/x"),
                                   FileExistsError(17, "File exists", "/data/x"),
                                   FileExistsError("/data/x is a file; give a folder for the SynthOcc set")])
def test_any_oserror_of_a_command_is_one_line_naming_the_path(monkeypatch, capsys, error):
    from reidlib.data import synthocc

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(synthocc, "generate", fail)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    err = _fails(["synth", "--out", "s", "--size", "ci"], capsys)
    assert "/data/x" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")  # tracebacks on demand
    with pytest.raises(type(error)):
        cli.main(["synth", "--out", "s", "--size", "ci"])


def test_bugs_keep_their_traceback(monkeypatch):
    from reidlib.data import synthocc

    def fail(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(synthocc, "generate", fail)
    with pytest.raises(KeyError):
        cli.main(["synth", "--out", "s", "--size", "ci"])


# ------------------------------------------------------------------------------ c. unreadable data folders
def _market(root: Path, where: str = "") -> Path:
    """A Market-1501 folder (ROOT itself or ROOT/`where`) with one undecoded image per split: enough to be
    listed."""
    names = {"bounding_box_train": "0002_c1s1_000451_03.jpg", "query": "0002_c1s1_001451_00.jpg",
             "bounding_box_test": "0002_c3s1_000451_01.jpg"}
    for folder, name in names.items():
        (root / where / folder).mkdir(parents=True)
        (root / where / folder / name).write_bytes(b"")
    return root


def _check_reports_unreadable(root: Path, unreadable: Path, capsys) -> None:
    err = _fails(["datasets", "check", str(root), "market1501"], capsys)
    assert str(unreadable) in err and "Permission denied" in err
    assert "no images" not in err and "not found" not in err


# (data-set folder below ROOT, the folder that cannot be listed): the images' folder, or ROOT when the
# data-set folder must be found in it by a case-insensitive listing
UNREADABLE = [("", "query"), ("market-1501-v15.09.15", "")]


@pytest.mark.parametrize(("where", "unreadable"), UNREADABLE)
def test_datasets_check_reports_a_folder_it_cannot_list(tmp_path, capsys, monkeypatch, where, unreadable):
    # Simulated: the tests may run as root, for whom chmod 000 does not block listing a folder.
    root = _market(tmp_path / "market", where)
    blocked = root / where / unreadable if unreadable else root
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _check_reports_unreadable(root, blocked, capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists folders whatever their mode")
def test_datasets_check_reports_a_chmod_000_query_folder(tmp_path, capsys):
    root = _market(tmp_path / "market")
    (root / "query").chmod(0)
    try:
        _check_reports_unreadable(root, root / "query", capsys)
    finally:
        (root / "query").chmod(0o755)


# ------------------------------------------------------------------------------ e. config values
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpys_range_is_a_config_error(seed):
    with pytest.raises(ConfigError, match=rf"^seed={seed} is out of range \[0, {2**32 - 1}\]"):
        RunConfig.from_profile("bot", "ci", {"seed": seed})
    assert RunConfig.from_profile("bot", "ci", {"seed": 2**32 - 1}).seed == 2**32 - 1


NON_FINITE_KEYS = [("bot", "train", "lr"), ("bot", "train", "weight_decay"), ("bot", "train", "gamma"),
                   ("bot", "model", "triplet_margin"), ("bot", "model", "label_smoothing"),
                   ("qpm", "model", "margin"), ("bot", "data", "flip_p"), ("bot", "data", "color_jitter")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(("method", "section", "key"), NON_FINITE_KEYS)
def test_nan_and_infinity_are_rejected_naming_the_key(method, section, key, value):
    from reidlib import methods

    with pytest.raises(ConfigError, match=rf"{section}\.{key}=-?(nan|inf)"):
        cfg = RunConfig.from_profile(method, "ci", {section: {key: value}})
        methods.build_config(cfg.method, cfg.model)  # the model section is validated by its method


def test_nan_from_yaml_is_rejected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: bot\ntrain:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"train\.lr=nan"):
        RunConfig.from_yaml(path)


def test_check_range_refuses_nan_which_every_comparison_lets_through():
    with pytest.raises(ConfigError, match="x=nan"):
        check_range("x", float("nan"), 0.0, 1.0)


# (method, the data key set too small, its value, its minimum): the ci backbones have stride 16 or 16 x 16
# patches; PCB and QPM (6 stripes) need a feature-map row per stripe
TOO_SMALL = [("bot", "height", 7, 16), ("bot", "width", 7, 16), ("pcb", "height", 64, 96),
             ("qpm", "height", 80, 96), ("vit_baseline", "height", 7, 16), ("clip_baseline", "width", 8, 16)]


@pytest.mark.parametrize(("method", "key", "value", "minimum"), TOO_SMALL)
def test_images_too_small_for_the_backbone_fail_at_build_naming_the_key(method, key, value, minimum):
    from reidlib import methods
    from reidlib.methods.base import DataInfo

    cfg = RunConfig.from_profile(method, "ci", {"data": {key: value}})
    info = DataInfo(num_classes=4, image_size=(cfg.data.height, cfg.data.width))
    with pytest.raises(ConfigError, match=rf"^data\.{key}={value} is out of range \[{minimum}, inf\]"):
        methods.build(cfg.method, cfg.model, info)


@pytest.mark.parametrize(("method", "minimum"), [("bot", (16, 16)), ("pcb", (96, 16)), ("qpm", (96, 16)),
                                               ("vit_baseline", (16, 16)), ("clip_baseline", (16, 16))])
def test_the_ci_image_sizes_meet_each_methods_minimum(method, minimum):
    from reidlib import methods
    from reidlib.methods.base import DataInfo

    cfg = RunConfig.from_profile(method, "ci")
    size = (cfg.data.height, cfg.data.width)
    model = methods.build(cfg.method, cfg.model, DataInfo(num_classes=4, image_size=size))
    assert model.min_image_size() == minimum
    assert all(s >= m for s, m in zip(size, minimum, strict=True))


# ------------------------------------------------------------------------------ f. damaged run folders
def _finished_run(runs_dir: Path, key: str) -> Path:
    """A finished run folder as the engine leaves it (config, weights, history, final metrics)."""
    import torch

    from reidlib import runs

    folder = runs_dir / "cache" / "bot" / key
    runs.atomic_write_yaml(folder / "config.yaml", RunConfig(method="bot", tag=f"run {key}"))
    runs.atomic_torch_save({"method": "bot", "info": {"num_classes": 2}, "state_dict": {"w": torch.zeros(3)}},
                           folder / "model.pt")
    runs.atomic_write_jsonl(folder / "history.jsonl", [{"kind": "epoch", "epoch": 1}])
    runs.atomic_write_json(folder / "metrics.json", {"finished": True, "mAP": 0.5})
    return folder


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])


def _names_file_and_fix(exc: Exception, file: Path) -> None:
    message = str(exc)
    assert str(file) in message and "damaged" in message
    assert f"delete the run folder {file.parent}" in message and "retrain" in message


@pytest.mark.parametrize("name", ["metrics.json", "history.jsonl"])
def test_a_truncated_json_file_of_a_finished_run_names_the_file_and_the_fix(tmp_path, name):
    from reidlib import runs
    from reidlib.engine.loop import Run

    folder = _finished_run(tmp_path, "k1")
    _truncate(folder / name)
    readers = [Run.load] + ([runs.run_status] if name == "metrics.json" else [])  # run_status: no history
    for read in readers:
        with pytest.raises(runs.DamagedFileError) as info:
            read(folder)
        _names_file_and_fix(info.value, folder / name)


def test_a_truncated_model_pt_names_the_file_and_the_fix(tmp_path):
    from reidlib import runs
    from reidlib.engine.loop import Run

    folder = _finished_run(tmp_path, "k1")
    _truncate(folder / "model.pt")
    with pytest.raises(runs.DamagedFileError) as info:
        Run.load(folder).load_model()
    _names_file_and_fix(info.value, folder / "model.pt")


@pytest.mark.parametrize(("name", "damage"), [("metrics.json", b'{"finished": tr'),
                                              ("config.yaml", b"method: [bot\n"),
                                              ("config.yaml", b"just a string\n")])
def test_summary_lists_a_damaged_run_and_goes_on(tmp_path, capsys, name, damage):
    from reidlib import runs

    _finished_run(tmp_path, "k1")
    damaged = _finished_run(tmp_path, "k2")
    (damaged / name).write_bytes(damage)
    table = runs.list_runs(tmp_path).set_index("key")
    assert table.loc["k1", "status"] == "finished" and table.loc["k1", "mAP"] == 0.5
    assert table.loc["k2", "status"].startswith(f"damaged: {name}")
    assert table.loc["k2", "path"] == str(damaged)
    assert cli.main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run k1" in out and f"damaged: {name}" in out
