"""A plugin that records the run-lifecycle events it receives (core tests)."""

from tlcore import hookimpl

EVENTS: list[tuple] = []


@hookimpl
def on_run_start(run):
    EVENTS.append(("start", run.job.plugin, run.model is not None, run.directory.name))


@hookimpl
def on_epoch_end(run, epoch, logs):
    EVENTS.append(("epoch", epoch, sorted(logs)))


@hookimpl
def on_run_end(run, metrics):
    EVENTS.append(("end", metrics["status"], "accuracy" in metrics["metrics"]))
    (run.directory / "recorder-report.txt").write_text(f"{len(EVENTS)} events\n")
