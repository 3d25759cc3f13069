"""Masked language modelling (``tlapp pretrain --plugin text --method mlm``): the loss on the masked tokens only, the
decoder tied to the word embeddings, a pretraining run end to end and fine-tuning from it (the backbone only),
exact ``--resume``, and the jobs it refuses."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tlcore.run
from helpers import BadInput, check_bad_input, cli_exit_code, read_metrics
from tlapp_text.pretraining import MaskedLanguageModelling, MlmOptions
from tlapp_text.task import SAMPLE_DATA
from tlcore import ConfigError
from tlcore.plugins import load_plugins
from text_helpers import small_corpus, task_job, text_plugin_in, write_csv

# One transformer block, small batches, one torch thread (the session fixture): seconds on a CPU.
SMALL = ("--batch-size", "8", "--set", "model.backbone_options.layers=1")


def pool_rows(count: int) -> list[list[str]]:
    """The first ``count`` texts of the bundled sample's training split, without their labels."""
    with open(SAMPLE_DATA / "train.csv", newline="", encoding="utf-8") as f:
        return [[r["text"]] for r in csv.DictReader(f)][:count]


# ---------------------------------------------------------------- the loss, on a method set up by hand


@pytest.fixture(scope="module")
def mlm():
    """(method, model, task, job, context): the method set up on a one-block encoder (random weights), both in
    evaluation mode (no dropout)."""
    task, job, context = task_job(model={"backbone_options": {"layers": 1}})
    model = task.build_model(job, 2, context).eval()
    method = MaskedLanguageModelling(MlmOptions())
    method.setup(SimpleNamespace(job=job, task=task, context=context), model)  # type: ignore[arg-type]
    assert method.head is not None
    method.head.eval()
    return method, model, task, job, context


def views_batch(mlm, tmp_path: Path, count: int = 6):
    method, model, task, job, context = mlm
    data = task.unlabelled_data(job, context, write_csv(tmp_path / "pool.csv", pool_rows(count), header=("text",)),
                                [], views=2)
    (weak, strong), _ = data.collate_fn([data.dataset[i] for i in range(count)])
    return weak, strong


