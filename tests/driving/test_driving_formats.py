"""KITTI and COCO readers: classes, DontCare/crowd regions, clipping, degenerate boxes, strict mode, errors."""

from __future__ import annotations

import json

import pytest
from driving_helpers import kitti_line

from tlapp_driving.formats import KITTI_CLASSES, read_coco, read_kitti
from tlcore import DataError


def test_kitti_reads_objects_dontcare_negatives_and_ignored_types(make_kitti):
    root = make_kitti(6, empty=(2,), extra={
        0: ["DontCare -1 -1 -10 60 5 90 20 -1 -1 -1 -1000 -1000 -1000 -10"],
        1: [kitti_line("Misc", (5, 5, 20, 20)), kitti_line("Person_sitting", (30, 20, 40, 40))],
    })
    data = read_kitti(root)
    assert data.classes == KITTI_CLASSES
    assert len(data.records) == 6
    first = data.records[0]
    assert first.ignore == [((60.0, 5.0, 90.0, 20.0), None)]  # DontCare: an ignore region, not an object
    assert "DontCare" not in first.classes
    assert data.records[2].boxes == [] and data.report.empty_images == 1  # negatives are kept
    assert data.report.ignored_types == {"Misc": 1, "Person_sitting": 1}
    assert sum(data.report.objects.values()) == sum(len(r.boxes) for r in data.records)

    mapped = read_kitti(root, class_map={"Person_sitting": "Pedestrian", "Misc": None})
    assert "Pedestrian" in mapped.records[1].classes
    assert mapped.report.ignored_types == {"Misc": 1}


def test_kitti_clips_boxes_and_drops_degenerate_ones_with_their_location(make_kitti):
    root = make_kitti(3, extra={0: [kitti_line("Car", (80, 30, 110, 47.5)),   # reaches past the right edge
                                    kitti_line("Car", (-4, -2, 10, 12)),      # past the top-left corner
                                    kitti_line("Car", (50, 10, 50, 30)),      # zero width
                                    kitti_line("Van", (40, 30, 45, 20)),      # negative height
                                    kitti_line("Car", (120, 10, 140, 30))]})  # entirely outside: nothing left
    data = read_kitti(root)
    boxes = dict(zip(data.records[0].boxes, data.records[0].classes))
    assert (80.0, 30.0, 96.0, 47.5) in boxes and (0.0, 0.0, 10.0, 12.0) in boxes
    assert data.report.clipped == 2
    label = root / "label_2" / "000000.txt"
    n = len(label.read_text().splitlines())
    assert data.report.degenerate == [f"{label}:{n - 2}", f"{label}:{n - 1}", f"{label}:{n}"]
    assert all(x2 > x1 and y2 > y1 for r in data.records for x1, y1, x2, y2 in r.boxes)


def test_strict_mode_fails_naming_file_and_line(make_kitti):
    root = make_kitti(3, extra={1: [kitti_line("Car", (50, 10, 50, 30))]})
    label = root / "label_2" / "000001.txt"
    line = len(label.read_text().splitlines())
    read_kitti(root)  # lenient by default
    with pytest.raises(DataError) as err:
        read_kitti(root, strict=True)
    assert err.value.where == f"{label}:{line}"
    assert "degenerate box" in err.value.what


def test_malformed_kitti_files_are_reported_with_file_and_line(make_kitti):
    root = make_kitti(4, extra={1: ["Car 0 0 0 ten 5 20 20 1 1 1 0 0 0 0"], 2: ["Car 0 0"]})
    (root / "label_2" / "000003.txt").unlink()
    (root / "label_2" / "000099.txt").write_text("")
    (root / "image_2" / "000000.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        read_kitti(root)
    text = err.value.render()
    assert "5 problems" in text
    assert "000001.txt:" in text and "not numbers" in text
    assert "000002.txt:" in text and "at least 8 fields" in text
    assert "no label file" in text and "000099.txt" in text and "unreadable image" in text
    collected = read_kitti(root, collect=True)  # `tlapp data check` lists them instead
    assert len(collected.report.problems) == 5 and len(collected.records) == 2


def test_kitti_split_folders_fix_the_splits(make_kitti, tmp_path):
    train = make_kitti(4, name="ds/train")
    make_kitti(2, name="ds/val")
    data = read_kitti(train.parent)
    assert [r.split for r in data.records] == ["train"] * 4 + ["val"] * 2


def test_coco_reads_boxes_crowd_and_categories(make_coco):
    root = make_coco(4, extra_annotations=[
        {"id": 100, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 10], "iscrowd": 1},
        {"id": 101, "image_id": 2, "category_id": 2, "bbox": [90, 40, 20, 20], "iscrowd": 0},  # clipped
        {"id": 102, "image_id": 2, "category_id": 1, "bbox": [10, 10, 0, 5], "iscrowd": 0},  # degenerate
    ])
    data = read_coco(root)
    assert data.classes == ["car", "person"]
    annotations = json.loads((root / "annotations.json").read_text())["annotations"]
    objects = [a for a in annotations if not a["iscrowd"]]
    assert sum(len(r.boxes) for r in data.records) == len(objects) - 1
    assert data.records[0].ignore == [((2.0, 3.0, 22.0, 13.0), "car")]  # crowd: ignore region of its class
    assert (90.0, 40.0, 96.0, 48.0) in data.records[1].boxes
    assert data.report.clipped == 1
    assert data.report.degenerate == [f"{root / 'annotations.json'}:annotations[{len(annotations) - 1}] (id 102)"]
    first = next(a for a in annotations if a["image_id"] == 1 and not a["iscrowd"])
    x, y, w, h = first["bbox"]
    assert (x, y, x + w, y + h) == data.records[0].boxes[0]
    with pytest.raises(DataError) as err:
        read_coco(root, strict=True)
    assert "(id 102)" in err.value.where


def test_coco_errors_name_the_place(make_coco):
    root = make_coco(2)
    path = root / "annotations.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(DataError) as err:
        read_coco(root)
    assert err.value.where.startswith(f"{path}:") and "not valid JSON" in err.value.what
    make = json.dumps({"images": [{"id": 1, "file_name": "img0.png"}], "categories": [{"id": 1, "name": "car"}],
                       "annotations": [{"id": 5, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}]})
    path.write_text(make)
    with pytest.raises(DataError) as err:
        read_coco(root)
    assert "category_id 9" in err.value.what and "annotations[0] (id 5)" in err.value.where
