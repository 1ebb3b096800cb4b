"""Errors a careless user meets (issue 11, item 3): each one arrives before any work starts, names the key,
flag, file or folder at fault, and says what to do. Unit-level: no notebook is executed."""

from __future__ import annotations

import pytest

from reidlib import cli, runner


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
