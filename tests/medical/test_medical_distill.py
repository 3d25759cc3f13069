"""Distillation from the CLI on DICOM folders: EfficientNet-Lite0 taught into its own first stages."""

from __future__ import annotations

from helpers import read_metrics
from test_cli_medical import FAST, dataset  # noqa: F401  (dataset: the small DICOM folder fixture)


def test_a_cut_lite0_student_learns_from_a_full_lite0_teacher(dataset, tlapp):  # noqa: F811
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "teacher", *FAST)[0] == 0
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "student", *FAST,
                         "--set", "model.backbone_options.stages=3", "--teacher", "run:teacher")
    assert code == 0, err
    m = read_metrics("student")
    block = m["distillation"]
    assert block["evaluated_on"] == m["evaluated_on"] and block["agreement"]["samples"] > 0
    assert block["student"]["parameters"] < block["teacher"]["parameters"] / 10
    assert block["teacher"]["metrics"]["accuracy"] == read_metrics("teacher")["metrics"]["accuracy"]
    # Random augmentation changes the inputs every epoch: the teacher runs live, nothing is cached.
    assert m["method"]["name"] == "distill" and block["teacher_cache"] is None


def test_a_teacher_trained_on_other_classes_is_refused(dataset, tlapp, tmp_path):  # noqa: F811
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "teacher", *FAST)[0] == 0
    (dataset / "lesion").rename(dataset / "nodule")
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "student", *FAST[:-2],
                         "--set", "model.positive_class=nodule", "--teacher", "run:teacher")
    assert code == 2 and "predicts the classes ['clear', 'lesion']" in err
