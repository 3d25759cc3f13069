"""Self-supervised pretraining (``tlapp pretrain --method simclr``): the NT-Xent loss, a pretraining run end to end on
the toy task, what ``--init run:DIR`` takes from it (the backbone only), exact ``--resume``, the deterministic split
with a held-out part drawn the same at every validation, and the jobs it refuses."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from helpers import BadInput, check_bad_input, interrupted_and_resumed, read_metrics
from tlcore.pretrain import PRETRAIN_DEFAULTS, Part, Simclr, SimclrOptions, nt_xent

# The toy's unlabelled data: any folder is its source domain (shift 0), 64 vectors.
PRETRAIN = ("pretrain", "--plugin", "toy", "--method", "simclr", "--data", ".")


@pytest.fixture
def pretrained(toy_plugin, tlapp) -> Path:
    """A finished three-epoch pretraining run of the toy task, in ``p/``."""
    code, out, err = tlapp(*PRETRAIN, "--epochs", "3", "--output", "p")
    assert code == 0, err
    assert "fine-tune from it with --init run:p" in out
    return Path("p")


# ---------------------------------------------------------------- the loss


def _reference_nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out as in Chen et al. (2020), eq. 1, one view at a time with plain floats."""
    views = [[float(v) for v in row] for row in torch.cat([first, second])]
    n2 = len(views)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    total = 0.0
    for i in range(n2):
        partner = (i + n2 // 2) % n2
        others = sum(math.exp(cosine(views[i], views[k]) / temperature) for k in range(n2) if k != i)
        total += -math.log(math.exp(cosine(views[i], views[partner]) / temperature) / others)
    return total / n2


def test_nt_xent_of_two_samples_is_the_hand_computed_value():
    # Orthogonal samples, each view equal to its partner (up to its length, which the cosine ignores): every view
    # sees its partner at similarity 1 / 0.5 = 2 and the two other views at 0.
    first = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    second = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    loss, found = nt_xent(first, second, 0.5)
    assert float(loss) == pytest.approx(math.log(2 + math.e ** 2) - 2, rel=1e-6)  # -log(e^2 / (1 + 1 + e^2))
    assert found.tolist() == [1.0, 1.0, 1.0, 1.0]
    swapped, lost = nt_xent(first, second.flip(0), 0.5)  # each view's partner now the orthogonal one
    assert float(swapped) == pytest.approx(math.log(2 + math.e ** 2), rel=1e-6)  # -log(e^0 / (1 + 1 + e^2))
    assert lost.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert float(swapped) > float(loss) + 1.9


def test_nt_xent_equals_the_papers_formula_on_random_views():
    g = torch.Generator().manual_seed(3)
    first, second = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    for temperature in (0.1, 0.5, 2.0):
        loss, found = nt_xent(first, second, temperature)
        assert float(loss) == pytest.approx(_reference_nt_xent(first, second, temperature), rel=1e-5)
        assert found.shape == (6,) and set(found.tolist()) <= {0.0, 1.0}


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_partners():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(8, 16, generator=g)
    close = samples + 0.01 * torch.randn(8, 16, generator=g)
    matched, found = nt_xent(samples, close, 0.5)
    swapped, lost = nt_xent(samples, close.roll(1, dims=0), 0.5)
    assert found.mean() == 1.0 and lost.mean() == 0.0  # the accuracy: each view's most similar is its partner
    assert float(matched) < float(swapped) - 1.0
    # The accuracy is per view: one wrong sample out of four makes its two views wrong, and only those.
    mixed = close[:4].clone()
    mixed[2] = -samples[2]
    _, some = nt_xent(samples[:4], mixed, 0.5)
    assert some.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]


# ---------------------------------------------------------------- a pretraining run


