"""Helpers shared by the text plugin's tests (a uniquely named module, not a conftest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tlapp_text.task import SAMPLE_DATA
from tlcore.plugins import load_plugins
from tlcore.run import make_context, resolve_job

SAMPLE = SAMPLE_DATA


@contextmanager
def text_plugin_in(root: Path) -> Iterator[Path]:
    """Work in ``root`` with the text plugin alone loaded: what a module-scoped fixture's runs need (the
    ``monkeypatch`` fixture is per test)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("TLAPP_PLUGINS", "text")
        yield root


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("text", "label"), sep: str = ",") -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, objects: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects), encoding="utf-8")
    return path


def task_job(data: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
             train: dict[str, Any] | None = None, run_dir: Path | None = None):
    """(task, job, context) for the text task, as the engine would resolve them."""
    plugins = load_plugins("text")
    overrides: dict[str, Any] = {"data": data or {}, "train": {"device": "cpu", **(train or {})}}
    if model:
        overrides["model"] = model
    task, job = resolve_job(plugins, plugin="text", config_file=None, overrides=overrides)
    return task, job, make_context(plugins, job, run_dir)


def small_corpus(per_class: int = 6) -> list[list[str]]:
    """A few distinct texts per class (3 classes)."""
    words = {
        "billing": ["invoice", "refund", "charge", "payment", "price", "receipt", "fee", "bill"],
        "shipping": ["parcel", "delivery", "courier", "tracking", "package", "box", "address", "shipment"],
        "account": ["password", "login", "profile", "username", "email", "locked", "sign-in", "settings"],
    }
    rows = []
    for label, ws in words.items():
        for i in range(per_class):
            rows.append([f"question {i} about my {ws[i % len(ws)]} and the {ws[(i + 3) % len(ws)]}", label])
    return rows
