"""Text classification: the text plugin's task."""

from __future__ import annotations

import html
import json
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from collections.abc import Sequence

from pydantic import Field, model_validator
from torch.utils.data import DataLoader

from tlcore import (MISSING, ClassicalInputs, ClassificationTask, ConfigError, Context, DataBundle, DataError,
                    JobSpec, Section, TaskLabels, UnlabelledData, atomic_write_text, input_files,
                    missing_class_warnings, predict_probabilities, predict_task_probabilities, prediction_columns,
                    small_split_warning, task_predictions, write_predictions)

from . import labels
from .datasets import (STRONG_RATE, Encoded, LengthGroupedBatchSampler, PadCollate, TokenizedTexts, UnlabelledTexts,
                       encode, length_stats)
from .formats import (FORMATS, SPLITS, SUFFIXES, Columns, Problem, ReadResult, Record, decode, describe,
                      did_you_mean, find_files, format_of, stratified_split)
from .models import MINILM, TextBackbone

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"  # package data: ships in the wheel
METRICS = ["accuracy", "f1_macro", "precision_per_class", "recall_per_class", "f1_per_class", "confusion_matrix",
           "auroc"]
PLAIN_SUFFIXES = {".txt", ".text", ""}
# In a folder, a .txt file is one document (the layout of 20 Newsgroups, IMDb reviews, exported tickets).
DOCUMENT_SUFFIXES = {".txt", ".text"}
PREDICT_INPUTS = "text files (.txt, .csv, .tsv, .jsonl)"


class TextData(Section):
    path: str | None = Field(None, description="a CSV/TSV/JSONL file, or a folder with train/val/test files; "
                                               "null: the bundled sample data")
    format: str = Field("auto", description="auto (from the file suffix) | csv | tsv | jsonl")
    text_column: str = Field("text", min_length=1, description="column (JSONL: field) holding the text")
    label_column: str = Field("label", min_length=1, description="column (JSONL: field) holding the label(s)")
    label_columns: list[str] | None = Field(None, description="multi-task: one task per column (JSONL: field), "
                                                              "an empty cell or absent field a missing label; "
                                                              "each task has model.head unless model.heads "
                                                              "names a head per column. null: the one "
                                                              "label_column")
    split_column: str | None = Field("split", description="column with train/val/test per row, used when present")
    label_delimiter: str = Field(";", min_length=1, description="separates labels in one cell (multi-label)")
    labels: list[str] | None = Field(None, description="the allowed labels, in output order; other labels are "
                                                       "errors. null: the labels of the training split")
    max_length: int | None = Field(None, ge=4, description="tokens per text (special tokens included); longer "
                                                           "texts are truncated and counted. null: the model's limit")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="share of each class drawn from train for "
                                                              "validation when no validation split is given")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="share of each class held out for testing when "
                                                               "the data has no splits at all")
    on_error: Literal["fail", "skip"] = Field("fail", description="bad rows: stop before training, or skip them")
    encoding: str = Field("utf-8", description="text encoding of the files")

    @model_validator(mode="after")
    def _check(self) -> TextData:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave some data for training")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("data.labels repeats a label")
        columns = self.label_columns
        if columns is not None:
            if not columns or any(not c for c in columns):
                raise ValueError("data.label_columns lists no column, or an empty name: list the label columns, "
                                 "or null for the one data.label_column")
            if len(set(columns)) != len(columns):
                raise ValueError("data.label_columns repeats a column")
            taken = [c for c in columns if c in (self.text_column, self.split_column)]
            if taken:
                raise ValueError(f"data.label_columns names {taken[0]!r}, the text or split column")
            if self.labels is not None:
                raise ValueError("data.labels fixes the classes of the one data.label_column; with "
                                 "data.label_columns each task's classes are its column's labels in the training "
                                 "split (drop data.labels)")
        return self


@dataclass
class Splits:
    """The rows of each split, where each split came from, notes on how, and the classes each carved split
    lacks."""

    parts: dict[str, list[Record]]
    sources: dict[str, str]  # per split: explicit (files, split column) | carved | none
    notes: list[str]
    missed: dict[str, list[str]]  # per carved split


@dataclass
class Prepared:
    """The data read and split, as build_data and check_data report it."""

    root: Path
    files: list[dict[str, Any]]
    parts: dict[str, list[Record]]
    problems: list[Problem]
    class_names: list[str] | dict[str, list[str]]  # by task, with label columns
    how: str  # files | column | random
    sources: dict[str, str]
    notes: list[str]
    warnings: list[str]  # rare classes, and classes a carved split lacks