def last_hidden(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.backbone.transformer(input_ids=inputs["input_ids"],
                                      attention_mask=inputs["attention_mask"]).last_hidden_state


def test_the_loss_is_cross_entropy_over_the_masked_tokens_of_the_strong_view(mlm, tmp_path):
    method, model, *_ = mlm
    weak, strong = views_batch(mlm, tmp_path)
    masked = weak["input_ids"] != strong["input_ids"]
    assert 0 < int(masked.sum()) < int(weak["attention_mask"].sum()) / 4  # 15% of the ordinary tokens
    with torch.no_grad():
        loss, n, measures = method.pretext(model, (weak, strong))
        # The reference: BERT's head on every position of the strong view, labels -100 where nothing was masked.
        logits = method.head(last_hidden(model, strong), model.backbone.transformer.get_input_embeddings().weight)
        labels = torch.where(masked, weak["input_ids"], torch.full_like(weak["input_ids"], -100))
        expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        hits = (logits.argmax(-1) == weak["input_ids"])[masked].float().mean()
        # Reading the weak view (the answers) instead would give another loss.
        seen = method.head(last_hidden(model, weak), model.backbone.transformer.get_input_embeddings().weight)
        cheating = F.cross_entropy(seen.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert n == 6 and float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert set(measures) == {"masked_accuracy"} and measures["masked_accuracy"] == pytest.approx(float(hits))
    assert abs(float(cheating) - float(loss)) > 1e-3


def test_only_the_masked_positions_send_gradient_into_the_encoder_s_output(mlm, tmp_path):
    method, model, *_ = mlm
    weak, strong = views_batch(mlm, tmp_path)
    outputs: list[torch.Tensor] = []

    def keep(module, args, output):
        output.last_hidden_state.retain_grad()
        outputs.append(output.last_hidden_state)

    handle = model.backbone.transformer.register_forward_hook(keep)
    try:
        loss, _, _ = method.pretext(model, (weak, strong))
        loss.backward()
    finally:
        handle.remove()
        model.zero_grad()
        method.head.zero_grad()
    touched = outputs[0].grad.abs().sum(-1) > 0  # per text and position: does the loss depend on its output?
    assert torch.equal(touched, weak["input_ids"] != strong["input_ids"])


def test_the_decoder_is_the_word_embedding_itself(mlm, tmp_path):
    method, model, *_ = mlm
    weak, strong = views_batch(mlm, tmp_path)
    embedding = model.backbone.transformer.get_input_embeddings().weight
    vocabulary, width = embedding.shape
    # Not copied: the head holds no vocabulary x width matrix, only its transform and one bias per token.
    assert all(p.shape != embedding.shape for p in method.head.parameters())
    assert method.head.bias.shape == (vocabulary,)
    assert [g.name for g in method.parameter_groups()] == ["mlm_head"] and method.parameter_groups()[0].is_head
    assert set(method.modules()) == {"mlm_head"}
    unused = next(t for t in range(1000, vocabulary)
                  if not (weak["input_ids"] == t).any() and not (strong["input_ids"] == t).any())
    try:
        loss, _, _ = method.pretext(model, (weak, strong))
        loss.backward()
        # A token no input holds gets gradient in its embedding row only through the tied decoder.
        assert embedding.grad is not None and embedding.grad[unused].abs().sum() > 0
    finally:
        model.zero_grad()
        method.head.zero_grad()
    positions = weak["input_ids"] != strong["input_ids"]
    with torch.no_grad():
        before = method.logits(model, strong, positions)
        saved = embedding[unused].clone()
        embedding[unused] += 1.0
        try:
            after = method.logits(model, strong, positions)
        finally:
            embedding[unused] = saved
    changed = (after - before).abs().amax(0) > 1e-6
    assert changed[unused] and int(changed.sum()) == 1  # that token's score, and only it


def test_a_backbone_that_is_not_a_text_encoder_is_refused(mlm):
    _, _, task, job, context = mlm
    model = nn.Module()
    model.backbone = nn.Linear(4, 4)
    with pytest.raises(ConfigError, match="input word embedding of a text encoder") as err:
        MaskedLanguageModelling(MlmOptions()).setup(SimpleNamespace(job=job, task=task, context=context), model)
    assert err.value.where == "model.backbone" and "all-minilm-l6-v2" in (err.value.fix or "")


def test_a_tokenizer_without_a_mask_token_is_refused(mlm, monkeypatch, tmp_path):
    method, model, task, job, context = mlm
    weak, strong = views_batch(mlm, tmp_path)
    monkeypatch.setattr(task, "tokenizer", lambda job, context: SimpleNamespace(mask_token_id=None))
    with pytest.raises(ConfigError, match="has no mask token") as err:
        MaskedLanguageModelling(MlmOptions()).setup(SimpleNamespace(job=job, task=task, context=context), model)
    assert err.value.where == "model.backbone" and "mask_token" in (err.value.fix or "")
    # Such a tokenizer's strong view drops tokens instead (UnlabelledTexts): the views then differ in length.
    shorter = {k: v[:, :-1] for k, v in strong.items()}
    with pytest.raises(ConfigError, match="views differ in length"):
        method.pretext(model, (weak, shorter))


def test_mlm_is_a_pretraining_method_of_the_text_plugin():
    registry = load_plugins("text").registry
    assert registry.methods.get("mlm") is MaskedLanguageModelling
    assert MaskedLanguageModelling.self_supervised and MaskedLanguageModelling.section == "pretrain"
    assert MaskedLanguageModelling.views == 2


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """In one folder: a two-epoch pretraining run (``straight``), the same run interrupted after its first epoch
    and resumed (``broken``), and a linear probe fine-tuned from ``straight`` (``tuned``); their exit codes."""
    root = tmp_path_factory.mktemp("text-mlm")
    codes = {}
    with text_plugin_in(root):
        write_csv(root / "pool.csv", pool_rows(48), header=("text",))
        write_csv(root / "labelled.csv", small_corpus(6))
        args = ("pretrain", "--plugin", "text", "--method", "mlm", "--data", "pool.csv", "--epochs", "2", *SMALL)
        codes["straight"] = cli_exit_code(*args, "--output", "straight")
        save_last = tlcore.run.save_last

        def interrupting(loop, epoch, monitored):
            save_last(loop, epoch, monitored)
            raise KeyboardInterrupt

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tlcore.run, "save_last", interrupting)
            codes["interrupted"] = cli_exit_code(*args, "--output", "broken")
        codes["resumed"] = cli_exit_code(*args, "--output", "broken", "--resume")
        codes["tuned"] = cli_exit_code("run", "--plugin", "text", "--data", "labelled.csv", "--init", "run:straight",
                                       "--strategy", "linear-probe", "--epochs", "1", "--batch-size", "8",
                                       "--output", "tuned")
    return root, codes


def test_a_pretraining_run_reports_the_held_out_masked_loss_and_accuracy(runs):
    root, codes = runs
    assert codes["straight"] == 0
    m = read_metrics(root / "straight")
    assert m["status"] == "completed" and m["method"]["name"] == "mlm" and m["method"]["section"] == "pretrain"
    assert m["pretraining"]["method"] == "mlm" and m["pretraining"]["hands_on"] == "backbone"
    assert m["pretraining"]["use_with"] == "tlapp run --plugin text --init run:straight"
    assert m["evaluated_on"] == "val" and set(m["metrics"]) == {"loss", "masked_accuracy"}
    assert 0 < m["metrics"]["loss"] < 11 and 0 <= m["metrics"]["masked_accuracy"] <= 1  # ln(30522) = 10.3
    assert m["data"]["samples"] == 48 and m["data"]["val"] == 5 and "masked with [MASK]" in m["data"]["strong_view"]
    assert len(m["history"]) == 2
    for entry in m["history"]:
        assert set(entry["val"]) == {"loss", "masked_accuracy"} and 0 <= entry["pretrain"]["masked_accuracy"] <= 1
    best = torch.load(root / "straight/checkpoints/best.pt", weights_only=True)
    assert best["hands_on"] == "backbone." and best["epoch"] == m["best_epoch"]
    head = best["method"]["modules"]["mlm_head"]
    assert set(head) == {"dense.weight", "dense.bias", "norm.weight", "norm.bias", "bias"}
    assert head["bias"].shape == (30522,) and head["dense.weight"].shape == (384, 384)


def test_fine_tuning_from_a_pretraining_run_takes_its_backbone_only(runs):
    root, codes = runs
    assert codes["tuned"] == 0
    pretrained = torch.load(root / "straight/checkpoints/best.pt", weights_only=True)["model"]
    backbone = [k for k in pretrained if k.startswith("backbone.")]
    init = read_metrics(root / "tuned")["init"]
    assert init["source"] == "run:straight" and init["loaded"] == len(backbone) > 0 and not init["skipped"]
    assert {"head.1.weight", "head.1.bias"} <= set(init["not_initialised_examples"])  # a fresh 3-class head
    # The linear probe keeps the backbone it got: exactly the pretrained one, not MiniLM's.
    tuned = torch.load(root / "tuned/checkpoints/best.pt", weights_only=True)["model"]
    assert all(torch.equal(pretrained[k], tuned[k]) for k in backbone)
    assert tuned["head.1.weight"].shape[0] == 3


def test_an_interrupted_pretraining_run_resumes_exactly(runs):
    root, codes = runs
    assert codes["interrupted"] == 130 and codes["resumed"] == 0
    for name in ("best.pt", "last.pt"):
        straight = torch.load(root / "straight/checkpoints" / name, weights_only=True)
        resumed = torch.load(root / "broken/checkpoints" / name, weights_only=True)
        assert straight["epoch"] == resumed["epoch"]
        assert all(torch.equal(t, resumed["model"][k]) for k, t in straight["model"].items()), name
        for key, t in straight["method"]["modules"]["mlm_head"].items():
            assert torch.equal(t, resumed["method"]["modules"]["mlm_head"][key]), f"{name}: {key}"
    straight_m, resumed_m = (read_metrics(root / run) for run in ("straight", "broken"))
    assert resumed_m["status"] == "completed" and straight_m["metrics"] == resumed_m["metrics"]

    def learning(m: dict) -> list[dict]:
        return [{k: h[k] for k in ("epoch", "train_loss", "pretrain", "val")} for h in m["history"]]

    assert learning(straight_m) == learning(resumed_m)


# ---------------------------------------------------------------- jobs it refuses


def test_mlm_on_another_plugin_s_task_is_refused_before_anything_is_written(tlapp, tmp_path, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text,medical")
    write_csv(tmp_path / "pool.csv", pool_rows(8), header=("text",))
    row = BadInput("mlm on medical", lambda tmp: ["pretrain", "--plugin", "medical", "--method", "mlm", "--data",
                                                  str(tmp / "pool.csv"), "--output", str(tmp / "o")],
                   ("mlm", "text plugin", "'medical'", "pretrain.method", "--plugin text --method mlm"))
    check_bad_input(tlapp, tmp_path, row)
    assert not (tmp_path / "o").exists()


def test_mlm_for_tlapp_run_is_refused(tlapp, tmp_path):
    row = BadInput("mlm in tlapp run", lambda tmp: ["run", "--plugin", "text", "--output", str(tmp / "o"),
                                                    "--set", "pretrain.method=mlm"],
                   ("self-supervised pretraining", "tlapp pretrain --plugin text --method mlm"))
    check_bad_input(tlapp, tmp_path, row)
