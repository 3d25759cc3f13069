"""Masked language modelling (``tlapp pretrain --plugin text --method mlm --data PATH``): continued pretraining of
the text encoder on unlabelled in-domain texts, so that fine-tuning on few labels starts from a model of the
domain's words (Devlin et al., 2019; Gururangan et al., 2020, "Don't Stop Pretraining").

The data is the text task's unlabelled data with two views (``TextClassification.unlabelled_data``): the weak view
is the text's token ids, the strong view the same ids with 15% of its ordinary tokens replaced by ``[MASK]``, drawn
from (seed, epoch, text) so that ``--resume`` is exact and the held-out part is masked the same at every validation.
The encoder reads the strong view; at every position where the views differ it predicts the weak view's token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tlcore import ConfigError, JobSpec, ParameterGroup, Pretraining, PretrainOptions, Task

from .models import TextEncoder
from .task import TextClassification

if TYPE_CHECKING:
    from tlcore import Run


class MlmOptions(PretrainOptions):
    """Only the held-out share (``pretrain.val_fraction``): the masking rate is the text task's strong view's
    (15% of a text's ordinary tokens, all replaced by ``[MASK]``)."""


class MlmHead(nn.Module):
    """BERT's masked-language-model head: dense, the config's activation (``hidden_act``, GELU for BERT) and
    LayerNorm, then a decoder onto the vocabulary whose weight is the encoder's input word embedding (tied: passed
    in at every call, never copied or registered here) plus a bias of its own."""

    def __init__(self, hidden: int, width: int, vocabulary: int, activation: Any, eps: float, init_std: float):
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = nn.Linear(hidden, width)
        self.activation = ACT2FN[activation] if isinstance(activation, str) else activation
        self.norm = nn.LayerNorm(width, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocabulary))
        nn.init.normal_(self.dense.weight, std=init_std)  # BERT's initialisation
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.activation(self.dense(hidden))), word_embeddings, self.bias)


class MaskedLanguageModelling(Pretraining):
    """Predict the masked tokens of the strong view: cross-entropy over the positions where the strong view differs
    from the weak one (the masked tokens, and only those), ``masked_accuracy`` the top-1 accuracy there.

    The head (``MlmHead``) is the method's own module, built from the job's seed and thrown away after: the run
    hands on only the backbone (``tlapp run --plugin text --init run:DIR``). A pretrained MLM head in the backbone's
    checkpoint (``cls.predictions.transform.*``, ``cls.predictions.bias``) is not used: the text backbones load
    the encoder alone (``AutoModel``), and all-MiniLM-L6-v2 ships none; the head starts fresh (BERT's
    initialisation) while its decoder weight is the pretrained word embedding. Loss and measures are means over
    a batch's masked tokens; an epoch's are those means weighted by the batches' numbers of texts.
    """

    name = "mlm"
    description = ("masked language modelling (Devlin et al. 2019): continued pretraining of the text encoder on "
                   "unlabelled in-domain texts, predicting their masked tokens (tlapp pretrain --plugin text "
                   "--method mlm --data PATH)")
    Options = MlmOptions
    views = 2

    def __init__(self, options: MlmOptions):
        super().__init__(options)
        self.options: MlmOptions = options
        self.head: MlmHead | None = None

    def check(self, job: JobSpec, task: Task) -> None:
        if not isinstance(task, TextClassification):
            raise ConfigError(f"{self.name} (masked language modelling) pretrains the text plugin's transformer "
                              f"encoders, and this job is plugin {job.plugin!r}, task {task.name!r}",
                              where="pretrain.method",
                              fix=f"pretrain texts with --plugin text --method {self.name}, or this task with a "
                                  "method that serves it (--method simclr; see `tlapp plugins`)")
        super().check(job, task)

    def setup(self, run: Run, model: nn.Module) -> None:
        encoder = getattr(model, "backbone", None)
        embeddings = _input_embeddings(encoder)
        if not isinstance(encoder, TextEncoder) or embeddings is None:
            raise ConfigError(f"{self.name} predicts tokens through the input word embedding of a text encoder, and "
                              f"backbone {run.job.model.backbone!r} is a {type(encoder).__name__} without one",
                              where="model.backbone",
                              fix="pretrain a text backbone (all-minilm-l6-v2, or hf-auto with a BERT-like encoder "
                                  "folder; see `tlapp plugins`)")
        tokenizer = run.task.tokenizer(run.job, run.context) if isinstance(run.task, TextClassification) else None
        if tokenizer is None or getattr(tokenizer, "mask_token_id", None) is None:
            raise ConfigError(f"{self.name} masks tokens, and the tokenizer of backbone {run.job.model.backbone!r} "
                              "has no mask token", where="model.backbone",
                              fix="pretrain an encoder whose tokenizer defines mask_token (BERT-like models do)")
        config: Any = encoder.transformer.config
        vocabulary, width = embeddings.shape
        # Built from its own seed, as Simclr's projection: the model's initialisation must not depend on it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.job.train.seed)
            self.head = MlmHead(encoder.num_features, width, vocabulary,
                                getattr(config, "hidden_act", None) or getattr(config, "activation", "gelu"),
                                float(getattr(config, "layer_norm_eps", 1e-12)),
                                float(getattr(config, "initializer_range", 0.02)))

    def modules(self) -> dict[str, nn.Module]:
        return {"mlm_head": self.head} if self.head is not None else {}

    def parameter_groups(self) -> list[ParameterGroup]:
        if self.head is None:
            return []
        return [ParameterGroup("mlm_head", [self.head], is_head=True)]

    def logits(self, model: nn.Module, inputs: dict[str, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
        """The head's vocabulary scores at the ``positions`` (a boolean mask of the ids) of the encoded ``inputs``."""
        assert self.head is not None  # setup built it
        encoder = model.backbone
        assert isinstance(encoder, TextEncoder)
        embeddings = _input_embeddings(encoder)
        assert embeddings is not None  # setup checked it
        extra = {k: inputs[k] for k in ("token_type_ids",) if k in inputs}
        out = encoder.transformer(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **extra)
        return self.head(out.last_hidden_state[positions], embeddings)

    def pretext(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        weak, strong = inputs
        original, masked = weak["input_ids"], strong["input_ids"]
        if original.shape != masked.shape:
            raise ConfigError(f"{self.name} needs the masked view of a text as long as the text (its tokens replaced "
                              "by the mask token), and the views differ in length",
                              where="model.backbone",
                              fix="pretrain an encoder whose tokenizer defines mask_token (BERT-like models do)")
        positions = (original != masked) & strong["attention_mask"].bool()
        n = len(original)
        if not bool(positions.any()):  # texts without an ordinary token: nothing masked, nothing to learn
            assert self.head is not None  # setup built it
            return self.head.bias.sum() * 0.0, n, {}
        logits = self.logits(model, strong, positions).float()
        targets = original[positions]
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, n, {"masked_accuracy": float(accuracy)}


def _input_embeddings(encoder: Any) -> torch.Tensor | None:
    """The word-embedding matrix (vocabulary x width) of a text encoder's transformer, None without one."""
    transformer = getattr(encoder, "transformer", None)
    getter = getattr(transformer, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    weight = getattr(embedding, "weight", None)
    return weight if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


PRETRAINING_METHODS = [MaskedLanguageModelling]
