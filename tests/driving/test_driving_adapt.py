"""Detection and the methods that learn from unlabelled data: refused with the README's reason, while
``--target-test`` measures a detector on other scenes like any run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from driving_helpers import FAST


@pytest.mark.parametrize("sets", [("--set", "adapt.method=dann"), ("--set", "semi.method=fixmatch")])
def test_learning_from_unlabelled_scenes_is_refused_for_detection(tlapp, make_kitti, sets):
    data = make_kitti(4)
    code, _, err = tlapp("run", "--plugin", "driving", "--data", str(data), "--output", "x", *FAST,
                         "--target-data", str(data), "--unlabelled-data", str(data), *sets)
    assert code == 2 and "is not one" in err and "section 'Domain adaptation'" not in err
    assert "the plugin's README says why" in err
    assert not Path("x").exists()
    readme = (Path(__file__).parents[2] / "plugins/tlapp_driving/README.md").read_text()
    assert "## Domain adaptation and unlabelled data" in readme


def test_a_detector_is_measured_on_a_target_test_of_other_scenes(tlapp, make_kitti):
    data = make_kitti(10)
    other = make_kitti(6, size=(80, 40), name="other")
    code, _, err = tlapp("run", "--plugin", "driving", "--data", str(data), "--output", "run", *FAST,
                         "--target-test", str(other))
    assert code == 0, err
    metrics = json.loads(Path("run/metrics.json").read_text())
    assert metrics["target_test"]["samples"] == 6 and "map_50" in metrics["target_test"]["metrics"]