def test_a_pretraining_run_writes_a_run_directory_with_the_held_out_pretext_loss(pretrained):
    for name in ("config.yaml", "metrics.json", "train.log", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (pretrained / name).exists(), name
    m = read_metrics(pretrained)
    assert m["status"] == "completed" and m["monitor"] == "loss"
    assert m["method"]["name"] == "simclr" and m["method"]["section"] == "pretrain"
    assert m["pretraining"]["method"] == "simclr" and m["pretraining"]["hands_on"] == "backbone"
    assert m["pretraining"]["data"] == "." and m["pretraining"]["use_with"] == "tlapp run --plugin toy --init run:p"
    assert m["data"]["samples"] == 64 and m["data"]["val"] == 6 and m["data"]["train"] == 58  # val_fraction 0.1
    assert m["evaluated_on"] == "val" and set(m["metrics"]) == {"loss", "contrastive_accuracy"}
    assert m["metrics"]["loss"] > 0 and 0 <= m["metrics"]["contrastive_accuracy"] <= 1
    for entry in m["history"]:
        assert {"loss", "contrastive_accuracy"} <= set(entry["val"])
        assert 0 <= entry["pretrain"]["contrastive_accuracy"] <= 1  # the training batches' accuracy
    assert "there is no test split" not in (pretrained / "train.log").read_text()  # held out on purpose


def test_tlapp_pretrain_defaults_to_finetune_at_one_rate_monitoring_the_loss(pretrained, tlapp):
    import yaml

    saved = yaml.safe_load((pretrained / "config.yaml").read_text())
    assert saved["strategy"] == {"name": "finetune", "layer_decay": 1.0} == PRETRAIN_DEFAULTS["strategy"]
    assert saved["train"]["monitor"] == "loss" and saved["train"]["monitor_mode"] == "min"
    assert saved["pretrain"] == {"method": "simclr", "data": "."}
    lrs = {g["group"]: g["lr"] for g in read_metrics(pretrained)["phases"][0]["groups"]}
    assert lrs["layer1"] == lrs["layer2"] == lrs["projection_head"] == 0.01
    # The user's flags come after the defaults.
    assert tlapp(*PRETRAIN, "--epochs", "1", "--output", "q", "--set", "strategy.layer_decay=0.5")[0] == 0
    lrs = {g["group"]: g["lr"] for g in read_metrics("q")["phases"][0]["groups"]}
    assert lrs["layer1"] < lrs["layer2"] < lrs["projection_head"]


def test_the_checkpoints_hand_on_the_backbone_and_keep_the_projection_head(pretrained):
    best = torch.load(pretrained / "checkpoints/best.pt", weights_only=True)
    assert best["hands_on"] == "backbone."
    assert any(k.startswith("backbone.") for k in best["model"]) and any(k.startswith("head.") for k in best["model"])
    projection = best["method"]["modules"]["projection"]
    assert projection["0.weight"].shape == (16, 16) and projection["2.weight"].shape == (128, 16)
    last = torch.load(pretrained / "checkpoints/last.pt", weights_only=True)
    assert last["hands_on"] == "backbone." and "projection" in last["method"]["modules"]


def test_the_reported_loss_is_the_best_epochs_with_that_epochs_projection_head(pretrained):
    m = read_metrics(pretrained)
    losses = [entry["val"]["loss"] for entry in m["history"]]
    # Meaningful only when the best epoch is not the last: the last epoch's head would give another loss.
    assert m["best_epoch"] < len(losses) and losses[m["best_epoch"] - 1] != losses[-1]
    assert m["best_epoch"] == 1 + losses.index(min(losses))
    assert m["metrics"]["loss"] == pytest.approx(losses[m["best_epoch"] - 1], rel=1e-6, abs=1e-7)
    best = torch.load(pretrained / "checkpoints/best.pt", weights_only=True)
    assert best["epoch"] == m["best_epoch"] and best["value"] == pytest.approx(m["metrics"]["loss"], rel=1e-6)


# ---------------------------------------------------------------- what --init run:DIR takes


def test_init_from_a_pretraining_run_copies_the_backbone_only(pretrained, tlapp):
    state = torch.load(pretrained / "checkpoints/best.pt", weights_only=True)["model"]
    backbone = [k for k in state if k.startswith("backbone.")]
    heads = [k for k in state if not k.startswith("backbone.")]
    assert heads  # the toy's pretraining model has a 2-output head that fits a 2-class run: only hands_on keeps it
    code, _, err = tlapp("run", "--plugin", "toy", "--init", "run:p", "--epochs", "1", "--output", "tuned")
    assert code == 0, err
    init = read_metrics("tuned")["init"]
    assert init["source"] == "run:p" and init["loaded"] == len(backbone) and not init["skipped"]
    assert set(heads) <= set(init["not_initialised_examples"]) and init["not_initialised"] == len(heads)
    # An ordinary run hands on its head too where the shapes match.
    assert tlapp("run", "--plugin", "toy", "--epochs", "1", "--output", "plain")[0] == 0
    assert tlapp("run", "--plugin", "toy", "--init", "run:plain", "--epochs", "1", "--output", "again")[0] == 0
    plain = read_metrics("again")["init"]
    assert plain["loaded"] == len(state) and plain["not_initialised"] == 0


def test_init_from_a_pretraining_run_leaves_the_heads_tensors_untouched(pretrained):
    from tlcore.transfer import initialise

    import tlapp_toy  # the toy installed by the fixture

    model = nn.Module()
    model.backbone = tlapp_toy.ToyNet()
    model.head = nn.Sequential(nn.Dropout(0.0), nn.Linear(16, 2))
    head_before = {k: t.clone() for k, t in model.head.state_dict().items()}
    report = initialise(model, model.backbone, None, "run:p")
    saved = torch.load(pretrained / "checkpoints/best.pt", weights_only=True)["model"]
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, saved[f"backbone.{name}"]), name
    for name, tensor in model.head.state_dict().items():
        assert torch.equal(tensor, head_before[name]) and not torch.equal(tensor, saved[f"head.{name}"]), name
    assert report.loaded == len(model.backbone.state_dict())


