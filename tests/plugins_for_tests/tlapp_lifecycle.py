"""A test plugin that stops a run at a precise moment, the way a crash, ``kill -9``, Ctrl-C or a scheduler
would, so the tests can check what an interrupted run leaves behind. Installed beside ``tlapp_toy``.

Environment variables say where (epochs count from 1, batches too):

``TLAPP_TEST_KILL=train:E:B``  SIGKILL at the B-th training batch of epoch E
``TLAPP_TEST_KILL=val:E:B``    SIGKILL at the B-th validation batch of epoch E
``TLAPP_TEST_KILL=write:NAME:E``  SIGKILL while checkpoint NAME (e.g. last.pt) of epoch E is written: its
                               temporary file holds half the bytes and has not been renamed
``TLAPP_TEST_PAUSE_AFTER=E``   after epoch E, create the file ``TLAPP_TEST_PAUSE_FILE`` and wait for a signal
``TLAPP_TEST_SIGNAL_AFTER=E:NAME``  after epoch E, send itself signal NAME (e.g. SIGTERM)
``TLAPP_TEST_WARN=TEXT``       ``warnings.warn(TEXT)`` when the run starts

It also registers the task ``flaky-vectors``: the toy task, but its data must exist at ``data.path``; a
missing path is a DataError raised inside ``build_data``, after the run directory was made.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

from tlapp_toy import ToyTask

from tlcore import DataError, hookimpl

STATE = {"epoch": 1, "train": 0, "val": 0}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _count_batches(module, inputs) -> None:
    mode = "train" if module.training else "val"
    STATE[mode] += 1
    where = os.environ.get("TLAPP_TEST_KILL", "")
    if where.count(":") == 2:
        kind, epoch, batch = where.split(":")
        if kind == mode and int(epoch) == STATE["epoch"] and int(batch) == STATE[mode]:
            _die()


def _kill_during_write(name: str, epoch: int) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name and STATE["epoch"] == epoch:
            size = os.path.getsize(src)
            with open(src, "r+b") as f:
                f.truncate(size // 2)
                os.fsync(f.fileno())
            _die()
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


@hookimpl
def on_run_start(run):
    STATE.update(epoch=run.metrics.get("epochs", 0) + 1, train=0, val=0)
    run.model.register_forward_pre_hook(_count_batches)
    where = os.environ.get("TLAPP_TEST_KILL", "")
    if where.startswith("write:"):
        _, name, epoch = where.split(":")
        _kill_during_write(name, int(epoch))
    if os.environ.get("TLAPP_TEST_WARN"):
        warnings.warn(os.environ["TLAPP_TEST_WARN"], UserWarning, stacklevel=1)


@hookimpl
def on_epoch_end(run, epoch, logs):
    STATE.update(epoch=epoch + 1, train=0, val=0)
    after, _, name = os.environ.get("TLAPP_TEST_SIGNAL_AFTER", "").partition(":")
    if after == str(epoch):
        os.kill(os.getpid(), getattr(signal, name))
    if os.environ.get("TLAPP_TEST_PAUSE_AFTER") == str(epoch):
        Path(os.environ["TLAPP_TEST_PAUSE_FILE"]).write_text(f"{os.getpid()}\n")
        time.sleep(120)  # the test sends its signal now; this sleep is where it lands


class FlakyTask(ToyTask):
    name = "flaky-vectors"
    description = "the toy vectors, but only when data.path exists"

    def build_data(self, job, context, *, for_training=True):
        if job.data.path is None or not Path(job.data.path).exists():
            raise DataError(f"no dataset at {job.data.path}", where="data.path",
                            fix="pass --data with the folder of your dataset")
        return super().build_data(job, context, for_training=for_training)


@hookimpl
def register_tasks(register):
    register(FlakyTask())
