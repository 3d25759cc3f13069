"""Bad driving inputs: each ends in exit 2 and one message naming the file and record, before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import BadInput, check_bad_input

LINE = "Car 0.00 0 -10 {} 1.5 1.8 4.2 0 1.65 20 0"


def image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 255, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def kitti(tmp: Path, n: int = 6, truncated: tuple[int, ...] = (), labels: dict[int, str] | None = None,
          no_label: tuple[int, ...] = ()) -> Path:
    root = tmp / "kitti"
    for i in range(n):
        png = root / "image_2" / f"{i:06d}.png"
        image(png, i)
        if i in truncated:
            png.write_bytes(png.read_bytes()[:200])
        if i not in no_label:
            label = root / "label_2" / f"{i:06d}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text((labels or {}).get(i, LINE.format("4 6 20 18")) + "\n")
    return root


def coco(tmp: Path, change=None, n: int = 6) -> Path:
    root = tmp / "coco"
    for i in range(n):
        image(root / "images" / f"img{i}.png", i)
    data = {"images": [{"id": i + 1, "file_name": f"img{i}.png", "width": 40, "height": 24} for i in range(n)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 6, 16, 12]}
                            for i in range(n)],
            "categories": [{"id": 1, "name": "car"}]}
    data = change(data, tmp) if change else data
    path = root / "annotations.json"
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(json.dumps(data))
    return root


def run(path: Path, *sets: str) -> list[str]:
    return ["run", "--plugin", "driving", "--data", str(path), "--epochs", "1", "--output", str(path.parent / "o"),
            *[arg for s in sets for arg in ("--set", s)]]


def check(path: Path, *sets: str) -> list[str]:
    return ["data", "check", "--plugin", "driving", "--data", str(path), *[arg for s in sets for arg in ("--set", s)]]


def edit(fn):
    """A COCO change that edits the parsed document in place and returns it."""
    def change(data, tmp):
        fn(data, tmp)
        return data
    return change


def symlink_out(data, tmp):
    outside = tmp / "elsewhere.png"
    image(outside)
    (tmp / "coco" / "images" / "link.png").symlink_to(outside)
    data["images"][1]["file_name"] = "link.png"


def truncate_img1(data, tmp):
    (tmp / "coco" / "images" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n")


ROWS = [
    BadInput("truncated png", lambda tmp: run(kitti(tmp, truncated=(2,))),
             ("000002.png", "unreadable image", "data.on_error=skip")),
    BadInput("every truncated png named", lambda tmp: run(kitti(tmp, truncated=(1, 4))),
             ("2 problems", "000001.png", "000004.png")),
    BadInput("kitti short label line", lambda tmp: run(kitti(tmp, labels={3: "Car 0 0"})),
             ("000003.txt:1", "at least 8 fields")),
    BadInput("kitti box not numbers", lambda tmp: run(kitti(tmp, labels={0: LINE.format("a b c d")})),
             ("000000.txt:1", "not numbers")),
    BadInput("kitti image without label", lambda tmp: run(kitti(tmp, no_label=(5,))),
             ("000005.png", "no label file")),
    BadInput("kitti degenerate box, strict", lambda tmp: run(kitti(tmp, labels={2: LINE.format("9 9 9 20")}),
                                                              "data.strict=true"),
             ("000002.txt:1", "degenerate box")),
    BadInput("on_error misspelt", lambda tmp: run(kitti(tmp), "data.on_error=ignore"), ("data.on_error",)),
    BadInput("coco not json", lambda tmp: ["run", "--plugin", "driving", "--data",
                                           str(coco(tmp, lambda d, t: b'{"images": [')), "--epochs", "1"],
             ("annotations.json", "valid JSON")),
    BadInput("coco top-level list", lambda tmp: check(coco(tmp, lambda d, t: d["images"])),
             ("annotations.json", "top level is a JSON list")),
    BadInput("coco no categories", lambda tmp: check(coco(tmp, lambda d, t: {k: d[k] for k in ("images",
                                                                                                "annotations")})),
             ("annotations.json", "no 'categories'")),
    BadInput("coco images not a list", lambda tmp: check(coco(tmp, lambda d, t: {**d, "images": {}})),
             ("annotations.json:images", "not a list")),
    BadInput("coco category without name", lambda tmp: check(coco(tmp, edit(lambda d, t: d["categories"][0].pop(
        "name")))), ("annotations.json:categories[0]", "no 'name'")),
    BadInput("coco duplicate image id", lambda tmp: run(coco(tmp, edit(lambda d, t: d["images"][3].update(id=1)))),
             ("annotations.json:images[3] (id 1)", "duplicate image id 1", "images[0]")),
    BadInput("coco image without file_name", lambda tmp: run(coco(tmp, edit(lambda d, t: d["images"][2].pop(
        "file_name")))), ("annotations.json:images[2]", "no 'file_name'")),
    BadInput("coco annotation without bbox", lambda tmp: run(coco(tmp, edit(lambda d, t: d["annotations"][4].pop(
        "bbox")))), ("annotations.json:annotations[4] (id 5)", "no 'bbox'")),
    BadInput("coco annotation without image_id", lambda tmp: run(coco(tmp, edit(
        lambda d, t: d["annotations"][1].pop("image_id")))), ("annotations[1] (id 2)", "no 'image_id'")),
    BadInput("coco annotation of an unknown image", lambda tmp: run(coco(tmp, edit(
        lambda d, t: d["annotations"][0].update(image_id=77)))), ("annotations[0] (id 1)", "image_id 77")),
    BadInput("coco bbox not four numbers", lambda tmp: run(coco(tmp, edit(
        lambda d, t: d["annotations"][2].update(bbox=[1, 2, "3"])))), ("annotations[2] (id 3)", "bbox must be")),
    BadInput("coco truncated image", lambda tmp: run(coco(tmp, edit(truncate_img1))),
             ("img1.png", "unreadable image")),
    BadInput("coco file_name climbs out", lambda tmp: check(coco(tmp, edit(
        lambda d, t: d["images"][0].update(file_name="../../secret.png"))), "data.on_error=skip"),
             ("images[0]", "climbs out with '..'", "data.allow_outside_root=true")),
    BadInput("coco absolute file_name", lambda tmp: check(coco(tmp, edit(
        lambda d, t: d["images"][2].update(file_name="/etc/passwd")))), ("images[2]", "is absolute")),
    BadInput("coco symlink out", lambda tmp: check(coco(tmp, edit(symlink_out))),
             ("images[1]", "through a symlink")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(tlapp, tmp_path, monkeypatch, row):
    monkeypatch.setenv("TLAPP_PLUGINS", "driving")
    check_bad_input(tlapp, tmp_path, row)
