"""The guarantee behind ``--resume``: a training process killed at any moment (SIGKILL mid-epoch, during
validation, halfway through writing a checkpoint; SIGINT; SIGTERM) leaves only loadable checkpoints, and
resuming it ends with exactly the weights and metrics of a run that was never interrupted (CPU).

Real processes, killed for real: ``tlapp_lifecycle`` (tests/plugins_for_tests) picks the moment, and each
command is a child forked by ``cli_forker.py``, which pays the imports once for all of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TEST_PLUGINS, install_distribution, read_metrics
from tlcore import checkpoint

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="the forker and SIGKILL need POSIX")]

# Four epochs of three training and three validation batches each.
JOB = ("--plugin", "toy", "--epochs", "4", "--seed", "5", "--set", "train.num_threads=1")


class Forker:
    """tests/plugins_for_tests/cli_forker.py: each command a forked child process, killable for real."""

    def __init__(self, site: Path, logs: Path):
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                   "TLAPP_PLUGINS": "toy,lifecycle"}
        self.process = subprocess.Popen([sys.executable, str(TEST_PLUGINS / "cli_forker.py")], env=environ,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.logs, self.count = logs, 0
        self.running: int | None = None  # the child's pid until it has ended

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        assert line, "the forker died"
        return json.loads(line)

    def start(self, cwd: Path, *args: str, **env: str) -> int:
        """Start ``tlapp run ARGS`` with the test variables ENV; returns the child's pid."""
        self.count += 1
        self.output = str(self.logs / f"command-{self.count}")
        request = {"args": ["run", *args], "cwd": str(cwd), "env": env, "output": self.output}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        self.running = self._answer()["pid"]
        return self.running

    def finish(self) -> tuple[int, str]:
        """Wait for the child: its exit code (negative: the signal that killed it) and its stderr."""
        code = self._answer()["exit"]
        self.running = None
        return code, Path(self.output + ".err").read_text()

    def run(self, cwd: Path, *args: str, **env: str) -> tuple[int, str]:
        self.start(cwd, *args, **env)
        return self.finish()

    def close(self) -> None:
        if self.running is not None:  # a test failed while its child waited for a signal
            os.kill(self.running, signal.SIGKILL)
        self.process.kill()  # its exit would only spend seconds tidying up torch
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install_distribution(site, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    install_distribution(site, "tlapp-lifecycle", {"tlapp_lifecycle": TEST_PLUGINS / "tlapp_lifecycle.py"},
                         {"lifecycle": "tlapp_lifecycle"})
    forker = Forker(site, tmp_path_factory.mktemp("logs"))
    yield forker
    forker.close()


@pytest.fixture(scope="module")
def reference(forker, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    code, err = forker.run(run_dir.parent, *JOB, "--output", str(run_dir))
    assert code == 0, err
    return run_dir


def assert_checkpoints_loadable(run_dir: Path) -> None:
    for path in (run_dir / "checkpoints").glob("*.pt"):
        assert checkpoint.is_checkpoint(checkpoint.load(path)), path


def assert_same_as(reference: Path, run_dir: Path) -> None:
    for name in ("best.pt", "last.pt"):
        want = torch.load(reference / "checkpoints" / name, weights_only=True)
        got = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert got["epoch"] == want["epoch"], name
        assert want["model"].keys() == got["model"].keys()
        for key, tensor in want["model"].items():
            assert torch.equal(tensor, got["model"][key]), f"{name}: {key}"
    want, got = read_metrics(reference), read_metrics(run_dir)
    assert got["status"] == "completed"
    assert got["metrics"] == want["metrics"]
    learning = lambda m: [(h["epoch"], h["train_loss"], h["val"]) for h in m["history"]]  # noqa: E731
    assert learning(got) == learning(want)
    assert not [p.name for p in run_dir.rglob(".*") if p.name != ".tlapp"], "temporary files left behind"


def test_sigkill_mid_epoch_in_validation_and_mid_checkpoint_then_resume_is_exact(forker, reference, tmp_path):
    run_dir = tmp_path / "killed"
    args = (*JOB, "--output", str(run_dir))

    code, err = forker.run(tmp_path, *args, TLAPP_TEST_KILL="train:2:2")
    assert code == -signal.SIGKILL, err
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert_checkpoints_loadable(run_dir)

    code, err = forker.run(tmp_path, *args, "--resume", TLAPP_TEST_KILL="val:3:2")
    assert code == -signal.SIGKILL, err
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert_checkpoints_loadable(run_dir)

    code, err = forker.run(tmp_path, *args, "--resume", TLAPP_TEST_KILL="write:last.pt:3")
    assert code == -signal.SIGKILL, err
    partial = list((run_dir / "checkpoints").glob(".last.pt.*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0, "the kill should land mid-write"
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert_checkpoints_loadable(run_dir)

    code, err = forker.run(tmp_path, *args, "--resume")
    assert code == 0, err
    assert not partial[0].exists()
    assert_same_as(reference, run_dir)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, "the run never paused"
        time.sleep(0.05)


def test_ctrl_c_and_sigterm_leave_an_interrupted_run_that_resumes_exactly(forker, reference, tmp_path):
    run_dir = tmp_path / "stopped"
    args = (*JOB, "--output", str(run_dir))

    pid = forker.start(tmp_path, *args, TLAPP_TEST_PAUSE_AFTER="1", TLAPP_TEST_PAUSE_FILE=str(tmp_path / "paused-1"))
    wait_for(tmp_path / "paused-1")
    os.kill(pid, signal.SIGINT)
    code, err = forker.finish()
    assert code == 130, err
    assert "interrupted; continue with --resume" in err and "Traceback" not in err
    assert read_metrics(run_dir)["status"] == "interrupted"
    assert_checkpoints_loadable(run_dir)

    pid = forker.start(tmp_path, *args, "--resume", TLAPP_TEST_PAUSE_AFTER="2",
                       TLAPP_TEST_PAUSE_FILE=str(tmp_path / "paused-2"))
    wait_for(tmp_path / "paused-2")
    os.kill(pid, signal.SIGTERM)
    code, err = forker.finish()
    assert code == 143, err
    assert "interrupted by SIGTERM; continue with --resume" in err and "Traceback" not in err
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["epochs"] == 2
    assert "interrupted (Terminated: SIGTERM)" in (run_dir / "train.log").read_text()
    assert_checkpoints_loadable(run_dir)

    code, err = forker.run(tmp_path, *args, "--resume")
    assert code == 0, err
    assert_same_as(reference, run_dir)
