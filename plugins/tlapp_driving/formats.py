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

Every image is decode-checked while indexing (PNG: PIL's ``verify``, which reads
every chunk; other formats: a reduced-size decode), so a truncated file stops the
run before a model is built. Problems that make a file unusable (unreadable
image, malformed line, label file without image) are collected over the whole
dataset and raised as one ``DataError`` listing each ``file:line``; with
``on_error="skip"`` the images they concern are left out and listed in
``report.skipped`` instead; with ``collect=True`` (``tlapp data check``) nothing is
raised and the report says what would happen. A file that is not a COCO
annotation file at all (a top-level list, no ``images``...) fails at once, and so
does a COCO ``file_name`` leading outside the image folder (``..``, an absolute
path, a symlink) unless ``allow_outside_root`` is set.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tlcore import DataError, inside_root

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
    classes_without_objects: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)  # {"where", "what"}
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}: images left out (skip)

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
            "classes_without_objects": self.classes_without_objects,
            "skipped_images": len(self.skipped),
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
                 collect: bool, on_error: str = "fail", allow_outside_root: bool = False):
        if on_error not in ("fail", "skip"):
            raise DataError(f"on_error must be fail or skip, not {on_error!r}", where="data.on_error")
        self.classes = list(classes)
        self.class_map = dict(class_map or {})
        self.strict = strict
        self.collect = collect
        self.on_error = on_error
        self.allow_outside_root = allow_outside_root
        self.report = ReadReport()
        self.unusable: dict[Path, str] = {}  # image -> the first problem that spoils it

    def problem(self, where: str, what: str, image: Path | None = None) -> None:
        """Note a problem; ``image`` is the image it makes unusable (left out under on_error=skip)."""
        self.report.problems.append({"where": where, "what": what})
        if image is not None:
            self.unusable.setdefault(image, f"{where}: {what}")

    def settle(self, root: Path, records: list[ImageRecord], fix: str) -> list[ImageRecord]:
        """Raise every problem as one DataError (on_error=fail), or leave out the images they spoil (skip)."""
        problems = self.report.problems
        if self.on_error == "skip":
            self.report.skipped = [{"file": str(path), "reason": reason} for path, reason in self.unusable.items()]
            return [r for r in records if r.path not in self.unusable]
        if not problems or self.collect:
            return records
        listing = "\n".join(f"    {p['where']}: {p['what']}" for p in problems[:30])
        more = f"\n    ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        what = (f"{problems[0]['what']}" if len(problems) == 1
                else f"{len(problems)} problems in the dataset {root}:\n{listing}{more}")
        raise DataError(what, where=problems[0]["where"], fix=fix + "; or leave the affected images out with "
                                                                     "--set data.on_error=skip")

    def map_class(self, source: str) -> str | None:
        name = self.class_map.get(source, source)
        if name is None or name == "":
            return None
        return name if name in self.classes else None

    def image_size(self, path: Path) -> tuple[int, int] | None:
        try:
            return checked_image_size(path)
        except DataError as exc:
            self.problem(str(path), exc.what, path)
            return None

    def box(self, x1: float, y1: float, x2: float, y2: float, record: ImageRecord,
            where: str, kind: str = "object") -> tuple[float, float, float, float] | None:
        """The box clipped to the image, or None when it has no area (dropped, or an error if strict)."""
        values = (x1, y1, x2, y2)
        width, height = record.width, record.height
        if not all(math.isfinite(v) for v in values):
            self.problem(where, f"box coordinates are not finite numbers: {values}", record.path)
            return None
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            if kind == "object":
                if self.strict:
                    self.problem(where, f"degenerate box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g} "
                                        f"(width {x2 - x1:g}, height {y2 - y1:g} in a {width}x{height} image "
                                        f"after clipping: {cx2 - cx1:g} x {cy2 - cy1:g})", record.path)
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
        self.report.classes_without_objects = [c for c in self.classes if not self.report.objects[c]]


