"""Property tests of the KITTI and COCO readers: whatever a label or annotation file holds, reading it either
succeeds with sane boxes or raises a DataError, never anything else."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from driving_helpers import kitti_line, scene
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlapp_driving.formats import read_coco, read_kitti
from tlcore import DataError

WIDTH, HEIGHT = 40, 24
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
numbers = st.one_of(st.integers(-50, 80), st.floats(), st.sampled_from(["nan", "inf", "-1e999", "12.5", "x"]))
ids = st.one_of(st.integers(0, 4), st.text(max_size=2), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    (root / "image_2").mkdir()
    (root / "label_2").mkdir()
    scene(WIDTH, HEIGHT, [], 0).save(root / "image_2" / "000000.png")
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    scene(WIDTH, HEIGHT, [], 0).save(root / "images" / "img0.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    shutil.copy(root / "images" / "img0.png", root / "img_outside_images.png")
    return root


def assert_sane(data) -> None:
    for record in data.records:
        assert len(record.boxes) == len(record.classes)
        for x1, y1, x2, y2 in record.boxes:
            assert all(math.isfinite(v) for v in (x1, y1, x2, y2))
            assert 0 <= x1 < x2 <= record.width and 0 <= y1 < y2 <= record.height
        assert set(record.classes) <= set(data.classes)


def read_or_data_error(read, *args, **kwargs) -> None:
    try:
        data = read(*args, **kwargs)
    except DataError as exc:
        assert exc.what and exc.where  # one message, located
        return
    assert_sane(data)


kitti_lines = st.one_of(
    st.text(max_size=60),
    st.builds(lambda kind, values: " ".join([kind, *map(str, values)]),
              st.sampled_from(["Car", "Pedestrian", "DontCare", "Misc", "", "car"]), st.lists(numbers, max_size=16)),
    st.builds(lambda box: kitti_line("Car", box), st.tuples(numbers, numbers, numbers, numbers)),
)


@SETTINGS
@given(lines=st.lists(kitti_lines, max_size=6), strict=st.booleans(), on_error=st.sampled_from(["fail", "skip"]))
def test_kitti_label_text(kitti_root, lines, strict, on_error):
    (kitti_root / "label_2" / "000000.txt").write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    for collect in (False, True):
        read_or_data_error(read_kitti, kitti_root, strict=strict, collect=collect, on_error=on_error)


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_kitti_label_bytes(kitti_root, raw):
    (kitti_root / "label_2" / "000000.txt").write_bytes(raw)
    read_or_data_error(read_kitti, kitti_root)


image_entries = st.fixed_dictionaries({}, optional={
    "id": ids, "width": st.one_of(st.just(WIDTH), json_values), "height": st.one_of(st.just(HEIGHT), json_values),
    "file_name": st.sampled_from(["img0.png", "missing.png", "broken.png", "../img_outside_images.png",
                                  "/etc/hostname", "", "img0.png\x00", 3, None, "images"])})
annotations = st.fixed_dictionaries({}, optional={
    "id": ids, "image_id": ids, "category_id": ids, "iscrowd": st.one_of(st.integers(0, 1), json_values),
    "bbox": st.one_of(st.lists(st.one_of(st.integers(-10, 60), st.floats(), st.integers(), st.text(max_size=2)),
                               min_size=3, max_size=5), json_values)})
categories = st.fixed_dictionaries({}, optional={"id": ids, "name": st.one_of(st.text(max_size=5), json_values)})
# Nearly valid records, so that examples also reach the boxes and not only the first missing key.
plausible_images = st.fixed_dictionaries({"id": st.integers(0, 2), "file_name": st.just("img0.png")},
                                         optional={"width": st.sampled_from([WIDTH, 7])})
plausible_annotations = st.fixed_dictionaries({
    "id": st.integers(0, 9), "image_id": st.integers(0, 2), "category_id": st.integers(0, 2),
    "bbox": st.lists(st.one_of(st.integers(-10, 60), st.floats()), min_size=4, max_size=4)},
    optional={"iscrowd": st.integers(0, 1)})
plausible_categories = st.fixed_dictionaries({"id": st.integers(0, 2), "name": st.sampled_from(["car", "person"])})
coco_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"images": st.lists(st.one_of(image_entries, json_values), max_size=4),
                                        "annotations": st.lists(st.one_of(annotations, json_values), max_size=6),
                                        "categories": st.lists(st.one_of(categories, json_values), max_size=3)}),
    st.fixed_dictionaries({"images": st.lists(st.one_of(plausible_images, image_entries), max_size=3),
                           "annotations": st.lists(st.one_of(plausible_annotations, annotations), max_size=6),
                           "categories": st.lists(st.one_of(plausible_categories, categories), max_size=3)}))


@SETTINGS
@given(document=coco_documents, classes=st.sampled_from([None, ["car"], ["car", "person"]]),
       on_error=st.sampled_from(["fail", "skip"]), collect=st.booleans())
def test_coco_documents(coco_root, document, classes, on_error, collect):
    (coco_root / "annotations.json").write_text(json.dumps(document))
    read_or_data_error(read_coco, coco_root, classes=classes, on_error=on_error, collect=collect)


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_coco_bytes(coco_root, raw):
    (coco_root / "annotations.json").write_bytes(raw)
    read_or_data_error(read_coco, coco_root)
