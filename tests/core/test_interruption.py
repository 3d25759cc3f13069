"""Interruptions and failures leave a run that says how it ended and that the next command can carry on:
Ctrl-C and SIGTERM, errors before the first checkpoint, temporary files of killed writes, library warnings.

(Killing real processes with SIGKILL is in test_kill_resume.py.)
"""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import pytest

from helpers import TEST_PLUGINS, install_distribution, read_metrics
from tlcore.checkpoint import remove_partial_writes


@pytest.fixture
def lifecycle(toy_plugin, monkeypatch):
    """The toy plugin plus tlapp_lifecycle (hooks that interrupt a run, a task whose data can be missing)."""
    install_distribution(toy_plugin, "tlapp-lifecycle", {"tlapp_lifecycle": TEST_PLUGINS / "tlapp_lifecycle.py"},
                         {"lifecycle": "tlapp_lifecycle"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,lifecycle")
    return toy_plugin


RUN = ("run", "--plugin", "toy", "--output", "r", "--epochs", "2")


def test_ctrl_c_in_a_run_says_how_to_continue_and_the_hint_works(toy_plugin, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    code, _, err = tlapp(*RUN)
    assert code == 130, err
    assert "interrupted; continue with --resume: tlapp run --output r --resume" in err
    assert read_metrics("r")["status"] == "interrupted"
    assert "interrupted (KeyboardInterrupt" in Path("r/train.log").read_text()
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    code, out, err = tlapp("run", "--output", "r", "--resume")  # the hint, word for word
    assert code == 0, err
    assert read_metrics("r")["status"] == "completed" and read_metrics("r")["epochs"] == 2


def test_ctrl_c_outside_a_run_does_not_suggest_resume(toy_plugin, tlapp, monkeypatch):
    import tlapp_toy

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tlapp_toy.ToyTask, "check_data", interrupted, raising=False)
    code, _, err = tlapp("data", "check", "--plugin", "toy")
    assert code == 130
    assert "interrupted" in err and "--resume" not in err and "Traceback" not in err


def test_sigterm_ends_a_run_as_interrupted_and_the_previous_handler_comes_back(lifecycle, tlapp, monkeypatch):
    received = []

    def recorder(signum, frame):
        received.append(signum)

    # Should the command not take SIGTERM itself, this handler keeps the signal from ending pytest.
    previous = signal.signal(signal.SIGTERM, recorder)
    try:
        monkeypatch.setenv("TLAPP_TEST_SIGNAL_AFTER", "1:SIGTERM")
        code, _, err = tlapp(*RUN)
        assert code == 143, err
        assert "interrupted by SIGTERM; continue with --resume" in err
        assert received == [], "the command's own handler should have taken SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is recorder
        m = read_metrics("r")
        assert m["status"] == "interrupted" and m["epochs"] == 1
        assert "interrupted (Terminated: SIGTERM)" in Path("r/train.log").read_text()
        monkeypatch.delenv("TLAPP_TEST_SIGNAL_AFTER")
        assert tlapp("run", "--output", "r", "--resume")[0] == 0
        assert read_metrics("r")["status"] == "completed"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_data_error_before_the_first_checkpoint_leaves_a_run_the_same_command_starts_again(lifecycle, tlapp):
    args = ("run", "--plugin", "lifecycle", "--output", "r", "--epochs", "1", "--data", "mydata")
    code, _, err = tlapp(*args)
    assert code == 2 and "no dataset at mydata" in err
    assert "no dataset at mydata" in Path("r/train.log").read_text()
    assert read_metrics("r")["status"] == "failed"

    code, _, err = tlapp(*args)  # the same command meets the same error, not "already exists"
    assert code == 2 and "no dataset at mydata" in err and "already exists" not in err
    code, _, err = tlapp(*args, "--resume")
    assert code == 2 and "nothing to resume" in err and "without --resume" in err

    Path("mydata").mkdir()
    code, _, err = tlapp(*args)
    assert code == 0, err
    assert read_metrics("r")["status"] == "completed"
    log = Path("r/train.log").read_text()
    assert log.count("no dataset at mydata") == 2 and "starting r again" in log


def test_an_interruption_before_the_first_checkpoint_does_not_suggest_resume(toy_plugin, tlapp, monkeypatch):
    import tlapp_toy

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(tlapp_toy.ToyTask, "build_data", interrupted)
        code, _, err = tlapp(*RUN)
    assert code == 130
    assert "before its first checkpoint; the same command starts it again" in err and "--resume" not in err
    assert read_metrics("r")["status"] == "interrupted"
    code, _, err = tlapp(*RUN)
    assert code == 0, err


def test_a_folder_that_is_not_a_run_is_never_offered_resume(toy_plugin, tlapp):
    Path("r").mkdir()
    (Path("r") / "thesis.txt").write_text("draft\n")
    code, _, err = tlapp(*RUN)
    assert code == 2 and "already exists" in err
    assert "--resume" not in err and "--overwrite" not in err
    code, _, err = tlapp(*RUN, "--resume")
    assert code == 2 and "nothing to resume" in err


def test_temporary_files_of_killed_writes_are_removed_when_the_run_resumes(toy_plugin, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    assert tlapp(*RUN)[0] == 130
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    strays = [Path(tempfile.mkstemp(prefix=".last.pt.", dir="r/checkpoints")[1]),
              Path(tempfile.mkstemp(prefix=".metrics.json.", dir="r")[1])]
    kept = [Path("r/.tlapp"), Path("r/.notes.txt"), Path("r/checkpoints/.keep")]
    for path in kept[1:]:
        path.write_text("mine\n")
    assert tlapp("run", "--output", "r", "--resume")[0] == 0
    assert not any(p.exists() for p in strays)
    assert all(p.exists() for p in kept)


def test_remove_partial_writes_matches_only_temporary_names(tmp_path):
    made = [Path(tempfile.mkstemp(prefix=f".{name}.", dir=tmp_path)[1]) for name in ("best.pt", "config.yaml")]
    others = [tmp_path / n for n in (".tlapp", ".gitignore", "last.pt", ".last.pt.tmp", ".hidden.file.txt")]
    for path in others:
        path.write_text("x")
    assert sorted(remove_partial_writes(tmp_path)) == sorted(made)
    assert all(p.exists() for p in others)
    assert remove_partial_writes(tmp_path / "missing") == []


def test_library_warnings_go_to_train_log_not_the_console(lifecycle, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TEST_WARN", "a value was out of range (test warning)")
    code, out, err = tlapp(*RUN)
    assert code == 0, err
    assert "test warning" not in err + out
    assert "UserWarning: a value was out of range (test warning)" in Path("r/train.log").read_text()
    code, _, err = tlapp("--debug", *RUN[:4], "r2", *RUN[5:])
    assert code == 0 and "test warning" in err


def test_metrics_json_stays_whole_when_written_by_an_interrupted_run(toy_plugin, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    assert tlapp(*RUN)[0] == 130
    json.loads(Path("r/metrics.json").read_text())
    assert not [p for p in Path("r").rglob(".*") if p.name != ".tlapp"]
