"""Dataset readers: KITTI 2D objects and COCO JSON, both indexed into the same records.

``read_kitti(path, ...)`` and ``read_coco(path, ...)`` (registered as the dataset
formats ``kitti`` and ``coco``) return a ``DetectionSet``: one ``ImageRecord`` per
image with its objects as pixel boxes ``(x1, y1, x2, y2)`` and class names, its
ignore regions, and a ``ReadReport`` of what was clipped, dropped or ignored.

Box rules, the same for both formats:

* boxes reaching outside the image are clipped to it (counted as ``clipped``);
* boxes with zero or negative width or height (after clipping) are dropped and
  counted (``degenerate``), or, with ``strict=True``, fail naming file and line;
* KITTI ``DontCare`` regions and COCO ``iscrowd`` annotations are not objects:
  they never become training targets; evaluation treats them as COCO "crowd"
  regions, so a detection inside one is neither a hit nor a false positive
  (KITTI's own rule for DontCare). A DontCare region applies to every class, a
  COCO crowd region to its own category only;
* object types outside the class list (KITTI ``Misc``, ``Tram``...) are ignored
  and counted; ``class_map`` renames types first (``{"Person_sitting":
  "Pedestrian"}``; a null target drops the type);
* images without objects are kept as negatives.

Problems that make a file unusable (unreadable image, malformed line, label file
without image) are collected over the whole dataset and raised as one
``DataError`` listing each ``file:line``; with ``collect=True`` (``tlapp data
check``) they are returned in the report instead.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tlcore import DataError

KITTI_CLASSES = ["Car", "Van", "Truck", "Pedestrian", "Cyclist"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "val", "test")
# KITTI label line: type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]
KITTI_MIN_FIELDS = 8


@dataclass
class ImageRecord:
    path: Path
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    # Ignore regions: (box, class name or None for every class).
    ignore: list[tuple[tuple[float, float, float, float], str | None]] = field(default_factory=list)
    split: str | None = None
    label_file: Path | None = None

    @property
    def aspect_ratio(self) -> float:
        return self.width / self.height


@dataclass
class ReadReport:
    images: int = 0
    objects: Counter = field(default_factory=Counter)
    ignored_types: Counter = field(default_factory=Counter)
    ignore_regions: int = 0
    clipped: int = 0
    degenerate: list[str] = field(default_factory=list)  # "file:line" of each dropped box
    empty_images: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)  # {"where", "what"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "objects": sum(self.objects.values()),
            "objects_per_class": dict(sorted(self.objects.items())),
            "ignored_types": dict(sorted(self.ignored_types.items())),
            "ignore_regions": self.ignore_regions,
            "clipped_boxes": self.clipped,
            "degenerate_boxes_dropped": len(self.degenerate),
            "degenerate_examples": self.degenerate[:20],
            "empty_images": self.empty_images,
        }


@dataclass
class DetectionSet:
    format: str
    root: Path
    records: list[ImageRecord]
    report: ReadReport
    classes: list[str] = field(default_factory=list)


class _Reader:
    """Shared bookkeeping: class mapping, box validation and problem collection."""

    def __init__(self, classes: list[str], class_map: dict[str, str | None] | None, strict: bool,
                 collect: bool):
        self.classes = list(classes)
        self.class_map = dict(class_map or {})
        self.strict = strict
        self.collect = collect
        self.report = ReadReport()

    def problem(self, where: str, what: str) -> None:
        self.report.problems.append({"where": where, "what": what})

    def raise_problems(self, root: Path, fix: str) -> None:
        problems = self.report.problems
        if not problems or self.collect:
            return
        listing = "\n".join(f"    {p['where']}: {p['what']}" for p in problems[:30])
        more = f"\n    ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        what = (f"{problems[0]['what']}" if len(problems) == 1
                else f"{len(problems)} problems in the dataset {root}:\n{listing}{more}")
        raise DataError(what, where=problems[0]["where"], fix=fix)

    def map_class(self, source: str) -> str | None:
        name = self.class_map.get(source, source)
        if name is None or name == "":
            return None
        return name if name in self.classes else None

    def image_size(self, path: Path) -> tuple[int, int] | None:
        try:
            with Image.open(path) as im:
                return im.size
        except (OSError, UnidentifiedImageError) as exc:
            self.problem(str(path), f"unreadable image ({type(exc).__name__}: {exc})")
            return None

    def box(self, x1: float, y1: float, x2: float, y2: float, width: int, height: int,
            where: str, kind: str = "object") -> tuple[float, float, float, float] | None:
        """The box clipped to the image, or None when it has no area (dropped, or an error if strict)."""
        values = (x1, y1, x2, y2)
        if not all(math.isfinite(v) for v in values):
            self.problem(where, f"box coordinates are not finite numbers: {values}")
            return None
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            if kind == "object":
                if self.strict:
                    self.problem(where, f"degenerate box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g} "
                                        f"(width {x2 - x1:g}, height {y2 - y1:g} in a {width}x{height} image "
                                        f"after clipping: {cx2 - cx1:g} x {cy2 - cy1:g})")
                else:
                    self.report.degenerate.append(where)
            return None
        if (cx1, cy1, cx2, cy2) != values and kind == "object":
            self.report.clipped += 1
        return cx1, cy1, cx2, cy2

    def finish(self, records: list[ImageRecord]) -> None:
        self.report.images = len(records)
        for r in records:
            self.report.objects.update(r.classes)
            self.report.ignore_regions += len(r.ignore)
            if not r.boxes:
                self.report.empty_images += 1


# ------------------------------------------------------------------------------------------------ KITTI

def _kitti_folders(root: Path) -> list[tuple[Path, str | None]]:
    """(folder holding image_2/ and label_2/, split) pairs under ``root``."""
    if (root / "image_2").is_dir():
        return [(root, None)]
    splits = [(root / s, s) for s in SPLITS if (root / s / "image_2").is_dir()]
    if splits:
        return splits
    if (root / "training" / "image_2").is_dir():
        return [(root / "training", None)]
    raise DataError(f"no KITTI image_2/ folder in {root}", where=str(root),
                    fix="point data.path at a folder with image_2/ and label_2/ (or train/, val/, test/ "
                        "sub-folders, or training/, holding them)")


def read_kitti(path: str | Path, classes: list[str] | None = None,
               class_map: dict[str, str | None] | None = None, strict: bool = False,
               collect: bool = False) -> DetectionSet:
    """Index a KITTI 2D object folder: ``image_2/*.png`` with ``label_2/<stem>.txt`` each.

    ``path`` may also hold ``train/``, ``val/`` and ``test/`` sub-folders (each with
    image_2/ and label_2/), which then fix the splits, or KITTI's ``training/``.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"dataset not found: {root}", where="data.path", fix="check the path")
    reader = _Reader(classes or KITTI_CLASSES, class_map, strict, collect)
    records: list[ImageRecord] = []
    for folder, split in _kitti_folders(root):
        image_dir, label_dir = folder / "image_2", folder / "label_2"
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        stems = {p.stem for p in images}
        if label_dir.is_dir():
            for orphan in sorted(p for p in label_dir.glob("*.txt") if p.stem not in stems):
                reader.problem(str(orphan), "label file without an image of the same name in image_2/")
        for image in images:
            label = label_dir / f"{image.stem}.txt"
            if not label.is_file():
                reader.problem(str(image), f"no label file {label}")
                continue
            size = reader.image_size(image)
            if size is None:
                continue
            record = ImageRecord(image, size[0], size[1], split=split, label_file=label)
            _read_kitti_labels(reader, label, record)
            records.append(record)
    if not records and not reader.report.problems:
        raise DataError(f"no images found in {root}", where=str(root),
                        fix="KITTI images go in image_2/ (png or jpg), labels in label_2/")
    reader.raise_problems(root, fix="correct or remove the listed files; degenerate boxes are dropped "
                                    "unless data.strict is true")
    reader.finish(records)
    return DetectionSet("kitti", root, records, reader.report, reader.classes)


def _read_kitti_labels(reader: _Reader, label: Path, record: ImageRecord) -> None:
    try:
        lines = label.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem(str(label), f"cannot read label file: {exc}")
        return
    for number, line in enumerate(lines, start=1):
        where = f"{label}:{number}"
        parts = line.split()
        if not parts:
            continue
        if len(parts) < KITTI_MIN_FIELDS:
            reader.problem(where, f"a KITTI label line needs at least {KITTI_MIN_FIELDS} fields "
                                  f"(type truncated occluded alpha x1 y1 x2 y2 ...), got {len(parts)}: {line!r}")
            continue
        try:
            x1, y1, x2, y2 = (float(v) for v in parts[4:8])
        except ValueError:
            reader.problem(where, f"box fields 5-8 are not numbers: {' '.join(parts[4:8])!r}")
            continue
        kind = parts[0]
        if kind == "DontCare":
            box = reader.box(x1, y1, x2, y2, record.width, record.height, where, kind="ignore")
            if box is not None:
                record.ignore.append((box, None))
            continue
        name = reader.map_class(kind)
        if name is None:
            reader.report.ignored_types[kind] += 1
            continue
        box = reader.box(x1, y1, x2, y2, record.width, record.height, where)
        if box is not None:
            record.boxes.append(box)
            record.classes.append(name)


# ------------------------------------------------------------------------------------------------ COCO

def _coco_files(root: Path) -> list[tuple[Path, str | None]]:
    if root.is_file():
        return [(root, None)]
    split_files = [(root / f"{s}.json", s) for s in SPLITS if (root / f"{s}.json").is_file()]
    if split_files:
        return split_files
    if (root / "annotations.json").is_file():
        return [(root / "annotations.json", None)]
    found = sorted(root.glob("*.json")) or sorted((root / "annotations").glob("*.json"))
    if len(found) == 1:
        return [(found[0], None)]
    raise DataError(f"cannot tell which COCO annotation file to use in {root}: found {len(found)} JSON files",
                    where=str(root),
                    fix="pass the JSON file as --data, or name it annotations.json (or train.json, val.json, "
                        "test.json for fixed splits)")


def _coco_image_dir(json_path: Path, images: str | Path | None) -> Path:
    if images is not None:
        images = Path(images)
        return images if images.is_absolute() else json_path.parent / images
    for candidate in (json_path.parent / "images", json_path.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    return json_path.parent


def coco_categories(path: str | Path) -> list[str]:
    """Category names of a COCO dataset (its first annotation file), ordered by category id."""
    json_path = _coco_files(Path(path))[0][0]
    data = _load_json(json_path)
    try:
        return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    except (KeyError, TypeError):
        raise DataError("COCO 'categories' must be a list of {id, name}", where=str(json_path)) from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                        fix="repair the file (it must be a COCO detection annotation file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the annotation file: {exc}", where=str(path)) from None


def read_coco(path: str | Path, classes: list[str] | None = None,
              class_map: dict[str, str | None] | None = None, strict: bool = False,
              collect: bool = False, images: str | Path | None = None) -> DetectionSet:
    """Index COCO detection JSON: ``images``, ``annotations`` (bbox as x, y, width, height), ``categories``.

    ``path`` is the JSON file, or a folder holding ``annotations.json`` (or
    ``train.json``/``val.json``/``test.json`` for fixed splits, or a single JSON).
    Image ``file_name``s resolve against ``images`` (default: an ``images/``
    folder beside the JSON, else the JSON's folder). Problems are located as
    ``file:annotations[i] (id N)``.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"dataset not found: {root}", where="data.path", fix="check the path")
    files = _coco_files(root)
    if classes is None:
        classes = coco_categories(files[0][0])
    reader = _Reader(classes, class_map, strict, collect)
    records: list[ImageRecord] = []
    for json_path, split in files:
        records.extend(_read_coco_file(reader, json_path, split, _coco_image_dir(json_path, images)))
    reader.raise_problems(root, fix="correct the annotation file; degenerate boxes are dropped unless "
                                    "data.strict is true")
    reader.finish(records)
    return DetectionSet("coco", root, records, reader.report, reader.classes)


def _read_coco_file(reader: _Reader, json_path: Path, split: str | None, image_dir: Path) -> list[ImageRecord]:
    data = _load_json(json_path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        reader.problem(str(json_path), "a COCO file needs lists 'images', 'annotations' and 'categories'")
        return []
    categories: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            reader.problem(f"{json_path}:categories[{i}]", "a category needs 'id' and 'name'")
            continue
        categories[cat["id"]] = str(cat["name"])
    by_id: dict[Any, ImageRecord] = {}
    records: list[ImageRecord] = []
    for i, entry in enumerate(data["images"]):
        where = f"{json_path}:images[{i}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            reader.problem(where, "an image entry needs 'id' and 'file_name'")
            continue
        image = image_dir / entry["file_name"]
        if not image.is_file():
            reader.problem(where, f"image file not found: {image}")
            continue
        size = reader.image_size(image)
        if size is None:
            continue
        if entry.get("width") not in (None, size[0]) or entry.get("height") not in (None, size[1]):
            reader.problem(where, f"the JSON says {entry.get('width')}x{entry.get('height')} but {image} is "
                                  f"{size[0]}x{size[1]}")
            continue
        record = ImageRecord(image, size[0], size[1], split=split, label_file=json_path)
        by_id[entry["id"]] = record
        records.append(record)
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        where = f"{json_path}:annotations[{i}]" + (f" (id {ann_id})" if ann_id is not None else "")
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= set(ann):
            reader.problem(where, "an annotation needs 'image_id', 'category_id' and 'bbox'")
            continue
        record = by_id.get(ann["image_id"])
        if record is None:
            if not any(p["where"].startswith(f"{json_path}:images[") for p in reader.report.problems):
                reader.problem(where, f"image_id {ann['image_id']!r} is not in 'images'")
            continue
        bbox = ann["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            reader.problem(where, f"bbox must be [x, y, width, height] numbers, got {bbox!r}")
            continue
        if ann["category_id"] not in categories:
            reader.problem(where, f"category_id {ann['category_id']!r} is not in 'categories'")
            continue
        source = categories[ann["category_id"]]
        x, y, w, h = (float(v) for v in bbox)
        name = reader.map_class(source)
        if ann.get("iscrowd", 0):
            box = reader.box(x, y, x + w, y + h, record.width, record.height, where, kind="ignore")
            if box is not None and name is not None:
                record.ignore.append((box, name))
            continue
        if name is None:
            reader.report.ignored_types[source] += 1
            continue
        box = reader.box(x, y, x + w, y + h, record.width, record.height, where)
        if box is not None:
            record.boxes.append(box)
            record.classes.append(name)
    return records