# ---------------------------------------------------------------- resume


def test_an_interrupted_pretraining_run_resumes_exactly(toy_plugin, tlapp, monkeypatch):
    straight, resumed = interrupted_and_resumed(tlapp, monkeypatch, (*PRETRAIN, "--epochs", "3"))
    assert straight["epoch"] == resumed["epoch"] == 3
    assert all(torch.equal(t, resumed["model"][k]) for k, t in straight["model"].items())
    for name, t in straight["method"]["modules"]["projection"].items():
        assert torch.equal(t, resumed["method"]["modules"]["projection"][name]), name
    runs = [read_metrics(Path(run)) for run in ("straight", "broken")]
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["best_epoch"] == runs[1]["best_epoch"]
    kept = ("epoch", "train_loss", "pretrain", "val")  # not the timings
    histories = [[{k: h[k] for k in kept} for h in run["history"]] for run in runs]
    assert histories[0] == histories[1]
    assert runs[1]["status"] == "completed" and "pretraining" in runs[1]


# ---------------------------------------------------------------- the data


def _pretraining_data(seed: int = 0, val_fraction: float = 0.1):
    """Simclr's data bundle for the toy job, built as a run builds it."""
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    plugins = load_plugins("toy")
    task, job = resolve_job(plugins, plugin="toy", config_file=None, pretraining=True,
                            overrides={"pretrain": {"method": "simclr", "data": "."}, "train": {"seed": seed}})
    run = SimpleNamespace(job=job, task=task, context=make_context(plugins, job))
    return Simclr(SimclrOptions(val_fraction=val_fraction)).build_data(run)  # type: ignore[arg-type]


def test_the_split_is_deterministic_disjoint_and_follows_the_seed(toy_plugin, tlapp):
    data = _pretraining_data()
    assert isinstance(data.train, Part) and isinstance(data.val, Part) and data.test is None
    assert len(data.val) == 6 and len(data.train) == 58
    assert sorted(data.train.indices + data.val.indices) == list(range(64))
    assert _pretraining_data().val.indices == data.val.indices  # the same seed, the same split
    assert _pretraining_data(seed=1).val.indices != data.val.indices
    assert len(_pretraining_data(val_fraction=0.5).val) == 32
    assert data.summary["samples"] == 64 and data.summary["train"] == 58 and data.summary["val"] == 6


def test_the_held_out_part_draws_the_same_views_at_every_validation(toy_plugin, tlapp):
    data = _pretraining_data()

    def views(part: Part) -> list[torch.Tensor]:
        return [torch.cat(part[i][0]) for i in range(len(part))]

    held_out = views(data.val)
    trained = views(data.train)
    for epoch in (1, 5):
        data.set_epoch(epoch)  # as the engine does before each epoch
        data.val.set_epoch(epoch)  # even if it were told an epoch, the held-out part keeps its own
        assert all(torch.equal(a, b) for a, b in zip(views(data.val), held_out))
        again = views(data.train)
        assert not any(torch.equal(a, b) for a, b in zip(again, trained))  # the training part draws anew
        trained = again
    # The two parts share one dataset: reading the training part in between does not move the held-out views.
    assert all(torch.equal(torch.cat(data.val[i][0]), held_out[i]) for i in range(len(data.val)))
    weak, strong = data.val[0][0]
    assert not torch.equal(weak, strong)  # two views of the sample


# ---------------------------------------------------------------- jobs it refuses


def pretrain(*args: str):
    return lambda tmp: ["pretrain", "--plugin", "toy", "--output", str(tmp / "o"), "--epochs", "1", *args]


