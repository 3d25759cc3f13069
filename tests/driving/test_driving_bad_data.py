"""Bad driving data: undecodable images, on_error skip, malformed COCO files, paths leaving the dataset, warnings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tlapp_driving.formats import read_coco, read_kitti
from tlcore import DataError


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_truncated_images_are_found_while_indexing_and_all_named(make_kitti):
    root = make_kitti(5)
    for i in (1, 3):
        truncate(root / "image_2" / f"00000{i}.png")
    with pytest.raises(DataError) as err:
        read_kitti(root)
    text = err.value.render()
    assert "2 problems" in text and "000001.png" in text and "000003.png" in text and "unreadable image" in text
    assert "data.on_error=skip" in err.value.fix


def test_truncated_jpeg_is_found(make_kitti):
    from PIL import Image

    root = make_kitti(3)
    png = root / "image_2" / "000000.png"
    Image.open(png).save(root / "image_2" / "000000.jpg", quality=90)
    png.unlink()
    read_kitti(root)  # an intact JPEG reads
    truncate(root / "image_2" / "000000.jpg", 0.6)
    with pytest.raises(DataError, match="unreadable image"):
        read_kitti(root)


def test_skip_leaves_out_the_spoiled_images_and_lists_them(make_kitti):
    root = make_kitti(5, extra={2: ["Car 0 0"]})
    truncate(root / "image_2" / "000001.png")
    data = read_kitti(root, on_error="skip")
    assert [r.path.name for r in data.records] == ["000000.png", "000003.png", "000004.png"]
    assert data.report.images == 3
    skipped = {s["file"]: s["reason"] for s in data.report.skipped}
    assert set(skipped) == {str(root / "image_2" / "000001.png"), str(root / "image_2" / "000002.png")}
    assert "at least 8 fields" in skipped[str(root / "image_2" / "000002.png")]
    assert data.report.as_dict()["skipped_images"] == 2


def test_skip_through_the_cli_logs_and_data_check_lists(tlapp, make_kitti):
    root = make_kitti(5)
    truncate(root / "image_2" / "000004.png")
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(root),
                           "--set", "data.on_error=skip")
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 4 and report["skipped_images"] == 1
    assert report["skipped_files"][0]["file"].endswith("000004.png")
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(root))
    assert code == 0 and json.loads(out)["problem_count"] == 1  # fail mode: listed as a problem, not raised


def coco(root, data) -> None:
    (root / "annotations.json").write_text(json.dumps(data))


@pytest.mark.parametrize("change,says,where", [
    (lambda d: d["images"], "top level is a JSON list", "annotations.json"),
    (lambda d: {k: v for k, v in d.items() if k != "categories"}, "no 'categories'", "annotations.json"),
    (lambda d: {**d, "images": {"id": 1}}, "'images' is a JSON object, not a list", "annotations.json:images"),
])
def test_coco_files_that_are_not_coco_fail_at_once(make_coco, change, says, where):
    root = make_coco(2)
    data = json.loads((root / "annotations.json").read_text())
    coco(root, change(data))
    for options in ({}, {"classes": ["car"], "collect": True}):
        with pytest.raises(DataError) as err:
            read_coco(root, **options)
        assert says in err.value.what and err.value.where.endswith(where)


def test_coco_records_with_their_own_messages(make_coco):
    root = make_coco(4)
    data = json.loads((root / "annotations.json").read_text())
    del data["images"][3]["file_name"]
    data["images"].append({"id": 1, "file_name": "img2.png"})  # images[0]'s id again
    data["images"].append("img0.png")
    first_ann = next(i for i, a in enumerate(data["annotations"]) if a["image_id"] == 2)
    del data["annotations"][first_ann]["bbox"]
    data["annotations"].append({"id": 900, "category_id": 1, "bbox": [1, 1, 5, 5]})
    data["categories"].append({"id": 3})
    coco(root, data)
    path = root / "annotations.json"
    classes = ["car", "person"]  # the default, the categories, would stop at the broken one
    result = read_coco(root, classes=classes, collect=True)
    problems = {p["where"]: p["what"] for p in result.report.problems}
    assert problems[f"{path}:images[4] (id 1)"].startswith("duplicate image id 1: images[0] has it too")
    assert problems[f"{path}:images[3]"] == "the image entry has no 'file_name'"
    assert problems[f"{path}:images[5]"] == "an image entry is a JSON object, not a string"
    assert problems[f"{path}:annotations[{first_ann}] (id {first_ann + 1})"] == "the annotation has no 'bbox'"
    assert problems[f"{path}:annotations[{len(data['annotations']) - 1}] (id 900)"] == \
        "the annotation has no 'image_id'"
    assert problems[f"{path}:categories[2]"] == "the category has no 'name'"
    assert len(problems) == 6  # annotations of the duplicate and of the broken entry are not reported again
    with pytest.raises(DataError, match="6 problems"):
        read_coco(root, classes=classes)
    with pytest.raises(DataError, match="the category has no 'name'") as err:
        read_coco(root)
    assert err.value.where == f"{path}:categories[2]"
    skipped = read_coco(root, classes=classes, on_error="skip")
    # img0 shares its id, img1 lost an annotation, the entry of img3 has no file name: only img2 is left.
    assert [r.path.name for r in skipped.records] == ["img2.png"]
    assert {s["file"] for s in skipped.report.skipped} == {str(root / "images" / "img0.png"),
                                                          str(root / "images" / "img1.png")}


@pytest.mark.parametrize("name", ["../../outside.png", "/etc/hostname", "link.png"])
def test_coco_file_names_stay_inside_the_image_folder(make_coco, tmp_path, name):
    root = make_coco(2)
    outside = tmp_path / "outside.png"
    (root / "images" / "img0.png").rename(outside)
    (root / "images" / "link.png").symlink_to(outside)
    data = json.loads((root / "annotations.json").read_text())
    data["images"][0]["file_name"] = name
    coco(root, data)
    with pytest.raises(DataError) as err:
        read_coco(root, collect=True)
    assert "outside the dataset folder" in err.value.what and "images[0]" in err.value.where
    assert "data.allow_outside_root=true" in err.value.fix
    if name != "/etc/hostname":
        assert read_coco(root, allow_outside_root=True).records[0].path.name in ("outside.png", "link.png")


def test_classes_without_boxes_are_warned_about(tlapp, make_kitti, caplog):
    root = make_kitti(6, empty=(1, 2))
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(root),
                           "--set", "data.classes=[Car,Pedestrian,Truck]")
    assert code == 0, err
    report = json.loads(out)
    assert report["classes_without_objects"] == ["Truck"] and report["empty_images"] == 2
    assert any("['Truck'] have no boxes" in w for w in report["warnings"])
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    plugins = load_plugins("driving")
    task, job = resolve_job(plugins, plugin="driving", config_file=None,
                            overrides={"data": {"path": str(root), "classes": ["Car", "Truck"]},
                                       "train": {"device": "cpu"}})
    with caplog.at_level(logging.INFO):
        task.build_data(job, make_context(plugins, job))
    assert "['Truck'] have no boxes" in caplog.text and "2 of 6 images have no boxes" in caplog.text


def test_predict_names_every_unreadable_input_before_the_model_runs(make_kitti, tmp_path):
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    root = make_kitti(4)
    for i in (0, 2):
        truncate(root / "image_2" / f"00000{i}.png")
    plugins = load_plugins("driving")
    task, job = resolve_job(plugins, plugin="driving", config_file=None, overrides={"train": {"device": "cpu"}})
    with pytest.raises(DataError) as err:
        task.predict(None, job, ["Car"], [str(root / "image_2")], make_context(plugins, job), tmp_path / "out")
    assert "2 of 4 input images cannot be read" in err.value.what
    assert "000000.png" in err.value.what and "000002.png" in err.value.what


def test_build_data_with_skip_writes_skipped_files_and_logs(make_kitti, tmp_path, caplog):
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    root = make_kitti(6)
    truncate(root / "image_2" / "000005.png")
    plugins = load_plugins("driving")
    task, job = resolve_job(plugins, plugin="driving", config_file=None,
                            overrides={"data": {"path": str(root), "on_error": "skip"}, "train": {"device": "cpu"}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.WARNING):
        data = task.build_data(job, make_context(plugins, job, run_dir))
    assert sum(s["images"] for s in data.summary["splits"].values()) == 5
    assert "left out 1 unusable image(s)" in caplog.text and "000005.png" in caplog.text
    skipped = json.loads((run_dir / "skipped_files.json").read_text())
    assert [Path(s["file"]).name for s in skipped] == ["000005.png"]