def checked_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file that decodes to the end; a DataError naming the file otherwise.

    PNG's ``verify`` reads every chunk and checks its CRC without inflating pixels (about a
    tenth of a full decode); other formats have no such check, so they are decoded at reduced size.
    """
    try:
        with Image.open(path) as im:
            size = im.size
            if im.format == "PNG":
                im.verify()
            else:
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
            return size
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        # PIL reports broken files as OSError, SyntaxError (bad PNG chunks) or ValueError (bad headers).
        raise DataError(f"unreadable image ({type(exc).__name__}: {exc})", where=str(path),
                        fix="replace or remove the file") from None


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
               collect: bool = False, on_error: str = "fail") -> DetectionSet:
    """Index a KITTI 2D object folder: ``image_2/*.png`` with ``label_2/<stem>.txt`` each.

    ``path`` may also hold ``train/``, ``val/`` and ``test/`` sub-folders (each with
    image_2/ and label_2/), which then fix the splits, or KITTI's ``training/``.
    Images and labels pair by file name, so no path is read from a file and none can
    lead outside the dataset.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"dataset not found: {root}", where="data.path", fix="check the path")
    reader = _Reader(classes or KITTI_CLASSES, class_map, strict, collect, on_error)
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
                reader.problem(str(image), f"no label file {label}", image)
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
    records = reader.settle(root, records, fix="correct or remove the listed files; degenerate boxes are dropped "
                                               "unless data.strict is true")
    reader.finish(records)
    return DetectionSet("kitti", root, records, reader.report, reader.classes)


def _read_kitti_labels(reader: _Reader, label: Path, record: ImageRecord) -> None:
    try:
        lines = label.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem(str(label), f"cannot read label file: {exc}", record.path)
        return
    for number, line in enumerate(lines, start=1):
        where = f"{label}:{number}"
        parts = line.split()
        if not parts:
            continue
        if len(parts) < KITTI_MIN_FIELDS:
            reader.problem(where, f"a KITTI label line needs at least {KITTI_MIN_FIELDS} fields "
                                  f"(type truncated occluded alpha x1 y1 x2 y2 ...), got {len(parts)}: {line!r}",
                           record.path)
            continue
        try:
            x1, y1, x2, y2 = (float(v) for v in parts[4:8])
        except ValueError:
            reader.problem(where, f"box fields 5-8 are not numbers: {' '.join(parts[4:8])!r}", record.path)
            continue
        kind = parts[0]
        if kind == "DontCare":
            box = reader.box(x1, y1, x2, y2, record, where, kind="ignore")
            if box is not None:
                record.ignore.append((box, None))
            continue
        name = reader.map_class(kind)
        if name is None:
            reader.report.ignored_types[kind] += 1
            continue
        box = reader.box(x1, y1, x2, y2, record, where)
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


def coco_categories(json_path: Path, data: dict[str, Any]) -> list[str]:
    """Category names of a parsed COCO annotation file, ordered by category id."""
    categories: dict[int | str, str] = {}
    for i, cat in enumerate(data["categories"]):
        why = _category_problem(cat, categories)
        if why:
            raise DataError(why, where=f"{json_path}:categories[{i}]",
                            fix="each category is {\"id\": N, \"name\": \"...\"} with a distinct id")
        categories[cat["id"]] = str(cat["name"])
    if not categories:
        raise DataError("the COCO file has no categories", where=f"{json_path}:categories",
                        fix="list the object categories, or set data.classes")
    return [categories[k] for k in sorted(categories, key=lambda k: (isinstance(k, str), k))]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                        fix="repair the file (it must be a COCO detection annotation file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the annotation file: {exc}", where=str(path)) from None
    except (ValueError, RecursionError) as exc:  # e.g. a number of more than 4300 digits, or deep nesting
        raise DataError(f"cannot parse the annotation file: {exc}", where=str(path)) from None


def _load_coco(path: Path) -> dict[str, Any]:
    """The parsed file, once it has the three lists every COCO detection file has."""
    data = _load_json(path)
    fix = "a COCO detection file is one JSON object: {\"images\": [...], \"annotations\": [...], \"categories\": [...]}"
    if not isinstance(data, dict):
        raise DataError(f"the top level is a JSON {_json_type(data)}, not an object with 'images', 'annotations' "
                        "and 'categories'", where=str(path), fix=fix)
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DataError(f"no {_keys(missing)} in the COCO file (its keys: {', '.join(map(str, data)) or 'none'})",
                        where=str(path), fix=fix)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DataError(f"'{key}' is a JSON {_json_type(data[key])}, not a list", where=f"{path}:{key}", fix=fix)
    return data


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _keys(names: list[str]) -> str:
    return " or ".join(repr(k) for k in names)


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _category_problem(cat: Any, seen: dict) -> str | None:
    if not isinstance(cat, dict):
        return f"a category is a JSON object, not a {_json_type(cat)}"
    missing = [k for k in ("id", "name") if k not in cat]
    if missing:
        return f"the category has no {_keys(missing)}"
    if not _is_id(cat["id"]):
        return f"category id {cat['id']!r} is not a number or string"
    if cat["id"] in seen:
        return f"duplicate category id {cat['id']!r}"
    return None


def read_coco(path: str | Path, classes: list[str] | None = None,
              class_map: dict[str, str | None] | None = None, strict: bool = False,
              collect: bool = False, images: str | Path | None = None, on_error: str = "fail",
              allow_outside_root: bool = False) -> DetectionSet:
    """Index COCO detection JSON: ``images``, ``annotations`` (bbox as x, y, width, height), ``categories``.

    ``path`` is the JSON file, or a folder holding ``annotations.json`` (or
    ``train.json``/``val.json``/``test.json`` for fixed splits, or a single JSON).
    Image ``file_name``s resolve against ``images`` (default: an ``images/``
    folder beside the JSON, else the JSON's folder) and must stay inside it unless
    ``allow_outside_root``. Problems are located as ``file:annotations[i] (id N)``.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"dataset not found: {root}", where="data.path", fix="check the path")
    files = [(json_path, split, _load_coco(json_path)) for json_path, split in _coco_files(root)]
    if classes is None:  # the dataset's classes are its first annotation file's categories
        classes = coco_categories(files[0][0], files[0][2])
    reader = _Reader(classes, class_map, strict, collect, on_error, allow_outside_root)
    records: list[ImageRecord] = []
    for json_path, split, data in files:
        records.extend(_read_coco_file(reader, json_path, data, split, _coco_image_dir(json_path, images)))
    records = reader.settle(root, records, fix="correct the annotation file; degenerate boxes are dropped unless "
                                               "data.strict is true")
    reader.finish(records)
    return DetectionSet("coco", root, records, reader.report, reader.classes)


def _read_coco_file(reader: _Reader, json_path: Path, data: dict[str, Any], split: str | None,
                    image_dir: Path) -> list[ImageRecord]:
    categories: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        why = _category_problem(cat, categories)
        if why:
            reader.problem(f"{json_path}:categories[{i}]", why)
            continue
        categories[cat["id"]] = str(cat["name"])
    records = _read_coco_images(reader, json_path, split, image_dir, data["images"])
    by_id = {image_id: record for image_id, record in records.items() if record is not None}
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        where = f"{json_path}:annotations[{i}]" + (f" (id {ann_id})" if ann_id is not None else "")
        if not isinstance(ann, dict):
            reader.problem(where, f"an annotation is a JSON object, not a {_json_type(ann)}")
            continue
        image_id = ann.get("image_id")
        record = by_id.get(image_id) if _is_id(image_id) else None
        missing = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
        if missing:
            reader.problem(where, f"the annotation has no {_keys(missing)}", record.path if record else None)
            continue
        if record is None:
            # Annotations of an image entry that was itself a problem would only repeat it.
            if not _is_id(image_id) or image_id not in records:
                reader.problem(where, f"image_id {image_id!r} is not in 'images'")
            continue
        bbox = ann["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            reader.problem(where, f"bbox must be [x, y, width, height] numbers, got {bbox!r}", record.path)
            continue
        category_id = ann["category_id"]
        if not _is_id(category_id) or category_id not in categories:
            reader.problem(where, f"category_id {category_id!r} is not in 'categories'", record.path)
            continue
        source = categories[category_id]
        try:
            x, y, w, h = (float(v) for v in bbox)
        except OverflowError:  # an integer too large for a float: not finite, as box() reports
            x = y = w = h = math.inf
        name = reader.map_class(source)
        if ann.get("iscrowd", 0):
            box = reader.box(x, y, x + w, y + h, record, where, kind="ignore")
            if box is not None and name is not None:
                record.ignore.append((box, name))
            continue
        if name is None:
            reader.report.ignored_types[source] += 1
            continue
        box = reader.box(x, y, x + w, y + h, record, where)
        if box is not None:
            record.boxes.append(box)
            record.classes.append(name)
    return list(by_id.values())


def _read_coco_images(reader: _Reader, json_path: Path, split: str | None, image_dir: Path,
                      entries: list[Any]) -> dict[Any, ImageRecord | None]:
    """Image id -> record, or None for an id whose entry is a problem (its annotations are not reported again)."""
    records: dict[Any, ImageRecord | None] = {}
    first: dict[Any, int] = {}
    for i, entry in enumerate(entries):
        where = f"{json_path}:images[{i}]"
        if not isinstance(entry, dict):
            reader.problem(where, f"an image entry is a JSON object, not a {_json_type(entry)}")
            continue
        image_id, file_name = entry.get("id"), entry.get("file_name")
        missing = [k for k in ("id", "file_name") if k not in entry]
        if missing:
            reader.problem(where, f"the image entry has no {_keys(missing)}")
            if _is_id(image_id):
                records.setdefault(image_id, None)
            continue
        where += f" (id {image_id!r})"
        if not _is_id(image_id):
            reader.problem(where, "image id is not a number or string")
            continue
        if image_id in first:
            spoiled = records.get(image_id)
            reader.problem(where, f"duplicate image id {image_id!r}: images[{first[image_id]}] has it too, so its "
                                  "annotations cannot be told apart", spoiled.path if spoiled else None)
            records[image_id] = None
            continue
        first[image_id] = i
        records[image_id] = None
        if not isinstance(file_name, str) or not file_name.strip() or "\0" in file_name:
            reader.problem(where, f"file_name {file_name!r} is not a file name")
            continue
        image = inside_root(image_dir, file_name, where=where, allow_outside=reader.allow_outside_root)
        if not _is_file(image):
            reader.problem(where, f"image file not found: {image}")
            continue
        size = reader.image_size(image)
        if size is None:
            continue
        if entry.get("width") not in (None, size[0]) or entry.get("height") not in (None, size[1]):
            reader.problem(where, f"the JSON says {entry.get('width')}x{entry.get('height')} but {image} is "
                                  f"{size[0]}x{size[1]}")
            continue
        records[image_id] = ImageRecord(image, size[0], size[1], split=split, label_file=json_path)
    return records


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system: no such file either
        return False
