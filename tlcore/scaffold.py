"""``tlapp init-plugin NAME``: write a new plugin package that installs, trains and tests as it is.

The package is an image-folder classification task (the example of docs/plugins.md), a custom head,
a generator of sample images (run once here, so the package ships its sample data) and a test that
trains one epoch on that sample. The templates are the strings below, so they ship with any install.
"""

from __future__ import annotations

import re
import runpy
import shutil
import string
import tempfile
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
RESERVED = {"tlcore"}  # the core registers its built-ins under this plugin name


@dataclass(frozen=True)
class Names:
    """One plugin name, spelt for each place it appears."""

    plugin: str  # what `--plugin` takes and the entry point's name: "leaf-disease"
    package: str  # the import package: "tlapp_leaf_disease"
    dist: str  # the distribution pip installs: "tlapp-leaf-disease"

    @classmethod
    def of(cls, name: str) -> Names:
        snake = name.replace("-", "_")
        return cls(plugin=name, package=f"tlapp_{snake}", dist=f"tlapp-{snake.replace('_', '-')}")


def check_name(name: str) -> Names:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"plugin name {name!r} is not valid", where="NAME",
                          fix="use lowercase letters and digits, starting with a letter, with single '-' or '_' "
                              "between words, e.g. leaf-disease")
    taken = {ep.name: ep for ep in entry_points(group="tlapp.plugins")}
    if name in RESERVED or name in taken:
        owner = f" (by {taken[name].value})" if name in taken else " (by tlapp's core)"
        raise ConfigError(f"a plugin named {name!r} already exists{owner}", where="NAME",
                          fix="choose another name; `tlapp plugins` lists the names in use")
    return Names.of(name)


def render(name: str) -> dict[str, str]:
    """Relative path -> text of every file of the package for plugin ``name`` (not yet validated)."""
    names = Names.of(name)
    values = {"plugin": names.plugin, "package": names.package, "dist": names.dist}
    return {string.Template(path).substitute(values): string.Template(text).substitute(values)
            for path, text in TEMPLATES.items()}


def write_plugin(name: str, directory: Path | None = None) -> tuple[Path, list[Path]]:
    """Write the package for plugin ``name`` into ``directory`` (default ./tlapp-NAME), sample images
    included; returns the folder and the files written. An existing folder must be empty."""
    names = check_name(name)
    target = Path(directory) if directory is not None else Path(names.dist)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not an empty folder", where="--dir",
                          fix="choose a new folder with --dir, or remove this one")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and move it into place at the end: a failure leaves nothing half-written.
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        for relative, text in render(name).items():
            path = partial / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        sample = runpy.run_path(str(partial / names.package / "sample.py"))
        sample["make_sample"](partial / names.package / "sample_data")
        if target.exists():
            target.rmdir()
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target, sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())


# ------------------------------------------------------------------ templates
# string.Template placeholders: $plugin, $package, $dist. Rendered for plugin "flowers", the task.py and
# datasets.py templates are the example in docs/plugins.md; tests/core/test_scaffold.py keeps them equal.

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "tlapp plugin: image classification from a folder per class"
requires-python = ">=3.11"
dependencies = ["tlapp[vision]", "numpy", "pillow"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points."tlapp.plugins"]
$plugin = "$package.plugin"

[tool.setuptools]
packages = ["$package"]

