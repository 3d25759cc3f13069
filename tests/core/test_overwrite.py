"""``--overwrite`` replaces an earlier run or comparison, and nothing else: no user folder, no input data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlcore.directories import MARKER, kind_of


def _thesis(folder: str) -> Path:
    Path(folder).mkdir()
    thesis = Path(folder) / "thesis.txt"
    thesis.write_text("draft\n")
    return thesis


def test_overwrite_refuses_a_folder_that_is_not_a_run(toy_plugin, tlapp):
    thesis = _thesis("d")
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "d", "--overwrite", "--epochs", "1")
    assert code == 2, err
    assert "refusing to overwrite d" in err and "not a tlapp run directory" in err
    assert thesis.read_text() == "draft\n"
    assert sorted(p.name for p in Path("d").iterdir()) == ["thesis.txt"]


def test_overwrite_refuses_a_run_that_holds_the_input_data(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    data = Path("r/mydata")
    data.mkdir()
    (data / "x.csv").write_text("1,2\n")
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "r", "--overwrite", "--epochs", "1",
                         "--data", "r/mydata")
    assert code == 2 and "which this job needs" in err
    assert (data / "x.csv").read_text() == "1,2\n"
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "r", "--overwrite", "--epochs", "1", "--data", "r")
    assert code == 2 and "which this job needs" in err
    assert Path("r/checkpoints/last.pt").exists()


def test_overwrite_refuses_the_working_directory(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    import os

    os.chdir("r")
    code, _, err = tlapp("run", "--plugin", "toy", "--output", ".", "--overwrite", "--epochs", "1")
    assert code == 2 and "which this job needs" in err
    assert Path("checkpoints/last.pt").exists()


def test_overwrite_replaces_an_earlier_run_and_the_run_is_marked(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    assert kind_of(Path("r")) == "run" and (Path("r") / MARKER).is_file()
    (Path("r") / "stale.txt").write_text("from the earlier run")
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1", "--overwrite")[0] == 0
    assert not Path("r/stale.txt").exists() and Path("r/metrics.json").exists()


def test_a_run_from_before_the_marker_is_still_recognised(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    (Path("r") / MARKER).unlink()
    assert kind_of(Path("r")) == "run"
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1", "--overwrite")[0] == 0


def test_output_that_is_a_file_is_refused(toy_plugin, tlapp):
    Path("f").write_text("keep me")
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "f", "--overwrite", "--epochs", "1")
    assert code == 2 and "is an existing file" in err
    assert Path("f").read_text() == "keep me"


@pytest.mark.parametrize("target", ["thesis", "run"])
def test_compare_overwrite_replaces_only_a_comparison(toy_plugin, tlapp, target):
    if target == "thesis":
        thesis = _thesis("c")
    else:
        assert tlapp("run", "--plugin", "toy", "--output", "c", "--epochs", "1")[0] == 0
    code, _, err = tlapp("compare", "--plugin", "toy", "--strategies", "linear-probe", "--epochs", "1",
                         "--output", "c", "--overwrite")
    assert code == 2 and "refusing to overwrite c" in err
    if target == "thesis":
        assert thesis.read_text() == "draft\n"
    else:
        assert Path("c/checkpoints/last.pt").exists()


def test_compare_overwrite_replaces_an_earlier_comparison(toy_plugin, tlapp):
    args = ("compare", "--plugin", "toy", "--strategies", "linear-probe", "--epochs", "1", "--output", "c")
    assert tlapp(*args)[0] == 0
    assert kind_of(Path("c")) == "comparison"
    code, _, err = tlapp(*args)
    assert code == 2 and "--overwrite" in err
    assert tlapp(*args, "--overwrite")[0] == 0