class TextClassification(ClassificationTask):
    name = "text-classification"
    description = ("classify texts (CSV, TSV or JSONL; single- or multi-label) by fine-tuning a pretrained "
                   "transformer; dynamic padding, truncation counted")
    DataOptions = TextData
    supports_multitask = True  # data.label_columns: a task per label column (labels.py)
    sample_data = SAMPLE_DATA
    sample_script = "python scripts/make_text_sample.py"
    recipe = {
        "data": {"text_column": "text", "label_column": "label", "max_length": 128},
        "model": {"backbone": MINILM, "head": "linear", "init": "pretrained", "metrics": METRICS},
        # Budget: at least 36 optimizer steps, in whole epochs within [3, 20]. The 400-row sample keeps its 3
        # epochs of 13 steps; a training set under 4 batches trains at batch size rows // 4, so a few-shot
        # set (10-25 rows per class) takes 4-5 steps per epoch for 8-9 epochs, where its training loss has
        # levelled off; 50,000 rows train 3 epochs. Early stopping ends a run whose validation loss stalls.
        "train": {"epochs": "auto", "min_steps": 36, "min_epochs": 3, "max_epochs": 20, "batch_size": 32,
                  "min_batches": 4, "lr": 0.0005, "weight_decay": 0.01, "monitor": "loss", "monitor_mode": "min",
                  "early_stopping": {"patience": 3}, "clip_grad_norm": 1.0,
                  "schedule": {"name": "cosine", "warmup_fraction": 0.1}},
        # Head first, then everything at half the rate: on the sample (full, and cuts of 10 and 25 rows per
        # class, benchmarks/few_shot.py) it stays within 0.02 macro F1 of the linear probe, where fine-tuning
        # everything from the first step falls 0.03-0.07 behind it on the paraphrased test texts.
        "strategy": {"name": "freeze-unfreeze"},
        "augment": None,
    }

    # ------------------------------------------------------------ model pieces

    @staticmethod
    def _backbone(job: JobSpec, context: Context) -> TextBackbone:
        backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
        if getattr(backbone, "tokenizer", None) is None:
            raise ConfigError(f"backbone {backbone.name!r} is not a text backbone (it has no tokenizer)",
                              where="model.backbone", fix="use all-minilm-l6-v2 or hf-auto (see `tlapp plugins`)")
        return backbone

    def tokenizer(self, job: JobSpec, context: Context):
        return self._backbone(job, context).tokenizer(**job.model.backbone_options)

    @staticmethod
    def max_length(job: JobSpec, tokenizer) -> int:
        limit = int(tokenizer.model_max_length)
        wanted = job.data.max_length
        if wanted is not None and wanted > limit:
            raise ConfigError(f"data.max_length {wanted} exceeds the model's limit of {limit} tokens",
                              where="data.max_length", fix=f"use at most {limit}, or null for the limit")
        return wanted or limit

    # ------------------------------------------------------------ reading

    def _columns(self, job: JobSpec, require_labels: bool = True, split: bool = True) -> Columns:
        d = job.data
        specs = self.task_specs(job)  # by task, in the order of data.label_columns (else model.heads)
        columns = list(specs) or None
        multilabel = [c for c, spec in specs.items() if spec.multilabel]
        return Columns(text_column=d.text_column, label_column=d.label_column,
                       split_column=d.split_column if split else None,
                       label_delimiter=d.label_delimiter, multilabel=job.model.multilabel,
                       require_labels=require_labels, encoding=d.encoding, label_columns=columns,
                       multilabel_columns=multilabel)

    @staticmethod
    def _read_file(path: Path, columns: Columns, job: JobSpec, context: Context, split: str | None) -> ReadResult:
        fmt = format_of(path, job.data.format)
        reader = context.registry.dataset_formats.get_or_fail(FORMATS[fmt], where="data.format").factory
        return reader(path, file_split=split, **vars(columns))

    def _read(self, job: JobSpec, context: Context, root: Path | None = None, columns: Columns | None = None):
        """Every row of the files at ``root`` (default: ``data.path``) read with ``columns`` (default: the job's)."""
        root = self.data_root(job) if root is None else root
        source = find_files(root, job.data.format)
        columns = columns or self._columns(job)
        records: list[Record] = []
        problems: list[Problem] = []
        files = []
        has_split_column = False
        fields: dict[str, None] = {}  # every file's columns (JSONL: fields), in order
        for path, split in source.files:
            result = self._read_file(path, columns, job, context, split)
            records += result.records
            problems += result.problems
            has_split_column |= result.has_split_column and split is None
            fields.update(dict.fromkeys(result.columns))
            files.append({"file": str(path), "split": split or ("column" if result.has_split_column else None),
                          "rows": len(result.records), "bad_rows": len(result.problems)})
        for column in columns.label_columns or []:  # a table without the column failed as it was read
            if column not in fields:
                names = ", ".join(str(p) for p, _ in source.files)
                raise DataError(f"no row of {names} has the label field {column!r} of data.label_columns (fields: "
                                f"{', '.join(fields)})", where=names,
                                fix=did_you_mean(column, list(fields)) + "name the data's label fields in "
                                    "data.label_columns")
        by_file = any(split is not None for _, split in source.files)
        how = "files" if by_file else ("column" if has_split_column else "random")
        return root, files, records, problems, how

    def _split(self, records: list[Record], how: str, job: JobSpec) -> Splits:
        d, seed = job.data, job.train.seed
        columns = list(self.task_specs(job)) or None
        # Record.labels holds the first label column's labels, which carved splits are stratified by.
        by = f", classes of the first label column {columns[0]!r}" if columns else ""
        if how == "random":
            parts, missed = stratified_split(records, {"val": d.val_fraction, "test": d.test_fraction}, seed=seed)
            notes = [f"no splits given: stratified random split with seed {seed} (val {d.val_fraction:g}, "
                     f"test {d.test_fraction:g} of each class, at least one row of every class that has rows "
                     f"to spare{by})"]
            return Splits(parts, {s: "carved" for s in SPLITS}, notes, missed)
        parts = {s: [r for r in records if r.split == s] for s in SPLITS}
        sources = {s: "explicit" if parts[s] else "none" for s in SPLITS}
        notes, missed = [], {}
        if not parts["val"] and parts["train"]:
            carved, missed = stratified_split(parts["train"], {"val": d.val_fraction}, seed=seed)
            parts["train"], parts["val"] = carved["train"], carved["val"]
            sources["val"] = "carved"
            notes.append(f"no validation split given: {d.val_fraction:g} of each class drawn from train "
                         f"(seed {seed}), at least one row of every class that has rows to spare{by}")
        return Splits(parts, sources, notes, missed)

    @staticmethod
    def _no_test_note(how: str, job: JobSpec) -> str:
        """Why there is no test split, what that means for the final metrics, and how to get one."""
        if how == "files":
            fix = ("add a test file to the folder (test.csv, test.tsv or test.jsonl), or pass one file without "
                   "splits so that all three are carved (data.test_fraction)")
        elif how == "column":
            fix = (f"give some rows the value test in the {job.data.split_column!r} column, or set "
                   f"data.split_column=null so that all three splits are carved (data.test_fraction)")
        elif job.data.test_fraction == 0:
            fix = "set data.test_fraction above 0"
        else:
            fix = "add rows: no class has enough to spare one for a test split"
        return ("no test split: the final metrics are on the validation split, which also picked the best "
                f"epoch, so they are optimistic; for a held-out test split, {fix}")

    def _classes(self, parts: dict[str, list[Record]], job: JobSpec, context: Context,
                 for_training: bool) -> tuple[list[str] | dict[str, list[str]], list[tuple[Record, Problem]]]:
        """Class names (by task, with label columns), and the rows whose labels are not among them."""
        run_classes = None if for_training else (context.class_names or _run_classes(context))
        columns = list(self.task_specs(job)) or None
        if columns:
            by_task, origin = labels.task_classes(parts, columns, for_training,
                                                        run_classes if isinstance(run_classes, dict) else None)
            return by_task, labels.unknown_labels(parts, by_task, origin)
        if job.data.labels is not None:
            names, origin = list(job.data.labels), "data.labels"
        elif isinstance(run_classes, list):
            names, origin = run_classes, "the run's classes"
        elif for_training:
            names, origin = sorted({lb for r in parts["train"] for lb in r.labels}), "the training split"
        else:
            names, origin = sorted({lb for rs in parts.values() for r in rs for lb in r.labels}), "the data"
        known = set(names)
        bad = []
        for split in SPLITS:
            for r in parts.get(split, []):
                unknown = [lb for lb in r.labels if lb not in known]
                if unknown:
                    bad.append((r, Problem(r.file, r.line, f"unknown label {unknown[0]!r} (not in {origin})")))
        return names, bad

    def _prepare(self, job: JobSpec, context: Context, for_training: bool) -> Prepared:
        """Read, split and check labels; returns everything build_data and check_data report on."""
        root, files, records, problems, how = self._read(job, context)
        if for_training:
            splits = self._split(records, how, job)
        else:
            splits = Splits({"train": [], "val": [], "test": records}, {"train": "none", "val": "none",
                            "test": "explicit"}, ["evaluation data: every row is a test row"], {})
        class_names, bad_labels = self._classes(splits.parts, job, context, for_training)
        dropped = {id(r) for r, _ in bad_labels}
        problems = sorted(problems + [p for _, p in bad_labels], key=lambda p: (p.file, p.line))
        parts = {s: [r for r in rs if id(r) not in dropped] for s, rs in splits.parts.items()}
        notes, sources = list(splits.notes), dict(splits.sources)
        if for_training and not parts["test"]:
            sources["test"] = "none"
            notes.append(self._no_test_note(how, job))
        if isinstance(class_names, dict):  # carved splits are stratified by the first task's classes
            first = next(iter(class_names))
            known, about = set(class_names[first]), f"task {first!r}: "
        else:
            known, about = set(class_names), ""  # a class only bad rows hold is reported with them, not as missing
        warnings = [about + w for split, missed in splits.missed.items()
                    for w in missing_class_warnings(split, [c for c in missed if c in known], "row")]
        if for_training and isinstance(class_names, dict):
            warnings = [f"task {c!r}: {w}" for c, names in class_names.items()
                        for w in _class_warnings(Counter(labels.task_labels(
                            (r for rs in parts.values() for r in rs), c)), names)] + warnings
            warnings += labels.unlabelled_warnings(parts, list(class_names))
        elif for_training:
            warnings = _class_warnings(Counter(lb for rs in parts.values() for r in rs for lb in r.labels),
                                       class_names) + warnings
        return Prepared(root, files, parts, problems, class_names, how, sources, notes, warnings)

    # ------------------------------------------------------------ building

    def build_data(self, job: JobSpec, context: Context, *, for_training: bool = True) -> DataBundle:
        if job.augment:
            raise ConfigError(f"the text task has no augmentation pipelines (augment={job.augment!r})",
                              where="augment", fix="remove augment from the job spec")
        prepared = self._prepare(job, context, for_training)
        root, parts, problems, class_names = prepared.root, prepared.parts, prepared.problems, prepared.class_names
        self._bad_rows(problems, job, context, root)
        if problems and context.run_dir is not None and for_training:
            atomic_write_text(context.run_dir / "skipped_rows.json",
                              json.dumps([p.as_dict() for p in problems], indent=1) + "\n")
        self._check_classes(parts, class_names, job, root, for_training)
        for warning in prepared.warnings:
            context.log.warning("data: %s", warning)
        for note in prepared.notes:
            context.log.info("data: %s", note)
        targets = self._targets(job, parts, class_names, for_training)

        tokenizer, max_length, encoded, truncated = self._encode(job, context, parts)

        def texts(split: str) -> TokenizedTexts:
            return TokenizedTexts(encoded[split].ids, targets[split], sort_by_length=split != "train",
                                  texts=[r.text for r in parts[split]])

        train, val = texts("train"), texts("val")
        test = texts("test") if parts["test"] else None
        summary = {
            "source": str(root),
            "files": prepared.files,
            "split_source": prepared.how,  # files | column | random; split_sources says it per split
            "split_sources": prepared.sources,
            "notes": prepared.notes,
            "warnings": list(prepared.warnings),
            "rows": {s: len(rs) for s, rs in parts.items()},
            "skipped_rows": len(problems),
            **self._class_report(job, parts, class_names),
            "max_length": max_length,
            "truncated": {**truncated, "total": sum(truncated.values())},
            "tokens": {s: length_stats(e.lengths) for s, e in encoded.items()},
            "padding": "dynamic (each batch padded to its longest text); training batches grouped by length; "
                       "val/test served shortest first",
        }
        num_outputs: int | dict[str, int] = ({c: len(names) for c, names in class_names.items()}
                                             if isinstance(class_names, dict) else len(class_names))
        return DataBundle(train=train, val=val, test=test, num_outputs=num_outputs,
                          class_names=class_names, collate_fn=PadCollate(tokenizer.pad_token_id), summary=summary,
                          batch_sampler=length_grouped)

    @staticmethod
    def _bad_rows(problems: list[Problem], job: JobSpec, context: Context, root: Path) -> None:
        """Bad rows stop the run (``data.on_error: fail``), or are skipped with a warning."""
        if problems and job.data.on_error == "fail":
            raise DataError(f"{len(problems)} bad row(s) in the data:\n{describe(problems)}", where=str(root),
                            fix="correct or remove these rows, or skip them with --set data.on_error=skip")
        if problems:
            context.log.warning("skipping %d bad row(s):\n%s", len(problems), describe(problems, 10))

    def _encode(self, job: JobSpec, context: Context, parts: dict[str, list[Record]]):
        """The tokenizer, the token limit, each part's token ids, and how many texts of each were truncated."""
        tokenizer = self.tokenizer(job, context)
        max_length = self.max_length(job, tokenizer)
        encoded = {s: encode(tokenizer, [r.text for r in rs], max_length) for s, rs in parts.items()}
        truncated = {s: sum(e.truncated) for s, e in encoded.items()}
        if sum(truncated.values()):
            context.log.warning("%d text(s) longer than %d tokens were truncated (%s)", sum(truncated.values()),
                                max_length, ", ".join(f"{s} {n}" for s, n in truncated.items() if n))
        return tokenizer, max_length, encoded, truncated

    # ------------------------------------------------------------ unlabelled data

    def unlabelled_data(self, job: JobSpec, context: Context, path: Path, class_names: Any, *,
                        views: int = 1) -> UnlabelledData:
        """The texts at ``path`` (a CSV/TSV/JSONL file, or a folder read as ``--data`` reads one: its
        train/val/test files all together, or its one data file), tokenised as training texts are. A row's hidden
        label is its class index when the file has ``data.label_column`` and the row's label is one of the run's
        classes (single-label, one task); otherwise ``MISSING``. ``views`` 2 adds a strong view (``UnlabelledTexts``).
        """
        flag = ("--unlabelled-data" if job.semi.method != "none" else
                "--data" if job.pretrain.method != "none" else "--target-data")
        if views not in (1, 2):
            raise ConfigError(f"the text task serves one or two views of an unlabelled text, not {views}",
                              where=str(path), fix="use a method that asks for one (weak) or two (weak, strong)")
        if not path.exists():
            raise DataError(f"unlabelled data not found: {path}", where=str(path),
                            fix=f"pass {flag} an existing CSV, TSV or JSONL file (a {job.data.text_column!r} column), "
                                "or a folder of them")
        single = isinstance(class_names, list) and not job.model.multilabel
        # The label column read as multi-label, so that a cell of several labels only leaves the text without a
        # hidden label; the split column is not read (every row is unlabelled data).
        columns = replace(self._columns(job, require_labels=False, split=False), label_columns=None,
                          multilabel=True, multilabel_columns=[])
        root, files, records, problems, _ = self._read(job, context, path, columns)
        self._bad_rows(problems, job, context, root)
        if not records:
            raise DataError(f"no text rows in {root}", where=str(root),
                            fix=f"pass {flag} a file with a {job.data.text_column!r} column and one text per row "
                                "(data.text_column names another column)")
        index = {name: i for i, name in enumerate(class_names)} if single else {}
        hidden = [index[r.labels[0]] if len(r.labels) == 1 and r.labels[0] in index else MISSING for r in records]
        tokenizer, max_length, encoded, truncated = self._encode(job, context, {"texts": records})
        mask_id = getattr(tokenizer, "mask_token_id", None)
        dataset = UnlabelledTexts(encoded["texts"].ids, hidden, views=views, seed=job.train.seed, mask_id=mask_id,
                                  special_ids=tokenizer.all_special_ids)
        counts = Counter(h for h in hidden if h != MISSING)
        summary: dict[str, Any] = {
            "source": str(root), "files": files, "rows": len(records), "skipped_rows": len(problems),
            "hidden_labels": {"column": job.data.label_column, "found": bool(counts),
                              "classes": {name: counts[i] for name, i in index.items()} if counts else {},
                              "missing": len(hidden) - sum(counts.values())},
            "max_length": max_length, "truncated": truncated["texts"], "tokens": length_stats(encoded["texts"].lengths),
            "views": views,
        }
        if views == 2:
            summary["strong_view"] = (f"{STRONG_RATE:.0%} of each text's ordinary tokens "
                                      + (f"masked with {tokenizer.mask_token}" if mask_id is not None else "dropped")
                                      + ", drawn per (seed, epoch, text)")
        context.log.info("unlabelled data %s: %d text(s), %d with a hidden label", root, len(records),
                         sum(counts.values()))
        return UnlabelledData(dataset, collate_fn=PadCollate(tokenizer.pad_token_id), summary=summary)

    def _tasks(self, job: JobSpec, class_names: dict[str, list[str]]) -> list[TaskLabels]:
        specs = self.task_specs(job, list(class_names))
        return [TaskLabels(c, names, specs[c].multilabel) for c, names in class_names.items()]

    def _targets(self, job: JobSpec, parts: dict[str, list[Record]], class_names: list[str] | dict[str, list[str]],
                 for_training: bool) -> dict[str, list[Any]]:
        """Each split's targets: a class index, a multi-hot tuple (multi-label), or by task a dict of tensors
        (label columns), after checking that every task can be trained."""
        if isinstance(class_names, dict):
            tasks = self._tasks(job, class_names)
            targets = {s: labels.targets(rs, tasks) for s, rs in parts.items()}
            if for_training:  # classes enough and a labelled training row per task, positive classes known
                self.check_tasks(job, tasks, targets["train"])
            return targets
        names = class_names
        if job.model.multilabel:
            return {s: [tuple(1.0 if c in r.labels else 0.0 for c in names) for r in rs] for s, rs in parts.items()}
        return {s: [names.index(r.labels[0]) for r in rs] for s, rs in parts.items()}

    def _class_report(self, job: JobSpec, parts: dict[str, list[Record]],
                      class_names: list[str] | dict[str, list[str]]) -> dict[str, Any]:
        """The class balance of the data summary: rows per class and split; with label columns per task, and
        how many rows of each split are labelled for each task (the others are masked out of it)."""
        if not isinstance(class_names, dict):
            return {"classes": {s: _label_counts(rs) for s, rs in parts.items()}, "multilabel": job.model.multilabel}
        columns = list(class_names)
        specs = self.task_specs(job, columns)
        return {"classes": {s: labels.label_counts(rs, columns) for s, rs in parts.items()},
                "label_columns": columns,
                "labelled": {s: labels.labelled_counts(rs, columns) for s, rs in parts.items()},
                "multilabel": {c: spec.multilabel for c, spec in specs.items()}}

    def preview(self, job: JobSpec, data: DataBundle, context: Context, batch: Any, path: Path) -> Path:
        """The batch's texts as the encoder gets them: its tokens decoded back, special tokens and truncation
        included, each with its label, in an HTML table."""
        inputs, targets = batch
        tokenizer = self.tokenizer(job, context)
        if isinstance(targets, dict):  # multi-task: per text, its target by task
            targets = [{task: t[i] for task, t in targets.items()} for i in range(len(inputs["input_ids"]))]
        rows = []
        for ids, mask, target in zip(inputs["input_ids"], inputs["attention_mask"], targets):
            kept = ids[mask.bool()]
            label = self.target_name(target, data.class_names)
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{len(kept)}</td>"
                        f"<td>{html.escape(tokenizer.decode(kept.tolist()))}</td></tr>")
        out = path.with_suffix(".html")
        atomic_write_text(out, "<!doctype html><meta charset=utf-8><title>training batch</title>"
                               "<style>td{border:1px solid #ccc;padding:2px 6px;font:13px sans-serif}</style>"
                               f"<p>A training batch as the model sees it (max_length {job.data.max_length}).</p>"
                               "<table><tr><th>label</th><th>tokens</th><th>text, decoded from its tokens</th></tr>"
                               + "".join(rows) + "</table>\n")
        return out

    def classical_inputs(self, job: JobSpec, data: DataBundle, split: str) -> ClassicalInputs | None:
        """TF-IDF of words and word pairs (sublinear term frequencies), the classic text baseline; single-label
        and one task only."""
        if job.model.multilabel or isinstance(data.class_names, dict):
            return None
        from sklearn.feature_extraction.text import TfidfVectorizer

        train, evaluated = data.train, getattr(data, split)
        return ClassicalInputs("logistic regression on TF-IDF of words and word pairs",
                               TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), train.texts, train.targets,
                               evaluated.texts, evaluated.targets)

    @staticmethod
    def _check_classes(parts: dict[str, list[Record]], class_names: list[str] | dict[str, list[str]], job: JobSpec,
                       root: Path, for_training: bool) -> None:
        """Rows enough in each split, and for one task classes enough (``check_tasks`` checks every task's)."""
        if for_training and not parts["train"]:
            raise DataError("no usable training rows", where=str(root), fix="check data.path and the columns")
        if for_training and not parts["val"]:
            raise DataError("no validation rows: the data is too small to draw a validation split from",
                            where=str(root), fix="add a val file or split column, or raise data.val_fraction")
        if not for_training and not parts["test"]:
            raise DataError("no usable rows to evaluate", where=str(root))
        if isinstance(class_names, dict):
            return
        if not job.model.multilabel and len(class_names) < 2:
            raise DataError(f"found {len(class_names)} class(es) {class_names}; classification needs at least two",
                            where=str(root), fix="check data.label_column")
        if for_training:
            seen = {lb for r in parts["train"] for lb in r.labels}
            unseen = [c for c in class_names if c not in seen]
            if unseen and not job.model.multilabel:
                raise DataError(f"class(es) {unseen} of data.labels have no training rows", where=str(root),
                                fix="add training rows for them, or remove them from data.labels")

    # ------------------------------------------------------------ predictions

    def _prediction_inputs(self, job: JobSpec, context: Context, inputs: Sequence[str]) -> list[tuple[str, str]]:
        """(source, text) for every text in the inputs: '-' is stdin, files are read per their suffix."""
        items: list[tuple[str, str]] = []
        problems: list[Problem] = []
        columns = self._columns(job, require_labels=False, split=False)
        for raw in inputs:
            if raw == "-":
                items += _lines("<stdin>", sys.stdin.read())
                continue
            in_folder = Path(raw).is_dir()
            for path in input_files([raw], _folder_inputs, PREDICT_INPUTS):
                if in_folder and path.suffix.lower() in DOCUMENT_SUFFIXES:
                    text = decode(path, job.data.encoding).strip()
                    if text:
                        items.append((str(path), text))
                    else:
                        problems.append(Problem(str(path), 1, "empty document"))
                elif path.suffix.lower() in PLAIN_SUFFIXES:
                    items += _lines(str(path), decode(path, job.data.encoding))
                else:
                    result = self._read_file(path, columns, job, context, None)
                    problems += result.problems
                    items += [(r.where, r.text) for r in result.records]
        if problems:
            raise DataError(f"{len(problems)} bad input row(s):\n{describe(problems)}",
                            fix="correct or remove these rows")
        if not items:
            raise DataError("no texts to predict", fix="the inputs hold only blank lines")
        return items

    def predict(self, model, job: JobSpec, class_names: list[str] | dict[str, list[str]], inputs: Sequence[str],
                context: Context, out_dir: Path) -> list[dict[str, Any]]:
        """Per text: ``predicted`` and every class's probability, or for a multi-task run ``predictions`` by
        task (the CSV: a ``<task>`` and ``p_<task>_<class>`` columns per task)."""
        items = self._prediction_inputs(job, context, inputs)
        tokenizer = self.tokenizer(job, context)
        encoded: Encoded = encode(tokenizer, [text for _, text in items], self.max_length(job, tokenizer))
        if any(encoded.truncated):
            context.log.warning("%d text(s) longer than %d tokens were truncated", sum(encoded.truncated),
                                encoded.max_length)
        dataset = TokenizedTexts(encoded.ids, sort_by_length=True)
        loader = DataLoader(dataset, batch_size=job.train.batch_size, collate_fn=PadCollate(tokenizer.pad_token_id))
        specs = self.task_specs(job)
        if isinstance(class_names, dict) and specs:
            found = task_predictions(specs, class_names,
                                     predict_task_probabilities(model, loader, context.device, specs))
            in_order = dict(zip(dataset.order, found))
            records = [{"source": source, "text": text, "predictions": in_order[i], "truncated": encoded.truncated[i]}
                       for i, (source, text) in enumerate(items)]
            rows = [{"source": r["source"], "text": r["text"], **prediction_columns(r["predictions"]),
                     "truncated": r["truncated"]} for r in records]
            write_predictions(records, out_dir, rows=rows, delimiter=job.data.label_delimiter)
            return records
        if isinstance(class_names, dict):
            raise ConfigError(f"the run learnt the tasks {', '.join(class_names)}, and its job declares none",
                              where="data.label_columns",
                              fix="predict with the run's own config.yaml (data.label_columns or model.heads)")
        probs = predict_probabilities(model, loader, context.device, job.model.multilabel).tolist()
        by_position = dict(zip(dataset.order, probs))
        records = []
        for i, (source, text) in enumerate(items):
            p = by_position[i]
            if job.model.multilabel:
                predicted: Any = [c for c, v in zip(class_names, p) if v >= job.model.threshold]
            else:
                predicted = class_names[max(range(len(p)), key=p.__getitem__)]
            records.append({"source": source, "text": text, "predicted": predicted,
                            "probabilities": dict(zip(class_names, p)), "truncated": encoded.truncated[i]})
        rows = [{"source": r["source"], "text": r["text"], "predicted": r["predicted"],
                 **{f"p_{c}": f"{v:.6f}" for c, v in r["probabilities"].items()}, "truncated": r["truncated"]}
                for r in records]
        write_predictions(records, out_dir, rows=rows, delimiter=job.data.label_delimiter)
        return records

    # ------------------------------------------------------------ preflight

    def check_data(self, job: JobSpec, context: Context) -> dict[str, Any]:
        prepared = self._prepare(job, context, for_training=True)
        root, parts, problems, class_names = prepared.root, prepared.parts, prepared.problems, prepared.class_names
        report: dict[str, Any] = {
            "source": str(root),
            "files": prepared.files,
            "split_source": prepared.how,
            "split_sources": prepared.sources,
            "notes": prepared.notes,
            "rows": {s: len(rs) for s, rs in parts.items()},
            "classes": class_names,
            **self._check_report(job, parts, class_names),
            "bad_rows": len(problems),
            "empty_texts": sum(1 for p in problems if p.reason == "empty text"),
            "problems": [str(p) for p in problems[:200]],
            "characters": {s: length_stats([len(r.text) for r in rs]) for s, rs in parts.items()},
        }
        try:
            self._check_classes(parts, class_names, job, root, for_training=True)
            if isinstance(class_names, dict):  # every task's classes and labelled training rows
                self._targets(job, parts, class_names, for_training=True)
        except DataError as exc:
            report["error"] = exc.what
        small = [small_split_warning(split, len(parts[split]), None, "row", min_samples=job.evaluation.min_samples,
                                     min_groups=job.evaluation.min_groups) for split in ("val", "test") if parts[split]]
        report["warnings"] = prepared.warnings + [w for w in small if w is not None]
        try:
            tokenizer = self.tokenizer(job, context)
            max_length = self.max_length(job, tokenizer)
        except (DataError, ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001 - the report is still useful without token counts
            report["tokens"] = f"unavailable: {getattr(exc, 'what', exc)}"
            return report
        encoded = {s: encode(tokenizer, [r.text for r in rs], max_length) for s, rs in parts.items()}
        report["max_length"] = max_length
        report["tokens"] = {s: length_stats(e.lengths) for s, e in encoded.items()}
        truncated = {s: sum(e.truncated) for s, e in encoded.items()}
        report["truncated"] = {**truncated, "total": sum(truncated.values())}
        return report

    def _check_report(self, job: JobSpec, parts: dict[str, list[Record]],
                      class_names: list[str] | dict[str, list[str]]) -> dict[str, Any]:
        """``data check``'s class balance: ``class_counts`` per split (and task), ``labelled`` per split and task
        with label columns, and ``multilabel``."""
        report = self._class_report(job, parts, class_names)
        return {"class_counts": report.pop("classes"), **report}


def length_grouped(dataset: TokenizedTexts, batch_size: int, generator) -> LengthGroupedBatchSampler:
    """The engine's hook for training batches: texts of similar length together."""
    return LengthGroupedBatchSampler(dataset.lengths, batch_size, generator)


def _class_warnings(counts: Counter[str], class_names: list[str]) -> list[str]:
    """Classes too rare to learn or to measure (``counts``: rows per class over every split), which training
    would otherwise pass over in silence."""
    out = []
    absent = [c for c in class_names if not counts[c]]
    if absent:
        out.append(f"class(es) {absent} of data.labels have no examples at all")
    single = [c for c in class_names if counts[c] == 1]
    if single:
        out.append(f"class(es) {single} have a single example: too few to learn from, and never in both the "
                   "training and the validation split")
    return out


def _folder_inputs(folder: Path) -> list[Path]:
    """Documents (.txt, one per file) and tables (CSV/TSV/JSONL) anywhere under ``folder``; hidden ones left out."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and (p.suffix.lower() in DOCUMENT_SUFFIXES or p.suffix.lower() in SUFFIXES))


def _label_counts(records: list[Record]) -> dict[str, int]:
    return dict(sorted(Counter(lb for r in records for lb in r.labels).items()))


def _lines(source: str, text: str) -> list[tuple[str, str]]:
    return [(f"{source}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _run_classes(context: Context) -> list[str] | dict[str, list[str]] | None:
    """The class names of the run being evaluated (``tlapp evaluate --data``), from its metrics.json: a list,
    or by task for a multi-task run."""
    if context.run_dir is None:
        return None
    path = Path(context.run_dir) / "metrics.json"
    try:
        names = json.loads(path.read_text()).get("class_names")
    except (OSError, ValueError):
        return None
    if isinstance(names, dict) and names and all(isinstance(v, list) for v in names.values()):
        return {str(k): list(v) for k, v in names.items()}
    return list(names) if isinstance(names, list) and names else None
