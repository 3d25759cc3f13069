"""2D object detection on road scenes: the driving plugin's task."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes
from pydantic import Field, model_validator
from torch import nn
from torch.utils.data import DataLoader

from tlcore import (ConfigError, Context, DataBundle, DataError, JobSpec, ModelSpec, Section, Task,
                    atomic_write_text, build_augmentation, image_grid, input_files, missing_class_warnings,
                    small_split_warning, take_covering, write_predictions)

from .datasets import DetectionDataset, ImageFiles, aspect_ratio_batches, collate
from .formats import IMAGE_SUFFIXES, DetectionSet, ImageRecord, checked_image_size
from .metrics import SCALARS, DetectionEvaluator
from .models import BUILDERS, LITE0_ENTRY, DetectionModel, DetectorOptions

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"  # package data: ships in the wheel
PALETTE = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55"]


class DrivingData(Section):
    path: str | None = Field(None, description="KITTI folder (image_2/ + label_2/) or COCO JSON (file or folder); "
                                               "null: the bundled sample")
    format: str = Field("auto", description="auto | kitti | coco (or another registered detection format)")
    classes: list[str] | None = Field(None, description="classes to detect, in label order; null: KITTI's Car, Van, "
                                                         "Truck, Pedestrian, Cyclist, or the COCO file's categories")
    class_map: dict[str, str | None] = Field(default_factory=dict,
                                             description="rename source types before matching classes, e.g. "
                                                         "{Person_sitting: Pedestrian}; null drops a type")
    strict: bool = Field(False, description="fail on degenerate boxes (naming file and line) instead of dropping")
    on_error: Literal["fail", "skip"] = Field("fail", description="unusable images (undecodable, bad label lines, "
                                                                  "bad annotations): stop before training, or "
                                                                  "leave them out")
    allow_outside_root: bool = Field(False, description="COCO: let file_name lead outside the image folder "
                                                        "(.., absolute paths, symlinks)")
    images: str | None = Field(None, description="COCO: image folder for file_name (default images/ beside the JSON)")
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    group_aspect_ratio: bool = Field(True, description="batch training images of similar width/height together")

    @model_validator(mode="after")
    def _check(self) -> DrivingData:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave images for training")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)):
            raise ValueError("classes must be a non-empty list of distinct names")
        return self


class DetectorSpec(ModelSpec):
    backbone: str = Field("fasterrcnn_lite0_fpn",
                          description="fasterrcnn_lite0_fpn | fasterrcnn_mobilenet_v3_large_fpn "
                                                              "| fasterrcnn_resnet50_fpn_v2")
    head: Literal["faster_rcnn"] = "faster_rcnn"
    init: str = Field("imagenet", description="imagenet | coco (torchvision detectors) | file:PATH | run:DIR | none")
    trainable_backbone_layers: int | None = Field(None, ge=0, description="backbone stages (from the top) that may "
                                                  "train; the rest stay fixed; null: the backbone's default")
    frozen_bn: bool = Field(True, description="pretrained backbones: freeze batch-norm statistics and affine")
    anchor_sizes: list[list[int]] | None = Field(None, description="anchor sizes (pixels) per feature level")
    aspect_ratios: list[float] | None = Field(None, description="anchor height/width ratios, default [0.5, 1, 2]")
    min_size: int | None = Field(None, ge=16, description="rescale images to this short side; null: keep their size")
    max_size: int = Field(1333, ge=16, description="cap on the long side after rescaling")
    fpn_channels: int | None = Field(None, ge=8, description="fasterrcnn_lite0_fpn: pyramid width (default 128)")
    box_head_size: int | None = Field(None, ge=8, description="fasterrcnn_lite0_fpn: box head width (default 256)")
    rpn_batch_size_per_image: int = Field(256, ge=1, description="anchors sampled per image for the RPN loss")
    roi_batch_size_per_image: int = Field(512, ge=1, description="proposals sampled per image for the box loss")
    proposals_train: int = Field(2000, ge=1, description="RPN proposals kept per image in training")
    proposals_test: int = Field(1000, ge=1, description="RPN proposals kept per image in evaluation/prediction")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="detections below this score are dropped")
    nms_threshold: float = Field(0.5, gt=0, le=1)
    detections_per_image: int = Field(100, ge=1)
    draw_threshold: float = Field(0.5, ge=0, le=1, description="predict: draw detections at or above this score")

    def detector_options(self) -> dict[str, Any]:
        fields = set(DetectorOptions.__dataclass_fields__) - {"num_classes", "pretrained"}
        return {k: getattr(self, k) for k in fields}


@dataclass
class Splits:
    """The records of each split, where each split came from (``explicit``: the dataset's own, ``carved``: cut
    at random here, ``none``), and warnings about what a split lacks."""

    records: dict[str, list[ImageRecord]]
    sources: dict[str, str]
    warnings: list[str] = field(default_factory=list)


class DrivingDetection(Task):
    name = "detection"
    description = "2D object detection (Faster R-CNN) on road scenes: KITTI or COCO data, COCO mAP"
    DataOptions = DrivingData
    ModelOptions = DetectorSpec
    sample_data = SAMPLE_DATA
    sample_script = "python scripts/make_driving_sample.py"
    recipe = {
        "data": {"val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"backbone": "fasterrcnn_lite0_fpn", "init": "imagenet", "min_size": None,
                  "rpn_batch_size_per_image": 128, "roi_batch_size_per_image": 128,
                  "proposals_train": 300, "proposals_test": 150},
        # Budget: at least 12 epochs (the 1x detection schedule, what a large set trains) and at least 360
        # optimizer steps (at most 50 epochs): the sample's 60 training images take 12 epochs of 30 steps, as
        # before, and a smaller set trains longer, 20 images 36 epochs, so that it sees as many images as the
        # sample. Batch size 2 stays (no min_batches). Early stopping when map_50 has not improved for 5 epochs.
        "train": {"epochs": "auto", "min_steps": 360, "min_epochs": 12, "max_epochs": 50, "batch_size": 2,
                  "lr": 0.0005, "weight_decay": 0.0001, "monitor": "map_50", "monitor_mode": "max",
                  "early_stopping": {"patience": 5}, "schedule": {"name": "cosine", "warmup_fraction": 0.1},
                  "clip_grad_norm": 5.0},
        "strategy": {"name": "finetune", "layer_decay": None},
        "augment": "road-light",
    }

    # ------------------------------------------------------------ data

    @staticmethod
    def _format(root: Path, fmt: str) -> str:
        if fmt != "auto":
            return fmt
        if root.is_file():
            if root.suffix.lower() == ".json":
                return "coco"
            raise DataError(f"cannot tell the dataset format of {root}", where="data.path",
                            fix="pass a KITTI folder or a COCO .json, or set data.format")
        kitti = [root / "image_2", root / "training" / "image_2"] + [root / s / "image_2" for s in ("train", "val")]
        if any(p.is_dir() for p in kitti):
            return "kitti"
        if any(root.glob("*.json")) or any((root / "annotations").glob("*.json")):
            return "coco"
        raise DataError(f"{root} holds neither KITTI (image_2/, label_2/) nor COCO (*.json) data", where="data.path",
                        fix="point data.path at the dataset folder, or set data.format")

    def read(self, job: JobSpec, context: Context, *, collect: bool = False) -> DetectionSet:
        """Index the dataset through the registered format reader."""
        root = self.data_root(job)
        fmt = self._format(root, job.data.format)
        reader = context.registry.dataset_formats.get_or_fail(fmt, where="data.format").factory
        options: dict[str, Any] = {"classes": job.data.classes, "class_map": job.data.class_map,
                                   "strict": job.data.strict, "collect": collect}
        if job.data.images is not None:
            options["images"] = job.data.images
        # Only when set, so that formats from other plugins without these options keep working by default.
        if job.data.on_error != "fail":
            options["on_error"] = job.data.on_error
        if job.data.allow_outside_root:
            options["allow_outside_root"] = True
        try:
            data = reader(root, **options)
        except TypeError as exc:
            raise ConfigError(f"dataset format {fmt!r} does not take these data options: {exc}",
                              where="data") from None
        return data

    def _log_read(self, data: DetectionSet, context: Context) -> None:
        r = data.report
        if r.skipped:
            context.log.warning("left out %d unusable image(s) (data.on_error=skip):\n%s", len(r.skipped),
                                "\n".join(f"    {s['reason']}" for s in r.skipped[:10])
                                + (f"\n    ... and {len(r.skipped) - 10} more" if len(r.skipped) > 10 else ""))
        for warning in _warnings(data):
            context.log.warning("%s", warning)
        if 0 < r.empty_images < r.images:
            context.log.info("%d of %d images have no boxes of the classes: kept as negatives", r.empty_images,
                             r.images)
        if r.degenerate:
            context.log.warning("dropped %d degenerate boxes (zero or negative width or height), e.g. %s; "
                                "set data.strict=true to stop on them instead", len(r.degenerate),
                                ", ".join(r.degenerate[:3]))
        if r.clipped:
            context.log.info("clipped %d boxes reaching outside their image", r.clipped)
        if r.ignore_regions:
            context.log.info("%d DontCare/crowd regions: not trained on; in evaluation detections inside them "
                             "count neither as hits nor as false positives", r.ignore_regions)
        if r.ignored_types:
            context.log.info("ignored object types outside the classes: %s", dict(r.ignored_types))

    @staticmethod
    def _split(records: list[ImageRecord], job: JobSpec, for_training: bool) -> Splits:
        """The train/val/test records, where each came from, and warnings about what they lack.

        Fixed splits (KITTI train/ val/ test/, COCO train.json val.json test.json) are kept as given. Otherwise
        test, then val, are carved from a permutation seeded by ``train.seed``, each keeping every class with
        boxes in at least two of the images it is carved from (``tlcore.take_covering``), so that its
        per-class AP is defined while training keeps the class too."""
        if not for_training:
            return Splits({"train": [], "val": [], "test": records}, {"train": "none", "val": "none",
                                                                       "test": "explicit"})
        if any(r.split is not None for r in records):
            splits = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
            if not splits["train"] or not splits["val"]:
                raise DataError("fixed splits need train/ and val/ (KITTI) or train.json and val.json (COCO)",
                                where=str(records[0].path.parent), fix="add a validation split")
            sources = {"train": "explicit", "val": "explicit", "test": "explicit" if splits["test"] else "none"}
            warnings = [] if splits["test"] else [
                "no test split given: final metrics are on the validation split, which also picked the best "
                "epoch (add test/ (KITTI) or test.json (COCO) for an unbiased estimate)"]
            return Splits(splits, sources, warnings)
        n = len(records)
        order = np.random.RandomState(job.train.seed).permutation(n).tolist()
        n_test = int(round(n * job.data.test_fraction))
        n_val = max(1, int(round(n * job.data.val_fraction)))
        if n - n_test - n_val < 1:
            raise DataError(f"{n} images are too few to split into train, val and test", where="data.path",
                            fix="add images, or lower data.val_fraction / data.test_fraction")
        labels = {i: set(records[i].classes) for i in order}
        images_of = Counter(c for i in order for c in labels[i])
        keepable = {c for c, count in images_of.items() if count >= 2}
        test, _ = take_covering(order, labels, n_test)
        in_test = set(test)
        val, _ = take_covering([i for i in order if i not in in_test], labels, n_val)
        carved = set(test) | set(val)
        pick = lambda idx: [records[i] for i in sorted(idx)]  # noqa: E731
        splits = {"train": pick(i for i in order if i not in carved), "val": pick(val), "test": pick(test)}
        warnings = []
        for name in ("test", "val") if n_test else ("val",):
            # take_covering's misses, and for val also each class whose second image went to test: too few are
            # left to give val one and keep one for training.
            held = {c for r in splits[name] for c in r.classes}
            warnings += missing_class_warnings(name, keepable - held, "image")
        if not n_test:
            warnings.append("no test split (data.test_fraction is 0): final metrics are on the validation split, "
                            "which also picked the best epoch")
        return Splits(splits, {"train": "carved", "val": "carved", "test": "carved" if n_test else "none"}, warnings)

    def build_data(self, job: JobSpec, context: Context, *, for_training: bool = True) -> DataBundle:
        data = self.read(job, context)
        self._log_read(data, context)
        parts = self._split(data.records, job, for_training)
        splits = parts.records
        for warning in parts.warnings:
            context.log.warning("%s", warning)
        if for_training:
            trained = {c for r in splits["train"] for c in r.classes} | set(data.report.classes_without_objects)
            elsewhere = [c for c in data.classes if c not in trained]
            if elsewhere:
                context.log.warning("class(es) %s have boxes only in val/test, none in the training split",
                                    elsewhere)
        if context.run_dir is not None and for_training:
            listing = {s: [str(r.path) for r in items] for s, items in splits.items()}
            atomic_write_text(context.run_dir / "splits.json", json.dumps(listing, indent=1) + "\n")
            if data.report.skipped:
                atomic_write_text(context.run_dir / "skipped_files.json",
                                  json.dumps(data.report.skipped, indent=1) + "\n")
        augment = None
        if for_training and splits["train"]:
            typical_height = int(statistics.median(r.height for r in splits["train"]))
            augment = build_augmentation(job, context, typical_height)
        classes = data.classes
        make = lambda items, t=None: DetectionDataset(items, classes, t, seed=job.train.seed)  # noqa: E731
        summary = {
            "format": data.format,
            "classes": classes,
            "read": data.report.as_dict(),
            "splits": {s: {"images": len(items), "empty_images": sum(1 for r in items if not r.boxes),
                           "objects_per_class": dict(Counter(c for r in items for c in r.classes))}
                       for s, items in splits.items()},
            "split_sources": parts.sources,
            "ignore_regions": "DontCare/crowd regions are not trained on; evaluation ignores detections inside them",
        }
        if parts.warnings:
            summary["warnings"] = list(parts.warnings)
        return DataBundle(train=make(splits["train"], augment), val=make(splits["val"]), test=make(splits["test"]),
                          num_outputs=len(classes), class_names=list(classes), collate_fn=collate, summary=summary,
                          batch_sampler=aspect_ratio_batches if job.data.group_aspect_ratio else None)

    # ------------------------------------------------------------ model, loss, metrics

    def build_model(self, job: JobSpec, num_outputs: int, context: Context) -> nn.Module:
        entry = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
        if entry.name not in BUILDERS:
            raise ConfigError(f"{entry.name!r} is not a detector backbone", where="model.backbone",
                              fix=f"choose one of: {', '.join(BUILDERS)}")
        init = context.init
        options = {**job.model.detector_options(), **job.model.backbone_options,
                   "num_classes": num_outputs + 1, "pretrained": init != "none"}
        if entry.name == "fasterrcnn_lite0_fpn":
            lite0 = context.registry.backbones.get(LITE0_ENTRY)
            if lite0 is None and init == "imagenet":
                raise ConfigError(f"fasterrcnn_lite0_fpn takes its ImageNet weights from the backbone {LITE0_ENTRY!r}, "
                                  "which no loaded plugin offers", where="model.init",
                                  fix="load the vision plugin (see `tlapp plugins`, TLAPP_PLUGINS), or use --init none")
            options["lite0"] = lite0
        try:
            detector = entry.build(**options)
        except TypeError as exc:
            raise ConfigError(f"bad model.backbone_options for {entry.name}: {exc}",
                              where="model.backbone_options") from None
        # Weights of an ImageNet classifier (or none) bring no feature pyramid: it trains as a head.
        detector.fpn_is_head = init in ("imagenet", "none")
        fixed = getattr(detector, "fixed_stages", [])
        if fixed:
            context.log.info("backbone stages kept fixed (model.trainable_backbone_layers): %s", ", ".join(fixed))
        return DetectionModel(detector)

    def loss_function(self, job: JobSpec) -> Callable[[nn.Module, Any], tuple[torch.Tensor, int]]:
        def loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
            images, targets = batch
            losses = model(images, targets)
            return sum(losses.values()), len(images)

        return loss

    def evaluator(self, job: JobSpec, data: DataBundle, context: Context) -> DetectionEvaluator:
        return DetectionEvaluator(data.class_names)

    def metric_names(self, job: JobSpec) -> list[str] | None:
        return ["loss", *SCALARS]

    # ------------------------------------------------------------ predictions and preflight

    def predict(self, model, job: JobSpec, class_names: list[str], inputs: Sequence[str], context: Context,
                out_dir: Path) -> list[dict[str, Any]]:
        from PIL import Image

        files = input_files(inputs, lambda folder: sorted(p for p in folder.rglob("*")
                                                          if p.suffix.lower() in IMAGE_SUFFIXES), "images")
        bad = []
        for f in files:
            try:
                checked_image_size(f)
            except DataError as exc:
                bad.append(f"{f}: {exc.what}")
        if bad:
            raise DataError(f"{len(bad)} of {len(files)} input images cannot be read:\n    " + "\n    ".join(bad[:30])
                            + (f"\n    ... and {len(bad) - 30} more" if len(bad) > 30 else ""),
                            fix="replace or remove them")
        loader = DataLoader(ImageFiles(files), batch_size=job.train.batch_size, collate_fn=collate)
        model.eval()
        records: list[dict[str, Any]] = []
        used: Counter = Counter()
        (out_dir / "label_2").mkdir(parents=True, exist_ok=True)
        position = 0
        with torch.no_grad():
            for images, originals in loader:
                detections = model([im.to(context.device) for im in images])
                for original, det in zip(originals, detections):
                    path = files[position]
                    position += 1
                    stem = path.stem if not used[path.stem] else f"{path.stem}_{used[path.stem]}"
                    used[path.stem] += 1
                    boxes, scores, labels = det["boxes"].cpu(), det["scores"].cpu(), det["labels"].cpu()
                    found = [{"label": class_names[int(lb) - 1], "score": round(float(s), 4),
                              "box": [round(float(v), 2) for v in b]}
                             for b, s, lb in zip(boxes, scores, labels)]
                    keep = scores >= job.model.draw_threshold
                    drawn = draw_bounding_boxes(
                        original, boxes[keep],
                        labels=[f"{class_names[int(lb) - 1]} {float(s):.2f}"
                                for s, lb in zip(scores[keep], labels[keep])],
                        colors=[PALETTE[(int(lb) - 1) % len(PALETTE)] for lb in labels[keep]], width=2)
                    image_out = out_dir / f"{stem}.png"
                    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(image_out)
                    atomic_write_text(out_dir / "label_2" / f"{stem}.txt", "".join(
                        f"{d['label']} -1 -1 -10 {' '.join(f'{v:.2f}' for v in d['box'])} "
                        f"-1 -1 -1 -1000 -1000 -1000 -10 {d['score']:.4f}\n" for d in found))
                    records.append({"file": str(path), "width": int(original.shape[2]),
                                    "height": int(original.shape[1]), "drawn": str(image_out),
                                    "detections": found})
        rows = [{"file": r["file"], "label": d["label"], "score": d["score"],
                 **dict(zip(("x1", "y1", "x2", "y2"), d["box"]))} for r in records for d in r["detections"]]
        write_predictions(records, out_dir, stem="detections", rows=rows)
        return records

    def preview(self, job: JobSpec, data: DataBundle, context: Context, batch: Any, path: Path) -> Path:
        """The batch's images as the detector gets them, with the boxes it is asked to find and their classes."""
        images, targets = batch
        drawn = []
        for image, target in zip(images, targets):
            pixels = (image.float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
            names = [data.class_names[int(label) - 1] for label in target["labels"]]
            drawn.append(draw_bounding_boxes(pixels, target["boxes"].float().cpu(), labels=names, colors="yellow",
                                             width=2))
        captions = [f"{len(t['boxes'])} boxes" for t in targets]
        return image_grid(drawn, captions, path,
                          title=f"training batch as the model sees it: augment {job.augment}")

    def check_data(self, job: JobSpec, context: Context) -> dict[str, Any]:
        data = self.read(job, context, collect=True)
        records = data.records
        report: dict[str, Any] = {
            "root": str(data.root),
            "format": data.format,
            "classes": data.classes,
            **data.report.as_dict(),
            "image_sizes": dict(Counter(f"{r.width}x{r.height}" for r in records).most_common()),
            "objects_per_image": _spread([len(r.boxes) for r in records]),
            "box_heights": _spread([b[3] - b[1] for r in records for b in r.boxes]),
            "problems": data.report.problems[:200],
            "problem_count": len(data.report.problems),
            "skipped_files": data.report.skipped[:200],
            "warnings": _warnings(data),
        }
        if records:
            try:
                parts = self._split(records, job, True)
            except DataError as exc:
                report["splits"] = {"error": exc.what}
            else:
                report["splits"] = {s: {"images": len(v), "objects": sum(len(r.boxes) for r in v)}
                                    for s, v in parts.records.items()}
                report["split_sources"] = parts.sources
                report["warnings"] += parts.warnings
                for split in ("val", "test"):
                    images = len(parts.records[split])
                    small = small_split_warning(split, images, None, "image", min_samples=job.evaluation.min_samples,
                                                min_groups=job.evaluation.min_groups) if images else None
                    if small is not None:
                        report["warnings"].append(small)
        return report


def _warnings(data: DetectionSet) -> list[str]:
    """What may spoil training without stopping it: classes never seen, images without objects."""
    r = data.report
    out = []
    if r.classes_without_objects:
        out.append(f"class(es) {r.classes_without_objects} have no boxes in the data: the detector cannot learn "
                   "them (check data.classes and data.class_map)")
    if r.images and r.empty_images == r.images:
        out.append("no image has a box of the classes: nothing to learn (check data.classes and data.class_map)")
    return out


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(float(min(values)), 2), "median": round(float(statistics.median(values)), 2),
            "max": round(float(max(values)), 2)}
