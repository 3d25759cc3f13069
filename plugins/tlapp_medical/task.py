"""DICOM classification: the medical plugin's task."""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal, cast
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch.utils.data import DataLoader

from tlcore import (MISSING, ClassicalInputs, ClassificationTask, ConfigError, Context, DataBundle, DataError, JobSpec,
                    Section, UnlabelledData, atomic_write_text, build_augmentation, image_grid, input_files,
                    predict_probabilities, predict_task_probabilities, prediction_columns, small_split_warning,
                    task_predictions, write_predictions)

from . import formats, labels
from .cache import DecodedCache
from .datasets import DicomFrames, DicomInputs, DicomViews, FrameItem
from .pixels import PixelSettings, inspect, read_dicom
from .transforms import medical_light, medical_strong

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"  # package data: ships in the wheel
# The manifest data.label_columns reads when none is named: the bundled sample has one beside its class folders.
DEFAULT_MANIFEST = "labels.csv"


class DicomData(Section):
    path: str | None = Field(None, description="folder of DICOM files, or a CSV manifest; null: sample data")
    format: str = Field("auto", description="dataset format name (see `tlapp plugins`); auto: dicom-manifest "
                                            "when a manifest is given, else dicom-folders")
    manifest: str | None = Field(None, description="CSV manifest (path,label[,patient_id][,split]) in or beside "
                                                   "path; null: none, or with label_columns "
                                                   f"{DEFAULT_MANIFEST} in path")
    label_columns: list[str] | None = Field(None, description="multi-task: the manifest's label columns, a task each "
                                                              "(an empty cell: no label for that task; see "
                                                              "model.heads); null: one task, the class folders or "
                                                              "the manifest's label column")
    label_delimiter: str = Field(";", min_length=1, description="separates labels of one file (multi-label)")
    window: str = Field("file", description="file | minmax | a preset (lung, mediastinum, bone, brain, "
                                            "soft_tissue, ...) | 'center,width'")
    frames: str | int = Field("middle", description="multi-frame files: middle | each | a frame index")
    image_size: int = Field(128, ge=16, le=2048)
    channels: Literal[1, 3] = 3
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float | None = Field(None, ge=0, lt=1, description="share of the training patients carved "
                                        "out for testing; null: 0.2, or none when the data gives its own val split")
    folds: int | None = Field(None, ge=2, description="k-fold by patient: number of folds")
    fold: int = Field(0, ge=0, description="which fold is the validation split")
    on_error: Literal["fail", "skip"] = Field("fail", description="bad files: stop before training, or skip them")
    patient_salt: str | None = Field(None, description="salt for patient keys in outputs; null: random per run")
    allow_outside_root: bool = Field(False, description="accept manifest paths and symlinks that lead outside the "
                                                        "dataset folder")

    @field_validator("window", "frames")
    @classmethod
    def _pixel_option(cls, value, info):
        # PixelSettings owns the rules for windows and frame policies; ask it, before any data is read.
        try:
            PixelSettings(**{info.field_name: value})
        except ConfigError as exc:
            raise ValueError(f"{exc.what}" + (f"; {exc.fix}" if exc.fix else "")) from None
        return value

    @field_validator("label_columns")
    @classmethod
    def _label_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or any(not name.strip() for name in value):
            raise ValueError("list the manifest's label columns (e.g. [finding, view]), or null for one task")
        if len({name.strip().lower() for name in value}) != len(value):
            raise ValueError("a label column is named twice (names are case-insensitive)")
        taken = [name for name in value if name.strip().lower() in formats.TASK_MANIFEST_COLUMNS]
        if taken:
            raise ValueError(f"{taken[0]!r} is the manifest's {taken[0].strip().lower()} column, not a label column")
        return [name.strip() for name in value]

    @model_validator(mode="after")
    def _check(self) -> DicomData:
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist with folds={self.folds}")
        # An unset test_fraction may become the default, so it counts as that here.
        test = formats.DEFAULT_TEST_FRACTION if self.test_fraction is None else self.test_fraction
        if self.val_fraction + test >= 1:
            unset = f" (test_fraction unset counts as {test:g})" if self.test_fraction is None else ""
            raise ValueError(f"val_fraction + test_fraction must leave some data for training{unset}")
        return self

    def pixel_settings(self) -> PixelSettings:
        return PixelSettings(window=self.window, frames=self.frames, size=self.image_size, channels=self.channels)