REFUSED = [
    BadInput("no method", pretrain("--data", "."), ("pretraining needs a self-supervised method", "pretrain.method",
                                                   "--method NAME", "simclr")),
    BadInput("a method that is not self-supervised", pretrain("--method", "dann", "--data", "."),
             ("dann", "pretrain.method")),
    BadInput("a pretraining method for tlapp run",
             lambda tmp: ["run", "--plugin", "toy", "--output", str(tmp / "o"), "--set", "pretrain.method=simclr"],
             ("self-supervised pretraining", "pretrain.method", "tlapp pretrain --plugin toy --method simclr")),
    BadInput("no data", pretrain("--method", "simclr"), ("needs unlabelled in-domain data", "pretrain.data",
                                                        "--data PATH")),
    BadInput("data not found", pretrain("--method", "simclr", "--data", "nowhere"),
             ("pretraining data not found: nowhere", "pretrain.data", "check --data")),
    BadInput("a misspelt option", pretrain("--method", "simclr", "--data", ".", "--set", "pretrain.tempreature=1"),
             ("pretrain.tempreature", "temperature")),
]


@pytest.mark.parametrize("row", REFUSED, ids=[r.id for r in REFUSED])
def test_jobs_that_cannot_pretrain_are_refused_before_anything_is_written(toy_plugin, tlapp, tmp_path, row):
    check_bad_input(tlapp, tmp_path, row)
    assert not (tmp_path / "o").exists()


def test_strategy_auto_is_refused(toy_plugin, tlapp, tmp_path):
    check_bad_input(tlapp, tmp_path, BadInput("auto", pretrain("--method", "simclr", "--data", ".", "--set",
                                                               "strategy.name=auto"), ("strategy",)))
    assert not (tmp_path / "o").exists()


def test_strategy_auto_is_refused_for_what_it_is(toy_plugin, tlapp, tmp_path):
    check_bad_input(tlapp, tmp_path, BadInput("auto", pretrain("--method", "simclr", "--data", ".", "--set",
                                                               "strategy.name=auto"),
                                              ("strategy auto races", "strategy.name", "finetune")))


def test_pretraining_from_scratch_runs(toy_plugin, tlapp):
    code, _, err = tlapp(*PRETRAIN, "--epochs", "1", "--output", "s", "--set", "strategy.name=scratch")
    assert code == 0, err


def test_too_few_samples_are_refused(toy_plugin, tlapp, tmp_path):
    check_bad_input(tlapp, tmp_path, BadInput("3 samples", pretrain("--method", "simclr", "--data", ".",
                                                                    "--set", "data.n=3"),
                                              ("at least 4 samples", "holds 3", "pretrain.data", "more unlabelled")))
    assert not (tmp_path / "o/checkpoints/last.pt").exists()


@pytest.mark.parametrize("command", [("evaluate", "--run", "p"), ("predict", "--run", "p", "x")])
def test_a_pretraining_run_is_not_evaluated_or_predicted_with(pretrained, tlapp, tmp_path, command):
    message = check_bad_input(tlapp, tmp_path, BadInput(command[0], lambda tmp: list(command),
                                                        ("self-supervised pretraining run", "simclr",
                                                         "tlapp run --plugin toy --init run:p")))
    assert "p" in message.split("where:")[1]


def test_a_task_without_unlabelled_data_is_refused(toy_plugin, tlapp, tmp_path, monkeypatch):
    from tlcore.task import Task

    import tlapp_toy  # the toy installed by the fixture

    monkeypatch.setattr(tlapp_toy.ToyTask, "unlabelled_data", Task.unlabelled_data)
    check_bad_input(tlapp, tmp_path, BadInput("no unlabelled_data", pretrain("--method", "simclr", "--data", "."),
                                              ("does not read unlabelled data", "pretrain.method",
                                               "Task.unlabelled_data")))
    assert not (tmp_path / "o").exists()


def test_a_backbone_without_pooled_features_is_refused(toy_plugin, tlapp, tmp_path, monkeypatch):
    import tlapp_toy  # the toy installed by the fixture

    monkeypatch.setattr(tlapp_toy.ToyNet, "forward", lambda self, x: self.layer2(self.layer1(x)).unsqueeze(1))
    check_bad_input(tlapp, tmp_path, BadInput("3-D features", pretrain("--method", "simclr", "--data", "."),
                                              ("one feature vector per sample", "model.backbone", "pooled features")))


def test_a_last_training_batch_of_one_sample_does_not_stop_pretraining(toy_plugin, tlapp):
    # 19 samples: 2 held out, 17 to train on in batches of 8, 8 and 1.
    code, _, err = tlapp(*PRETRAIN, "--epochs", "1", "--output", "p", "--set", "data.n=19")
    assert code == 0, err