[tool.setuptools.package-data]
$package = ["sample_data/**/*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

INIT = '''\
"""The $plugin plugin for tlapp: image classification from a folder with a sub-folder per class."""
'''

PLUGIN = '''\
"""Hook implementations of the $plugin plugin: what it offers tlapp, and nothing else."""

from tlcore import hookimpl

from .models import CosineHead
from .task import ImageFolderClassification


@hookimpl
def register_tasks(register):
    register(ImageFolderClassification())


@hookimpl
def register_heads(register):
    register("$plugin-cosine", CosineHead, "scaled cosine similarity to one learned prototype per class")
'''

TASK = r'''"""Image classification from a folder with one sub-folder of PNG or JPEG images per class."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field
from torch.utils.data import DataLoader

from tlcore import (ClassificationTask, ConfigError, Context, DataBundle, DataError, JobSpec, Section,
                    input_files, predict_probabilities, write_predictions)

from .datasets import SPLITS, Images, find_images, index_folder, split_seeded


class ImageFolderData(Section):
    path: str | None = Field(None, description="folder with one sub-folder of images per class, optionally "
                                               "under train/ val/ test/; null: the bundled sample data")
    image_size: int = Field(128, ge=16, le=1024, description="images are resized to image_size x image_size")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of each class for validation "
                                                             "(without a val/ folder)")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of each class for testing "
                                                              "(without train/ val/ test/ folders)")


class ImageFolderClassification(ClassificationTask):
    name = "$plugin-images"
    description = "classify images kept in one sub-folder per class (PNG or JPEG)"
    DataOptions = ImageFolderData
    sample_data = Path(__file__).parent / "sample_data"
    sample_script = "python -m $package.sample"
    recipe = {  # CPU-sized: two head-only epochs on cached backbone features, then three fine-tuning all
        "data": {"image_size": 128},
        "model": {"backbone": "efficientnet_lite0", "head": "$plugin-cosine", "init": "imagenet",
                  "metrics": ["accuracy", "f1_macro", "auroc", "confusion_matrix"]},
        "train": {"epochs": 5, "batch_size": 16, "lr": 0.001},
        "strategy": {"name": "freeze-unfreeze", "head_epochs": 2},
    }

    def splits(self, job: JobSpec, for_training: bool = True) -> dict[str, list[tuple[Path, str]]]:
        """split -> [(file, class)]: the data's own train/val/test folders, else a split seeded by train.seed."""
        found = index_folder(self.data_root(job))
        if not for_training:  # `tlapp evaluate --data`: the user's data, every image a test image
            return {"train": [], "val": [], "test": [item for items in found.values() for item in items]}
        if "all" not in found:
            return {split: found.get(split, []) for split in SPLITS}
        return split_seeded(found["all"], job.data.val_fraction, job.data.test_fraction, job.train.seed)

    def build_data(self, job: JobSpec, context: Context, *, for_training: bool = True) -> DataBundle:
        if job.augment:
            raise ConfigError(f"this task has no augmentation (augment={job.augment!r})", where="augment",
                              fix="remove augment from the job spec")
        splits = self.splits(job, for_training)
        class_names = sorted({label for items in splits.values() for _, label in items})
        if len(class_names) < 2:
            raise DataError(f"found {len(class_names)} class folder(s); classification needs at least two",
                            where=str(self.data_root(job)), fix="add one sub-folder of images per class")
        if for_training and not (splits["train"] and splits["val"]):
            raise DataError("too few images for a training and a validation split", where=str(self.data_root(job)),
                            fix="add images, or a val/ folder beside train/")
        backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")

        def dataset(split: str) -> Images:
            items = [(path, class_names.index(label)) for path, label in splits[split]]
            return Images(items, job.data.image_size, backbone.mean, backbone.std)

        counts = {split: dict(Counter(label for _, label in items)) for split, items in splits.items()}
        return DataBundle(train=dataset("train"), val=dataset("val"),
                          test=dataset("test") if splits["test"] else None, num_outputs=len(class_names),
                          class_names=class_names, summary={"images": counts})

    def predict(self, model, job: JobSpec, class_names: list[str], inputs: Sequence[str], context: Context,
                out_dir: Path) -> list[dict[str, Any]]:
        files = input_files(inputs, find_images, "PNG or JPEG images")
        backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
        images = Images([(f, None) for f in files], job.data.image_size, backbone.mean, backbone.std)
        probs = predict_probabilities(model, DataLoader(images, batch_size=job.train.batch_size), context.device,
                                      job.model.multilabel)
        records = [{"file": str(f), "predicted": class_names[int(p.argmax())],
                    "probabilities": dict(zip(class_names, p.tolist()))} for f, p in zip(files, probs)]
        write_predictions(records, out_dir, rows=[
            {"file": r["file"], "predicted": r["predicted"],
             **{f"p_{c}": f"{r['probabilities'][c]:.6f}" for c in class_names}} for r in records])
        return records

    def check_data(self, job: JobSpec, context: Context) -> dict[str, Any]:
        splits = self.splits(job)
        return {"root": str(self.data_root(job)), "images": sum(len(items) for items in splits.values()),
                "classes": dict(Counter(label for items in splits.values() for _, label in items)),
                "splits": {split: dict(Counter(label for _, label in items)) for split, items in splits.items()}}
'''

DATASETS = r'''"""Finding images in class folders, splitting them, and loading them as the backbone expects."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tlcore import DataError

SUFFIXES = {".png", ".jpg", ".jpeg"}
SPLITS = ("train", "val", "test")


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def index_folder(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """{split: [(file, class)]} from root/[split/]class/...; without a train/ folder, one split "all"."""
    if not root.is_dir():
        raise DataError(f"not a folder: {root}", where="data.path",
                        fix="pass a folder with one sub-folder of images per class")
    parts = {s: root / s for s in SPLITS if (root / s).is_dir()} if (root / "train").is_dir() else {"all": root}
    found = {split: [(f, d.name) for d in sorted(folder.iterdir()) if d.is_dir() for f in find_images(d)]
             for split, folder in parts.items()}
    if not any(found.values()):
        raise DataError(f"no PNG or JPEG images in class sub-folders of {root}", where="data.path",
                        fix="put the images of each class in a sub-folder named after the class")
    return found


def split_seeded(items: list[tuple[Path, str]], val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, list[tuple[Path, str]]]:
    """Each class's files shuffled by ``seed``, then cut into test, validation and training parts."""
    out: dict[str, list[tuple[Path, str]]] = {split: [] for split in SPLITS}
    for label in sorted({label for _, label in items}):
        files = [item for item in items if item[1] == label]
        random.Random(f"{seed}/{label}").shuffle(files)
        n_test, n_val = round(len(files) * test_fraction), round(len(files) * val_fraction)
        out["test"] += files[:n_test]
        out["val"] += files[n_test:n_test + n_val]
        out["train"] += files[n_test + n_val:]
    return out


class Images(Dataset):
    """(image, class index) pairs, resized and normalised; where the class is None, the image alone."""

    def __init__(self, items: list[tuple[Path, int | None]], size: int, mean, std):
        self.items, self.size = items, size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, target = self.items[index]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((self.size, self.size)), dtype=np.float32)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}", fix="remove or replace the file") from None
        image = (torch.from_numpy(pixels / 255.0).permute(2, 0, 1) - self.mean) / self.std
        return image if target is None else (image, target)
'''

MODELS = '''\
"""The plugin's own output head: registered in plugin.py, named in the task's recipe."""

from __future__ import annotations

import torch
from torch import nn


class CosineHead(nn.Module):
    """Logits are scaled cosine similarities between the features and one learned prototype per class.

    ``factory(in_features, num_outputs, **model.head_options)`` is how tlapp builds heads, so options
    such as ``--set model.head_options.scale=20`` arrive here as keyword arguments.
    """

    def __init__(self, in_features: int, num_outputs: int, scale: float = 16.0):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_outputs, in_features) * 0.01)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = nn.functional.normalize(features, dim=1)
        return self.scale * features @ nn.functional.normalize(self.prototypes, dim=1).T
'''

SAMPLE = '''\
"""Writes the bundled sample images: three classes of shapes, a few small PNGs each, always the same.

Regenerate with ``python -m $package.sample``.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
SAMPLE_DATA = Path(__file__).parent / "sample_data"


def make_sample(root: Path = SAMPLE_DATA, per_class: int = 8, size: int = 48, seed: int = 0) -> None:
    rng = random.Random(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(0, 100) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            r = rng.randrange(size // 6, size // 3)
            x, y = rng.randrange(r, size - r), rng.randrange(r, size - r)
            colour = tuple(rng.randrange(130, 256) for _ in range(3))
            if label == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
            elif label == "square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
            image.save(root / label / f"{label}_{i}.png")


if __name__ == "__main__":
    make_sample()
    print(f"wrote {SAMPLE_DATA}")
'''

TEST = '''\
"""The plugin trains one epoch on its sample images and predicts with the run, through tlapp's CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import $package

SAMPLE = Path($package.__file__).parent / "sample_data"


def tlapp(*args: str, cwd: Path) -> str:
    """Run ``python -m tlcore ARGS`` with only this plugin and the vision plugin (its backbone) loaded."""
    env = {**os.environ, "TLAPP_PLUGINS": "$plugin,vision", "TLAPP_CACHE_DIR": str(cwd / "cache")}
    done = subprocess.run([sys.executable, "-m", "tlcore", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plugin_loads(tmp_path):
    plugins = {p["name"]: p for p in json.loads(tlapp("plugins", "--json", cwd=tmp_path))}
    assert plugins["$plugin"]["status"] == "ok", plugins["$plugin"]["error"]
    assert plugins["$plugin"]["provides"] == {"tasks": ["$plugin-images"], "heads": ["$plugin-cosine"]}


def test_one_epoch_on_the_sample_then_predict(tmp_path):
    tlapp("run", "--plugin", "$plugin", "--epochs", "1", "--set", "data.image_size=32", "--output", "run",
          cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["class_names"] == ["circle", "square", "triangle"]
    assert {"accuracy", "f1_macro", "auroc"} <= set(metrics["metrics"])

    tlapp("predict", "--run", "run", str(SAMPLE / "circle"), cwd=tmp_path)
    with open(tmp_path / "run" / "predictions" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list((SAMPLE / "circle").glob("*.png")))
    assert all(row["predicted"] in metrics["class_names"] for row in rows)
'''

README = '''\
# $dist

A tlapp plugin named `$plugin`: image classification from a folder with one
sub-folder of PNG or JPEG images per class, on tlapp's ImageNet EfficientNet-Lite0 backbone.

```
my-images/                 my-images/
  cats/*.jpg       or        train/cats/*.jpg  train/dogs/*.jpg
  dogs/*.jpg                 val/...           test/...  (test/ optional)
```

Without `train/`, each class is split by `train.seed` (`data.val_fraction`, `data.test_fraction`).

## Use

```bash
pip install -e ".[test]"                           # registers the entry point
tlapp plugins                                       # $plugin: ok
tlapp run --plugin $plugin                          # the recipe, on the bundled sample images
tlapp run --plugin $plugin --data my-images --output runs/first
tlapp predict --run runs/first photo.jpg more-photos/
tlapp data check --plugin $plugin --data my-images
python -m pytest                                    # one epoch on the sample
```

Options of the task: `data.path`, `data.image_size`, `data.val_fraction`, `data.test_fraction`, plus
tlapp's own `model`, `train` and `strategy` sections (`--set key=value`).

## Files

| file | what |
| --- | --- |
| `$package/plugin.py` | the hook implementations: the task and the head this plugin offers |
| `$package/task.py` | the task: options, recipe, data, predictions, data check |
| `$package/datasets.py` | finding, splitting and loading images |
| `$package/models.py` | `CosineHead`, registered as `$plugin-cosine` |
| `$package/sample.py` | writes `sample_data/` (`python -m $package.sample`) |
| `tests/test_plugin.py` | trains one epoch on the sample and predicts |

The hooks, the `Task` methods and what the engine expects of batches are described in tlapp's
`docs/plugins.md`.
'''

TEMPLATES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "$package/__init__.py": INIT,
    "$package/plugin.py": PLUGIN,
    "$package/task.py": TASK,
    "$package/datasets.py": DATASETS,
    "$package/models.py": MODELS,
    "$package/sample.py": SAMPLE,
    "tests/test_plugin.py": TEST,
}