class CachedDecoder:
    """Decodes a file once per (content, settings); later reads come memory-mapped from the cache.

    Hashing a file on every read would cost more than the read, so its content key is remembered, but only
    for as long as the file's size, mtime, inode and ctime stay the same: a file replaced while the data is
    being built is hashed and decoded again instead of being served stale."""

    def __init__(self, cache: DecodedCache, settings: PixelSettings):
        self.cache, self.settings = cache, settings
        self.keys: dict[Path, tuple[tuple[int, ...], str]] = {}

    def __call__(self, path: Path):
        try:
            stat = os.stat(path)
            version = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
            known = self.keys.get(path)
            if known is None or known[0] != version:
                known = self.keys[path] = (version, DecodedCache.content_key(path))
        except OSError as exc:
            raise DataError(f"cannot read the file: {exc.strerror or exc}", where=str(path),
                            fix="check that it exists and is readable, or remove it from the dataset") from None
        return self.cache.get_or_decode(path, self.settings, read_dicom, content_key=known[1])


class DicomClassification(ClassificationTask):
    name = "dicom-classification"
    description = "classify DICOM images (folders per class or a CSV manifest), split by patient"
    DataOptions = DicomData
    supports_multitask = True  # data.label_columns: a task per manifest column (labels.py)
    negative_class_names = frozenset({"normal", "no_finding", "healthy", "negative", "benign"})
    sample_data = SAMPLE_DATA
    sample_script = "python scripts/make_medical_sample.py"
    recipe = {
        "data": {"image_size": 128, "window": "file", "frames": "middle"},
        "model": {"backbone": "efficientnet_lite0", "head": "linear", "init": "imagenet"},
        # Budget: at least 8 epochs and at least 50 optimizer steps (at most 40 epochs). The 104 training images
        # of the sample take 8 epochs of 7 steps, as before; a training set under 4 batches trains at batch
        # size images // 4, so 50 images take 10 epochs of 5 steps; 50,000 take 8. Early stopping only ends
        # the longer runs of small sets (patience 10): a validation split of a few patients has a noisy loss
        # (on the sample, scratch improves on its first epoch only at its eighth).
        "train": {"epochs": "auto", "min_steps": 50, "min_epochs": 8, "max_epochs": 40, "batch_size": 16,
                  "min_batches": 4, "lr": 0.002, "monitor": "loss", "monitor_mode": "min",
                  "early_stopping": {"patience": 10}, "schedule": {"name": "cosine", "warmup_fraction": 0.1}},
        # Race linear-probe, freeze-unfreeze and finetune, then train the winner: on few-shot cuts of the sample
        # (benchmarks/few_shot.py) no fixed strategy is best on every cut, and fine-tuning everything falls up
        # to 0.30 AUROC behind the linear probe on some. With a validation split of under 10 patients (the
        # sample's has 3) the race scores on 3 folds of the training patients instead.
        "strategy": {"name": "auto"},
        "augment": "medical-light",
    }

    # ------------------------------------------------------------ data

    def _samples(self, job: JobSpec, context: Context, warn: formats.Warn) -> list[formats.Sample]:
        root = self.data_root(job)
        manifest = job.data.manifest
        if root.is_file():
            manifest, root = str(root.absolute()), root.parent  # absolute: not joined to its own folder again
        columns = job.data.label_columns
        if columns and not manifest:
            # Label columns are a manifest's; the sample ships one beside its folders, which a folder run ignores.
            if not (root / DEFAULT_MANIFEST).is_file():
                raise DataError(f"data.label_columns names columns of a CSV manifest, and no manifest was given "
                                f"(and there is no {DEFAULT_MANIFEST} in {root})", where="data.manifest",
                                fix="set data.manifest=FILE.csv or pass the CSV as --data; or drop "
                                    "data.label_columns to label files by their class folders")
            manifest = DEFAULT_MANIFEST
        fmt = job.data.format
        if fmt == "auto":
            fmt = "dicom-manifest" if manifest else "dicom-folders"
        if columns and fmt != "dicom-manifest":
            raise ConfigError(f"data.label_columns names columns of a CSV manifest, and data.format {fmt} labels "
                              "files otherwise", where="data.format",
                              fix="set data.format=auto (or dicom-manifest) with a manifest, or drop "
                                  "data.label_columns")
        reader = context.registry.dataset_formats.get_or_fail(fmt, where="data.format").factory
        if fmt == "dicom-manifest":
            if not manifest:
                raise DataError("data.format is dicom-manifest but no manifest was given",
                                fix="set data.manifest=labels.csv or pass the CSV as --data")
            path = Path(manifest) if Path(manifest).is_absolute() else root / manifest
            tasks: dict[str, Any] = {}
            if columns:  # model.heads checked against the columns before the manifest is read
                specs = self.task_specs(job, columns)
                tasks = {"label_columns": columns, "multilabel": {t for t, spec in specs.items() if spec.multilabel}}
            return reader(path, delimiter=job.data.label_delimiter, allow_outside_root=job.data.allow_outside_root,
                          **tasks)
        return reader(root, allow_outside_root=job.data.allow_outside_root, warn=warn)

    @staticmethod
    def _write_splits(path: Path, splits: dict[str, list[formats.Sample]], salt: str | None) -> None:
        """``splits.json``: each split's files with salted patient hashes.

        The random salt is never stored (with it, guessable patient IDs could be recovered from the hashes),
        so a resumed run, whose split is the same, keeps the file it wrote first rather than re-hashing.
        """
        try:
            earlier = json.loads(path.read_text())
            files = {split: [entry["file"] for entry in items] for split, items in earlier.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            files = None
        if files == {split: [str(s.path) for s in items] for split, items in splits.items()}:
            return
        salt = salt or secrets.token_hex(16)
        listing = {split: [{"file": str(s.path), "patient": formats.patient_hash(s.patient_key, salt)}
                           for s in items] for split, items in splits.items()}
        atomic_write_text(path, json.dumps(listing, indent=1) + "\n")

    @staticmethod
    def _data_warnings(samples, splits: dict[str, list] | None = None,
                       said: dict[str, list[str]] | None = None, labels_of=None, task: str | None = None) -> list[str]:
        """Classes too small to be both learnt and measured, and splits that lack a class.

        ``said``: per split, classes already warned about (a carved split that could not be given them),
        left out here so that each fact is said once. ``labels_of`` (sample -> labels; ``Sample.labels``
        by default) and ``task`` (its name, which starts each note) for one task of a multi-task manifest."""
        labels_of = labels_of or (lambda s: s.labels)
        files: Counter[str] = Counter()
        patients: dict[str, set[str]] = defaultdict(set)
        for s in samples:
            files.update(labels_of(s))
            for label in labels_of(s):
                patients[label].add(s.patient_key)
        notes = [f"class {c!r} has {files[c]} file(s) from a single patient: they all land in one split, so the "
                 f"model cannot both learn it and be measured on it" for c in sorted(files) if len(patients[c]) < 2]
        for split, items in (splits or {}).items():
            present = {label for s in items for label in labels_of(s)}
            missing = sorted(set(files) - present - set((said or {}).get(split, ())))
            if items and missing:
                effect = "the model never sees" if split == "train" else "per-class metrics there are null for"
                notes.append(f"the {split} split has no files of class(es) {', '.join(missing)}: {effect} them")
        return [f"task {task!r}: {note}" for note in notes] if task else notes

    @classmethod
    def _task_warnings(cls, samples, splits: formats.Splits | None, job: JobSpec) -> list[str]:
        """``_data_warnings`` for one task, or for each task of a multi-task manifest (the carved splits'
        missing classes, ``splits.missed``, are of the first task: splits are stratified by it)."""
        columns = job.data.label_columns
        if not columns:
            return cls._data_warnings(samples, splits, said=splits.missed if splits else None) + \
                (splits.warnings if splits else [])
        notes = []
        for i, task in enumerate(columns):
            said = splits.missed if splits is not None and i == 0 else None
            notes += cls._data_warnings(samples, splits, said=said, labels_of=labels.labels_of(task), task=task)
        return notes + [f"task {columns[0]!r}: {w}" for w in (splits.warnings if splits else [])]

    @classmethod
    def _split_notes(cls, samples, splits: formats.Splits, job: JobSpec) -> list[str]:
        """What a run and `data check` both say about the data and its splits, each fact once."""
        notes = cls._task_warnings(samples, splits, job)
        if splits.sources["test"] == "none" and splits["val"]:
            where = "validation fold" if splits.sources["val"] == "folds" else "validation split"
            if job.data.test_fraction is None:
                cause = "the data gives its own val split but no test split, so none is carved"
                fix = "set data.test_fraction (e.g. 0.2) to carve a test split from the training patients"
            else:
                cause = "data.test_fraction is 0, so there is no test split"
                fix = "set data.test_fraction above 0 to hold patients out for testing"
            notes.append(f"{cause}: final metrics are on the {where}, which also picked the best epoch, so they "
                         f"read optimistic; {fix}")
        return notes

    def _decoder(self, job: JobSpec, context: Context) -> CachedDecoder:
        return CachedDecoder(DecodedCache(context.cache_dir / "dicom"), job.data.pixel_settings())

    def _decode_all(self, samples, decoder: CachedDecoder, job: JobSpec, context: Context, *,
                    where: Path | None = None, listing: str = "skipped_files.json"):
        """Decode every file once before training; bad files stop the run or are skipped (on_error), those
        skipped listed in the run directory's ``listing``. ``where``: the data's folder (``data.path``'s by
        default)."""
        frames: dict[Path, int] = {}
        bad: list[dict[str, str]] = []
        for s in samples:
            try:
                frames[s.path] = len(decoder(s.path))
            except DataError as exc:
                bad.append({"file": str(s.path), "reason": exc.what})
        if bad and job.data.on_error == "fail":
            listing = "\n".join(f"    {b['file']}: {b['reason']}" for b in bad[:50])
            more = f"\n    ... and {len(bad) - 50} more" if len(bad) > 50 else ""
            raise DataError(f"{len(bad)} of {len(samples)} files cannot be used:\n{listing}{more}",
                            where=str(where or self.data_root(job)),
                            fix="fix or remove these files, or skip them with --set data.on_error=skip")
        if bad and context.run_dir is not None and job.data.on_error == "skip":
            atomic_write_text(context.run_dir / listing, json.dumps(bad, indent=2) + "\n")
        if bad:
            context.log.warning("skipping %d unusable files (listed in %s)", len(bad), listing)
        return [s for s in samples if s.path in frames], frames, bad

    def _classes(self, samples, job: JobSpec) -> list[str]:
        names = sorted({label for s in samples for label in s.labels})
        if not job.model.multilabel:
            multi = [s for s in samples if len(s.labels) != 1]
            if multi:
                raise DataError(f"{len(multi)} files have {len(multi[0].labels)} labels, e.g. {multi[0].path}",
                                fix="set model.multilabel=true for several findings per image")
        if len(names) < 2 and not job.model.multilabel:
            raise DataError(f"found {len(names)} class(es) {names}; classification needs at least two",
                            where=str(self.data_root(job)), fix="add a sub-folder per class or a label column")
        return names

    def build_data(self, job: JobSpec, context: Context, *, for_training: bool = True) -> DataBundle:
        decoder = self._decoder(job, context)
        notes: list[str] = []
        samples = self._samples(job, context, notes.append)
        specs = self.task_specs(job, job.data.label_columns) if job.data.label_columns else {}
        if specs:  # classes and positive classes of every task, asked before every file is decoded
            tasks = labels.task_labels(specs, samples)
            self.check_tasks(job, tasks, [labels.targets(tasks, s) for s in samples])
        else:
            self.positive_class(job, self._classes(samples, job))
        samples, frame_counts, bad = self._decode_all(samples, decoder, job, context)
        class_names: list[str] | dict[str, list[str]]
        num_outputs: int | dict[str, int]
        if specs:
            tasks = labels.task_labels(specs, samples)  # skipped files may drop a class: checked again below
            target_of: dict[Path, Any] = {s.path: labels.targets(tasks, s) for s in samples}
            class_names = {t.name: t.class_names for t in tasks}
            num_outputs = {t.name: t.num_outputs for t in tasks}
        else:
            class_names = self._classes(samples, job)  # skipped files may drop a class: the engine checks again
            target_of = {s.path: self._target(s, class_names, job) for s in samples}
            num_outputs = len(class_names)
        if for_training:
            splits = formats.split_by_patient(samples, val_fraction=job.data.val_fraction,
                                              test_fraction=job.data.test_fraction, seed=job.train.seed,
                                              folds=job.data.folds, fold=job.data.fold)
            notes += self._split_notes(samples, splits, job)
        else:  # `tlapp evaluate`: every file is evaluated
            splits = formats.Splits({"train": [], "val": [], "test": samples},
                                    sources={"train": "none", "val": "none", "test": "all"})
        for note in notes:
            context.log.warning("data: %s", note)
        if context.run_dir is not None and for_training:
            self._write_splits(context.run_dir / "splits.json", splits, job.data.patient_salt)
        backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
        augment = build_augmentation(job, context, job.data.image_size)

        def frames(split: str):  # the samples of a split: one per frame, in dataset order
            return [(s, f) for s in splits[split] for f in range(frame_counts[s.path])]

        def dataset(split: str, transform=None) -> DicomFrames:
            items = [FrameItem(s.path, f, target_of[s.path]) for s, f in frames(split)]
            return DicomFrames(items, decoder, backbone.mean, backbone.std, transform, seed=job.train.seed)

        task_summary: dict[str, Any] = {}
        if specs and for_training:  # every task has a labelled training sample (after the split)
            task_summary["labelled_for_training"] = self.check_tasks(
                job, tasks, [target_of[s.path] for s, _ in frames("train")])

        # Bootstrap intervals resample patients, and auto's race keeps a patient's frames in one fold, since
        # one patient's frames are not independent samples. The engine only needs to tell patients apart, so
        # it gets a number per patient, never the raw key.
        number = {key: i for i, key in enumerate(dict.fromkeys(s.patient_key for s in samples))}
        groups = {split: [number[s.patient_key] for s, _ in frames(split)] for split in ("train", "val", "test")}

        summary = {
            "files": len(samples),
            "skipped_files": len(bad),
            "splits": {
                split: {"files": len(items), "frames": sum(frame_counts[s.path] for s in items),
                        "patients": len({s.patient_key for s in items}), **self._balance(items, specs)}
                for split, items in splits.items()
            },
            "split_sources": splits.sources,
            **task_summary,
            "pixels": job.data.pixel_settings().key(),
            **({"warnings": notes} if notes else {}),
        }
        return DataBundle(train=dataset("train", augment), val=dataset("val"), test=dataset("test"),
                          num_outputs=num_outputs, class_names=class_names, summary=summary,
                          groups=groups, group_unit="patient")

    def unlabelled_data(self, job: JobSpec, context: Context, path: Path, class_names: Any, *,
                        views: int = 1) -> UnlabelledData:
        """Every frame of the DICOM files under ``path`` (a folder, nested folders fine, or one file), decoded,
        augmented and normalised as the training split is, unreadable files handled by ``data.on_error`` as
        there. A file under a top-level folder named like one of the run's classes has that class's index as
        its hidden label (single-task, single-label runs only); any other file's is ``MISSING``. ``views`` 2:
        ``(weak, strong)``, the job's augmentation (``medical-light`` when it has none) and ``medical-strong``."""
        if views not in (1, 2):
            raise ConfigError(f"the medical task draws 1 or 2 views of an unlabelled frame, not {views}",
                              where=str(path), fix="ask for views=1 (domain adaptation) or views=2 (FixMatch)")
        if not path.exists():
            raise DataError(f"unlabelled data not found: {path}", where=str(path),
                            fix="check the path given to --target-data / --unlabelled-data / pretrain --data: a folder "
                                "of DICOM files (class sub-folders optional)")
        known = [] if isinstance(class_names, dict) or job.model.multilabel else list(class_names)

        def hidden(file: Path) -> tuple[str, ...]:  # the class folder the file is in, if the run knows it
            parts = file.relative_to(path).parts if path.is_dir() else ()
            return (parts[0],) if len(parts) > 1 and parts[0] in known else ()

        found = formats.find_dicom_files(path, warn=lambda note: context.log.warning("unlabelled data: %s", note))
        samples = [formats.Sample(f, hidden(f), patient_key="") for f in found]
        decoder = self._decoder(job, context)
        samples, frame_counts, bad = self._decode_all(samples, decoder, job, context, where=path,
                                                      listing="skipped_unlabelled_files.json")
        if not samples:
            what = f"none of the {len(bad)} files" if bad else "no files"
            raise DataError(f"{what} under {path} can be read as DICOM images", where=str(path),
                            fix="put the unlabelled DICOM files in this folder (flat or in sub-folders), or point "
                                "--target-data / --unlabelled-data / pretrain --data at the folder that holds them")
        items = [FrameItem(s.path, f, known.index(s.labels[0]) if s.labels else MISSING)
                 for s in samples for f in range(frame_counts[s.path])]
        backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
        size, seed = job.data.image_size, job.train.seed
        augment = build_augmentation(job, context, size)
        dataset: DicomFrames
        if views == 1:
            dataset = DicomFrames(items, decoder, backbone.mean, backbone.std, augment, seed=seed)
        else:
            hflip = bool(job.augment_options.get("hflip", False))
            dataset = DicomViews(items, decoder, backbone.mean, backbone.std, augment or medical_light(size),
                                 medical_strong(size, hflip=hflip), seed=seed)
        labelled = Counter(known[i.target] for i in items if i.target != MISSING)
        summary = {"files": len(samples), "frames": len(items), "skipped_files": len(bad),
                   "hidden_labels": bool(labelled), "pixels": job.data.pixel_settings().key(),
                   **({"classes": {c: labelled[c] for c in known if labelled[c]}} if labelled else {})}
        return UnlabelledData(dataset=dataset, summary=summary)

    @staticmethod
    def _balance(samples: Sequence[formats.Sample], specs: dict[str, Any]) -> dict[str, Any]:
        """Files per class of some samples; of a multi-task manifest per task, with the files each task has
        a label for (the others are masked out of it)."""
        if not specs:
            return {"classes": dict(Counter(label for s in samples for label in s.labels))}
        return {"classes": labels.class_counts(specs, samples), "labelled": labels.labelled_counts(specs, samples)}

    def preview(self, job: JobSpec, data: DataBundle, context: Context, batch: Any, path: Path) -> Path:
        """The batch's frames as the network gets them, normalisation undone (so what shows is the windowed,
        augmented frame), each with its label (with several label columns, each task's, ``-`` where missing)."""
        images, targets = batch
        frames = cast(DicomFrames, data.train)
        shown = (images.float().cpu() * frames.std + frames.mean).clamp(0, 1)
        if isinstance(targets, dict):  # a multi-task batch: task -> targets of every sample
            targets = [{task: t[i] for task, t in targets.items()} for i in range(len(images))]
        captions = [self.target_name(t, data.class_names) for t in targets]
        title = f"training batch as the model sees it: window {job.data.window}, augment {job.augment}"
        return image_grid(list(shown), captions, path, title=title)

    def classical_inputs(self, job: JobSpec, data: DataBundle, split: str) -> ClassicalInputs | None:
        """Raw pixels, grey and shrunk to 32x32 by area averaging, then standardised: the classic image
        baseline. The frames come from the decoded-pixel cache, without augmentation. Single-label, single-task
        only: None for multi-label and multi-task data."""
        if job.model.multilabel or isinstance(data.class_names, dict):
            return None
        from sklearn.preprocessing import StandardScaler

        def pixels(frames: DicomFrames) -> tuple[np.ndarray, list[int]]:
            rows = [torch.from_numpy(np.array(frames.load(item.path)[item.frame], dtype=np.float32)).mean(0)
                    for item in frames.items]
            shrunk = [F.adaptive_avg_pool2d(row[None, None], 32).flatten().numpy() for row in rows]
            return np.stack(shrunk) if shrunk else np.zeros((0, 32 * 32)), [int(i.target) for i in frames.items]

        train, train_targets = pixels(data.train)
        evaluated, evaluated_targets = pixels(getattr(data, split))
        return ClassicalInputs("logistic regression on 32x32 grey pixels (standardised)", StandardScaler(), train,
                               train_targets, evaluated, evaluated_targets)

    @staticmethod
    def _target(sample, class_names: list[str], job: JobSpec):
        if job.model.multilabel:
            return tuple(1.0 if c in sample.labels else 0.0 for c in class_names)
        return class_names.index(sample.labels[0])

    def fold_overrides(self, folds: int, fold: int) -> dict[str, Any]:
        """k-fold by patient: fold ``fold`` of ``folds`` is the validation split; the test split stays."""
        return {"data": {"folds": folds, "fold": fold}}

    # ------------------------------------------------------------ predictions and preflight

    def predict(self, model, job: JobSpec, class_names: list[str] | dict[str, list[str]], inputs: Sequence[str],
                context: Context, out_dir: Path) -> list[dict[str, Any]]:
        """Every frame of the input files: its predicted class (or classes) and every class's probability; for a
        multi-task run, under ``predictions`` each task's, and in the CSV a ``<task>`` and ``p_<task>_<class>``
        column each."""
        files = input_files(inputs, formats.find_dicom_files, "DICOM files")
        decoder = self._decoder(job, context)
        items, bad = [], []
        for f in files:
            try:
                items.extend(FrameItem(f, i, 0) for i in range(len(decoder(f))))
            except DataError as exc:
                bad.append(f"{f}: {exc.what}")
        if bad:
            raise DataError(f"{len(bad)} input files cannot be read:\n    " + "\n    ".join(bad[:50]),
                            fix="remove or fix them")
        backbone = context.registry.backbones.get_or_fail(job.model.backbone)
        loader = DataLoader(DicomInputs(items, decoder, backbone.mean, backbone.std),
                            batch_size=job.train.batch_size)
        specs = self.task_specs(job)
        if specs:
            found = task_predictions(specs, cast(dict[str, list[str]], class_names),
                                     predict_task_probabilities(model, loader, context.device, specs))
            records = [{"file": str(item.path), "frame": item.frame, "predictions": p} for item, p in zip(items, found)]
            rows = [{"file": r["file"], "frame": r["frame"], **prediction_columns(r["predictions"])} for r in records]
            write_predictions(records, out_dir, rows=rows, delimiter=job.data.label_delimiter)
            return records
        class_names = cast(list[str], class_names)
        probs = predict_probabilities(model, loader, context.device, job.model.multilabel)
        records = []
        for item, p in zip(items, probs.tolist()):
            if job.model.multilabel:
                predicted: Any = [c for c, v in zip(class_names, p) if v >= job.model.threshold]
            else:
                predicted = class_names[max(range(len(p)), key=p.__getitem__)]
            records.append({"file": str(item.path), "frame": item.frame, "predicted": predicted,
                            "probabilities": dict(zip(class_names, p))})
        rows = [{"file": r["file"], "frame": r["frame"], "predicted": r["predicted"],
                 **{f"p_{c}": f"{v:.6f}" for c, v in r["probabilities"].items()}} for r in records]
        write_predictions(records, out_dir, rows=rows, delimiter=job.data.label_delimiter)
        return records

    def check_data(self, job: JobSpec, context: Context) -> dict[str, Any]:
        notes: list[str] = []
        samples = self._samples(job, context, notes.append)
        specs = self.task_specs(job, job.data.label_columns) if job.data.label_columns else {}
        facts, unreadable = [], []
        frame_counts: dict[Path, int] = {}
        decoder = self._decoder(job, context)
        for s in samples:
            try:
                facts.append(inspect(s.path))
                frame_counts[s.path] = len(decoder(s.path))
            except DataError as exc:
                unreadable.append({"file": str(s.path), "reason": exc.what})
        bad_files = {u["file"] for u in unreadable}
        usable = [s for s in samples if str(s.path) not in bad_files]
        report: dict[str, Any] = {
            "root": str(self.data_root(job)),
            "files": len(samples),
            "usable_files": len(usable),
            "modalities": dict(Counter(f["modality"] or "unknown" for f in facts)),
            "image_sizes": dict(Counter(f"{f['rows']}x{f['columns']}" for f in facts)),
            "frames": dict(Counter(str(f["frames"]) for f in facts)),
            "photometric_interpretations": dict(Counter(str(f["photometric_interpretation"]) for f in facts)),
            "transfer_syntaxes": dict(Counter(str(f["transfer_syntax_name"]) for f in facts)),
            "undecodable_files": unreadable,
            **self._balance(usable, specs),
            "patients": len({s.patient_key for s in usable}),
        }
        splits = None
        try:
            splits = formats.split_by_patient(usable, val_fraction=job.data.val_fraction,
                                              test_fraction=job.data.test_fraction, seed=job.train.seed,
                                              folds=job.data.folds, fold=job.data.fold)
            report["splits"] = {k: {"files": len(v), "patients": len({s.patient_key for s in v}),
                                    **self._balance(v, specs)}
                                for k, v in splits.items()}
            report["split_sources"] = splits.sources
        except DataError as exc:
            report["splits"] = {"error": exc.what}
        report["positive_class"] = self._positive_classes(job, report["classes"], specs, notes)
        if splits is None:
            notes += self._task_warnings(usable, None, job)
        else:
            notes += self._split_notes(usable, splits, job)
            # A run hears this from the engine, which sees the built splits; a check has to say it itself.
            for split in ("val", "test"):
                items = splits[split]
                small = items and small_split_warning(
                    split, sum(frame_counts[s.path] for s in items), len({s.patient_key for s in items}), "patient",
                    min_samples=job.evaluation.min_samples, min_groups=job.evaluation.min_groups)
                if small:
                    notes.append(small)
        for note in notes:
            context.log.warning("data: %s", note)
        report["warnings"] = notes
        return report

    def _positive_classes(self, job: JobSpec, classes: dict[str, Any], specs: dict[str, Any],
                          notes: list[str]) -> str | dict[str, str | None] | None:
        """The class sensitivity and specificity are about (per task for a multi-task manifest); what a run
        would stop to ask goes into ``notes`` instead, so that a check reports it with the rest."""
        if not specs:
            try:
                return self.positive_class(job, sorted(classes))
            except ConfigError as exc:
                notes.append(f"{exc.what}; {exc.fix}")
                return None
        chosen: dict[str, str | None] = {}
        for task, spec in specs.items():
            names = sorted(classes.get(task, {}))
            try:
                chosen[task] = self.positive_class(job.model_copy(update={"model": spec}), names)
            except ConfigError as exc:
                chosen[task] = None
                notes.append(f"task {task!r}: {exc.what}; name it: --set model.heads.{task}.positive_class=NAME "
                             f"(one of: {', '.join(names)})")
        return chosen
