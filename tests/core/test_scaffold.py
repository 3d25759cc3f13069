"""`tlapp init-plugin`: the package it writes installs, loads, trains and tests, and docs/plugins.md shows
its task as it is."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import install_distribution, read_metrics
from tlcore.scaffold import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
FAST = ("--epochs", "1", "--set", "data.image_size=32")


def install_scaffold(folder: Path, site: Path, plugin: str = "flowers") -> None:
    """The generated package on ``site`` as pip would leave it: the package folder plus its dist-info."""
    package = f"tlapp_{plugin.replace('-', '_')}"
    shutil.copytree(folder / package, site / package)
    install_distribution(site, f"tlapp-{plugin}", {}, {plugin: f"{package}.plugin"})


def test_init_plugin_writes_a_package_that_loads_and_trains(site_dir, tlapp, monkeypatch):
    code, out, err = tlapp("init-plugin", "flowers", "--dir", "flowers")
    assert code == 0, err
    root = Path("flowers")
    for name in ("pyproject.toml", "README.md", "tests/test_plugin.py", "tlapp_flowers/__init__.py",
                 "tlapp_flowers/plugin.py", "tlapp_flowers/task.py", "tlapp_flowers/datasets.py",
                 "tlapp_flowers/models.py", "tlapp_flowers/sample.py"):
        assert (root / name).is_file(), name
    assert '[project.entry-points."tlapp.plugins"]\nflowers = "tlapp_flowers.plugin"' in (
        root / "pyproject.toml").read_text()
    images = sorted((root / "tlapp_flowers" / "sample_data").glob("*/*.png"))
    assert len(images) == 24 and {p.parent.name for p in images} == {"circle", "square", "triangle"}
    assert "pip install -e" in out and "tlapp run --plugin flowers" in out

    install_scaffold(root, site_dir)
    monkeypatch.setenv("TLAPP_PLUGINS", "flowers,vision")
    code, out, err = tlapp("plugins", "--json")
    assert code == 0, err
    flowers = {p["name"]: p for p in json.loads(out)}["flowers"]
    assert flowers["status"] == "ok", flowers["error"]
    assert flowers["package"] == "tlapp-flowers"
    assert flowers["provides"] == {"tasks": ["flowers-images"], "heads": ["flowers-cosine"]}

    code, out, err = tlapp("run", "--plugin", "flowers", "--output", "run", *FAST)
    assert code == 0, err
    m = read_metrics("run")
    assert m["status"] == "completed" and m["task"] == "flowers-images"
    assert m["class_names"] == ["circle", "square", "triangle"]
    assert m["init"]["source"] == "efficientnet_lite0:imagenet"
    assert m["data"]["images"] == {split: {"circle": n, "square": n, "triangle": n}
                                   for split, n in (("train", 4), ("val", 2), ("test", 2))}
    assert {"accuracy", "f1_macro", "auroc", "confusion_matrix"} <= set(m["metrics"])

    code, out, err = tlapp("predict", "--run", "run", str(site_dir / "tlapp_flowers" / "sample_data" / "square"))
    assert code == 0, err
    rows = Path("run/predictions/predictions.csv").read_text().splitlines()
    assert rows[0] == "file,predicted,p_circle,p_square,p_triangle" and len(rows) == 9


def test_task_takes_split_folders_and_evaluates_other_data(site_dir, tlapp, monkeypatch, tmp_path):
    assert tlapp("init-plugin", "shapes", "--dir", "shapes")[0] == 0
    install_scaffold(tmp_path / "shapes", site_dir, "shapes")
    monkeypatch.setenv("TLAPP_PLUGINS", "shapes,vision")
    sample = site_dir / "tlapp_shapes" / "sample_data"
    for split, names in (("train", range(0, 5)), ("val", range(5, 7)), ("test", range(7, 8))):
        for label in ("circle", "square"):
            (tmp_path / "split" / split / label).mkdir(parents=True)
            for i in names:
                shutil.copy(sample / label / f"{label}_{i}.png", tmp_path / "split" / split / label)

    code, out, err = tlapp("data", "check", "--plugin", "shapes", "--data", "split")
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 16 and report["classes"] == {"circle": 8, "square": 8}
    assert report["splits"]["val"] == {"circle": 2, "square": 2}

    assert tlapp("run", "--plugin", "shapes", "--data", "split", "--output", "run", *FAST)[0] == 0
    assert read_metrics("run")["data"]["images"]["test"] == {"circle": 1, "square": 1}
    # Other data for evaluation: every image is a test image, and nothing is written into the run.
    before = sorted(p.name for p in Path("run").iterdir())
    code, out, err = tlapp("evaluate", "--run", "run", "--data", "split/train", "--output", "eval.json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 10
    assert sorted(p.name for p in Path("run").iterdir()) == before

    code, _, err = tlapp("run", "--plugin", "shapes", "--data", "split/val/circle", "--output", "bad", *FAST)
    assert code == 2 and "no PNG or JPEG images in class sub-folders" in err
    shutil.copytree(tmp_path / "split" / "val" / "circle", tmp_path / "one" / "circle")
    code, _, err = tlapp("run", "--plugin", "shapes", "--data", "one", "--output", "bad2", *FAST)
    assert code == 2 and "classification needs at least two" in err


@pytest.mark.parametrize("name", ["Flowers", "1st", "my plugin", "a--b", "x_", "tlcore", "medical"])
def test_bad_names_are_refused(name, tlapp):
    code, _, err = tlapp("init-plugin", name)
    assert code == 2 and "error:" in err and "Traceback" not in err
    assert not any(Path(".").iterdir())


def test_a_folder_with_files_is_never_written_into(tlapp):
    Path("taken").mkdir()
    Path("taken/notes.txt").write_text("mine")
    code, _, err = tlapp("init-plugin", "leaf-disease", "--dir", "taken")
    assert code == 2 and "not an empty folder" in err
    assert [p.name for p in Path("taken").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in Path(".").iterdir()) == ["taken"]  # no half-written folder left either

    Path("empty").mkdir()
    assert tlapp("init-plugin", "leaf-disease", "--dir", "empty")[0] == 0
    assert (Path("empty") / "tlapp_leaf_disease" / "task.py").exists()
    assert 'leaf-disease = "tlapp_leaf_disease.plugin"' in Path("empty/pyproject.toml").read_text()
    assert tlapp("init-plugin", "leaf-disease")[0] == 0  # default folder: ./tlapp-leaf-disease
    assert (Path("tlapp-leaf-disease") / "tlapp_leaf_disease" / "plugin.py").exists()


def test_sample_images_are_the_same_every_time(tlapp):
    assert tlapp("init-plugin", "flowers", "--dir", "a")[0] == 0
    assert tlapp("init-plugin", "flowers", "--dir", "b")[0] == 0
    a = {p.relative_to("a"): p.read_bytes() for p in Path("a").rglob("*") if p.is_file()}
    b = {p.relative_to("b"): p.read_bytes() for p in Path("b").rglob("*") if p.is_file()}
    assert a == b
    assert max(len(data) for path, data in a.items() if path.suffix == ".png") < 4096


def test_template_task_is_short_and_uses_only_the_public_api():
    files = render("flowers")
    assert len(files["tlapp_flowers/task.py"].splitlines()) < 120
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")
            private = re.findall(r"^\s*(?:from|import) (tlcore\.\w+|tlapp_(?!flowers)\w+)", text, re.M)
            assert not private, (path, private)


def test_docs_show_the_template_exactly():
    """Every code block marked <!-- template: PATH --> in docs/plugins.md is that file of the scaffold."""
    docs = DOCS.read_text()
    shown = dict(re.findall(r"<!-- template: (\S+) -->\n```python\n(.*?)```\n", docs, re.S))
    assert {"tlapp_flowers/task.py", "tlapp_flowers/datasets.py"} <= set(shown)
    files = render("flowers")
    for path, text in shown.items():
        assert text == files[path], f"docs/plugins.md shows an outdated {path}; copy it from render('flowers')"


def outer_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


@pytest.mark.slow
def test_pip_installed_scaffold_runs_and_passes_its_own_tests(tmp_path):
    """The real thing: pip installs the scaffold into a fresh virtualenv, whose torch and tlapp come from
    this one through a .pth file; then `python -m tlcore` runs it and its generated test passes."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "outer_venv.pth").write_text(f"import site; site.addsitedir({outer_site_packages()!r})\n")
    env = {**os.environ, "TLAPP_PLUGINS": "flowers,vision", "TLAPP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)

    def run(*args: str | Path, cwd: Path = tmp_path) -> str:
        done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run(python, "-m", "tlcore", "init-plugin", "flowers", "--dir", "flowers")
    run(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
        tmp_path / "flowers")
    installed = Path(run(python, "-c", "import tlapp_flowers; print(tlapp_flowers.__file__)").strip()).parent
    assert installed.is_relative_to(site) and len(list((installed / "sample_data").glob("*/*.png"))) == 24

    flowers = {p["name"]: p for p in json.loads(run(python, "-m", "tlcore", "plugins", "--json"))}["flowers"]
    assert flowers["status"] == "ok" and flowers["package"] == "tlapp-flowers", flowers

    run(python, "-m", "tlcore", "run", "--plugin", "flowers", "--output", tmp_path / "run", *FAST)
    assert read_metrics(tmp_path / "run")["status"] == "completed"

    # From outside the source folder, so the test imports the installed package.
    out = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", tmp_path / "flowers" / "tests")
    assert "2 passed" in out
