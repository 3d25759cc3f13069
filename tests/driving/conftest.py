"""Fixtures of the driving tests: tiny KITTI and COCO datasets written on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from driving_helpers import kitti_line, random_objects, scene


@pytest.fixture
def make_kitti(tmp_path):
    """make_kitti(n, extra={index: [label lines]}, size=(96, 48)) -> a KITTI folder of n images."""

    def make(n: int = 10, extra: dict[int, list[str]] | None = None, size=(96, 48), name: str = "kitti",
             empty: tuple[int, ...] = ()) -> Path:
        root = tmp_path / name
        (root / "image_2").mkdir(parents=True)
        (root / "label_2").mkdir()
        rng = np.random.RandomState(7)
        for i in range(n):
            w, h = size if not isinstance(size, list) else size[i % len(size)]
            objects = [] if i in empty else random_objects(rng, w, h)
            scene(w, h, objects, i).save(root / "image_2" / f"{i:06d}.png")
            lines = [kitti_line(kind, box) for kind, box in objects] + list((extra or {}).get(i, []))
            (root / "label_2" / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
        return root

    return make


@pytest.fixture
def make_coco(tmp_path):
    """make_coco(n) -> a folder with annotations.json and images/, categories car (1) and person (2)."""

    def make(n: int = 8, extra_annotations: list[dict] | None = None) -> Path:
        root = tmp_path / "coco"
        (root / "images").mkdir(parents=True)
        rng = np.random.RandomState(3)
        images, annotations = [], []
        for i in range(n):
            objects = random_objects(rng, 96, 48)
            scene(96, 48, objects, 100 + i).save(root / "images" / f"img{i}.png")
            images.append({"id": i + 1, "file_name": f"img{i}.png", "width": 96, "height": 48})
            for kind, (x1, y1, x2, y2) in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": 1 if kind == "Car" else 2,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0})
        annotations += extra_annotations or []
        data = {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]}
        (root / "annotations.json").write_text(json.dumps(data, indent=1))
        return root

    return make
