"""Knowledge distillation (method ``distill``, ``--teacher run:DIR``): the loss, the teacher's cache, exact
resume, the metrics.json block, and clear errors for teachers that cannot serve the job."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import interrupted_and_resumed, read_metrics
from tlcore.distill import sample_keys, soft_target_loss

STUDENT = ("--set", "model.backbone_options.width=4")


@pytest.fixture
def teacher(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "teacher", "--epochs", "3")
    assert code == 0, err
    return Path("teacher")


def _weights(run_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(f"{run_dir}/checkpoints/last.pt", weights_only=True)["model"]


# ---------------------------------------------------------------- the loss


def test_the_soft_loss_is_temperature_squared_times_the_kl_divergence():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = 4.0
    p, q = torch.softmax(teacher / t, 1), torch.softmax(student / t, 1)
    expected = (p * (p.log() - q.log())).sum(1).mean() * t ** 2
    assert torch.allclose(soft_target_loss(student, teacher, t, False), expected, atol=1e-6)
    assert soft_target_loss(teacher, teacher, t, False).abs() < 1e-6


def test_the_multilabel_soft_loss_is_a_bernoulli_kl_per_label():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    t = 2.0
    p, q = torch.sigmoid(teacher / t), torch.sigmoid(student / t)
    kl = p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
    assert torch.allclose(soft_target_loss(student, teacher, t, True), kl.mean() * t ** 2, atol=1e-6)
    assert soft_target_loss(teacher, teacher, t, True).abs() < 1e-6


def test_a_multitask_soft_loss_is_the_mean_over_tasks():
    g = torch.Generator().manual_seed(2)
    s = {"a": torch.randn(3, 2, generator=g), "b": torch.randn(3, 4, generator=g)}
    t = {"a": torch.randn(3, 2, generator=g), "b": torch.randn(3, 4, generator=g)}
    both = soft_target_loss(s, t, 3.0, {"a": False, "b": True})
    alone = [soft_target_loss(s["a"], t["a"], 3.0, False), soft_target_loss(s["b"], t["b"], 3.0, True)]
    assert torch.allclose(both, torch.stack(alone).mean())


def test_sample_keys_ignore_the_padding_a_batch_adds():
    short = {"input_ids": torch.tensor([[101, 7, 102, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}
    tight = {"input_ids": torch.tensor([[101, 7, 102]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    other = {"input_ids": torch.tensor([[101, 8, 102]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    assert sample_keys(short) == sample_keys(tight) != sample_keys(other)
    images = torch.zeros(2, 3, 4, 4)
    images[1, 0, 0, 0] = 1
    first, second = sample_keys(images)
    assert first != second and sample_keys(images[:1]) == [first]


# ---------------------------------------------------------------- runs


def test_a_distilled_run_records_teacher_and_student_side_by_side(teacher, tlapp):
    code, out, err = tlapp("run", "--plugin", "toy", "--output", "student", "--epochs", "2",
                           "--teacher", "run:teacher", *STUDENT)
    assert code == 0, err
    m = read_metrics("student")
    assert m["method"]["name"] == "distill" and m["method"]["options"]["teacher"] == "run:teacher"
    block = m["distillation"]
    assert block["evaluated_on"] == "test" and (block["temperature"], block["alpha"]) == (4.0, 0.5)
    t, s = block["teacher"], block["student"]
    assert t["run"] == "teacher" and t["backbone"] == s["backbone"] == "toy-mlp"
    assert s["parameters"] < t["parameters"] and s["weights_bytes"] < t["weights_bytes"]
    assert t["ms_per_sample"] > 0 and s["ms_per_sample"] > 0 and block["latency"]["rounds"] == 10
    # The teacher's metrics are those its own run measured on the same split.
    own = read_metrics("teacher")["metrics"]
    assert math.isclose(t["metrics"]["accuracy"], own["accuracy"]) and "accuracy_ci" in t["metrics"]
    assert s["metrics"]["accuracy"] == m["metrics"]["accuracy"]
    assert 0 <= block["agreement"]["overall"] <= 1 and block["agreement"]["samples"] == 21
    assert block["agreement"]["kl"] >= 0
    # No augmentation: the teacher ran once over the training split, then every step found its outputs.
    cache = block["teacher_cache"]
    assert cache["samples"] == 22 and cache["misses"] == 0 and cache["hits"] == 2 * 22


def test_with_alpha_one_distillation_is_supervised_training(teacher, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "plain", "--epochs", "2", *STUDENT)[0] == 0
    assert tlapp("run", "--plugin", "toy", "--output", "hard", "--epochs", "2", "--teacher", "run:teacher",
                 "--set", "method.alpha=1", *STUDENT)[0] == 0
    assert tlapp("run", "--plugin", "toy", "--output", "soft", "--epochs", "2", "--teacher", "run:teacher",
                 *STUDENT)[0] == 0
    plain, hard, soft = _weights("plain"), _weights("hard"), _weights("soft")
    assert all(torch.equal(plain[k], hard[k]) for k in plain)
    assert any(not torch.equal(plain[k], soft[k]) for k in plain if plain[k].is_floating_point())


def test_cached_teacher_outputs_train_as_the_teacher_itself_would(teacher, tlapp):
    args = ("run", "--plugin", "toy", "--epochs", "2", "--teacher", "run:teacher", *STUDENT)
    assert tlapp(*args, "--output", "cached")[0] == 0
    assert tlapp(*args, "--output", "live", "--set", "method.cache_teacher=false")[0] == 0
    assert read_metrics("live")["distillation"]["teacher_cache"] is None
    cached, live = _weights("cached"), _weights("live")
    assert all(torch.allclose(cached[k].float(), live[k].float(), atol=1e-5) for k in cached)


def test_random_augmentation_skips_the_cache(teacher, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "noisy", "--epochs", "1", "--teacher", "run:teacher",
                         "--set", "augment=toy-noise", *STUDENT)
    assert code == 0, err
    assert read_metrics("noisy")["distillation"]["teacher_cache"] is None


def test_resume_of_a_distilled_run_matches_an_uninterrupted_one(teacher, tlapp, monkeypatch):
    args = ("run", "--plugin", "toy", "--epochs", "3", "--seed", "5", "--teacher", "run:teacher", *STUDENT)
    straight, resumed = interrupted_and_resumed(tlapp, monkeypatch, args)
    assert all(torch.equal(tensor, resumed["model"][key]) for key, tensor in straight["model"].items())
    assert resumed["method"]["modules"] == {}  # the teacher is not part of the student's checkpoint


# ---------------------------------------------------------------- teachers that cannot serve


def test_a_missing_teacher_fails_before_anything_is_written(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--teacher", "run:nowhere")
    assert code == 2 and "nowhere is not a tlapp run directory" in err and "--teacher run:DIR" in err
    assert not Path("x").exists()


def test_a_teacher_of_another_task_or_other_classes_is_refused(teacher, tlapp):
    other = Path("other")
    other.mkdir()
    (other / "checkpoints").mkdir()
    (other / "checkpoints" / "best.pt").write_bytes((teacher / "checkpoints" / "best.pt").read_bytes())
    (other / "config.yaml").write_text((teacher / "config.yaml").read_text().replace("task: vectors",
                                                                                   "task: images"))
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--teacher", "run:other")
    assert code == 2 and "task 'images'" in err and "same plugin and task" in err

    state = torch.load(teacher / "checkpoints" / "best.pt", weights_only=True)
    state["class_names"] = ["b", "a"]
    torch.save(state, teacher / "checkpoints" / "best.pt")
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "y", "--teacher", "run:teacher")
    assert code == 2 and "predicts the classes ['b', 'a']" in err and "same classes" in err


def test_the_teacher_cannot_be_the_runs_own_output(teacher, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "teacher", "--overwrite", "--teacher", "run:teacher")
    assert code == 2 and "this run's own output folder" in err
    assert (teacher / "checkpoints" / "best.pt").exists()


def test_bad_distillation_options_name_the_key(teacher, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--teacher", "run:teacher",
                         "--set", "method.alpha=1.5")
    assert code == 2 and "method.alpha" in err
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--teacher", "run:teacher",
                         "--set", "method.temprature=2")
    assert code == 2 and "method.temprature" in err and "temperature" in err


def test_the_soft_loss_pulls_the_student_towards_the_teacher():
    """A student trained on the soft loss alone (alpha 0) ends closer to the teacher than it started."""
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 3)
    student = torch.nn.Linear(6, 3)
    x = torch.randn(64, 6)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)

    @torch.no_grad()
    def gap() -> float:
        return float(F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(teacher(x), 1), reduction="batchmean",
                              log_target=True))

    before = gap()
    for _ in range(50):
        optimizer.zero_grad()
        soft_target_loss(student(x), teacher(x).detach(), 2.0, False).backward()
        optimizer.step()
    assert gap() < before / 10


def test_detection_refuses_a_teacher_before_reading_data(tlapp, tmp_path):
    code, _, err = tlapp("run", "--plugin", "driving", "--output", "x", "--teacher", f"run:{tmp_path}")
    assert code == 2 and "needs a classification task" in err and "'Distillation'" in err
    assert not Path("x").exists()


def test_a_multitask_student_learns_every_task_from_a_multitask_teacher(toy_plugin, tlapp):
    tasks = ("--set", "data.label_columns=[blob, sign, parts]",
             "--set", "model.heads={blob: linear, sign: linear, parts: {multilabel: true}}")
    assert tlapp("run", "--plugin", "toy", "--output", "teacher", "--epochs", "3", *tasks)[0] == 0
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "student", "--epochs", "2", *tasks, *STUDENT,
                         "--teacher", "run:teacher")
    assert code == 0, err
    block = read_metrics("student")["distillation"]
    assert set(block["agreement"]["per_task"]) == {"blob", "sign", "parts"}
    assert block["teacher"]["metrics"]["blob"]["accuracy"] == read_metrics("teacher")["metrics"]["blob"]["accuracy"]
    # A single-task student cannot learn from a multi-task teacher.
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "single", "--teacher", "run:teacher")
    assert code == 2 and "predicts the classes" in err
