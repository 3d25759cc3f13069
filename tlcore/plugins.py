"""Finding, loading and isolating plugins.

Every plugin, ours included, is found through the ``tlapp.plugins`` entry-point
group. A plugin whose import stops at a missing third-party module is marked
unavailable, with the ``pip install`` command that fixes it (its distribution's
extra named after the entry point, when it declares one). A plugin that otherwise
fails to import, declares an unknown hook or raises in a ``register_*`` hook is
marked broken with its error. Either way the others keep working.
``TLAPP_PLUGINS=medical,text`` restricts which entry points load.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import Distribution, entry_points
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pluggy

from . import hookspecs
from .errors import PluginError, TlappError
from .registry import Backbone, Entry, Registry
from .task import check_task

ENTRY_POINT_GROUP = "tlapp.plugins"
CORE_PLUGIN = "tlcore"

# hook name -> (registry attribute, how a register(...) call becomes an entry)
_REGISTER_HOOKS = {
    "register_tasks": "tasks",
    "register_dataset_formats": "dataset_formats",
    "register_backbones": "backbones",
    "register_heads": "heads",
    "register_augmentations": "augmentations",
    "register_metrics": "metrics",
    "register_strategies": "strategies",
    "register_methods": "methods",
}


@dataclass
class PluginInfo:
    name: str
    module: str
    package: str | None = None
    version: str | None = None
    status: str = "ok"  # ok | unavailable (a dependency is not installed) | broken
    error: str | None = None
    fix: str | None = None  # for an unavailable plugin: the command that installs what it needs
    provides: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "package": self.package,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "fix": self.fix,
            "provides": self.provides,
        }


class Plugins:
    """The loaded plugin set: a pluggy manager, per-plugin status and the registry they filled."""

    def __init__(self, only: set[str] | None = None):
        self.pm = pluggy.PluginManager("tlapp")
        self.pm.add_hookspecs(hookspecs)
        self.only = only
        self.infos: dict[str, PluginInfo] = {}
        self.registry = Registry()

    @property
    def hook(self):
        return self.pm.hook

    def add(self, plugin: Any, name: str, package: str | None = None, version: str | None = None) -> PluginInfo:
        """Register one plugin object, checking it against the contract."""
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)), package=package, version=version)
        self.infos[name] = info
        unknown = [
            attr
            for attr in dir(plugin)
            if self.pm.parse_hookimpl_opts(plugin, attr) is not None and not hasattr(hookspecs, attr)
        ]
        if unknown:
            self._mark_broken(
                info, f"implements unknown hook(s) {', '.join(unknown)}; known hooks are listed in tlcore/hookspecs.py"
            )
            return info
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._mark_broken(info, f"breaks the hook contract: {exc}")
        return info

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.only is not None and ep.name not in self.only:
                continue
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                plugin = ep.load()
            except Exception as exc:  # a third party's import error must not take the others down
                info = PluginInfo(name=ep.name, module=ep.value, package=package, version=version)
                self.infos[ep.name] = info
                if _missing_dependency(exc, ep.module):
                    info.status, info.error = "unavailable", f"needs a module that is not installed: {exc}"
                    info.fix = install_command(dist, ep.name, getattr(exc, "name", None))
                else:
                    self._mark_broken(info, f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            self.add(plugin, ep.name, package, version)

    def collect(self) -> Registry:
        """Call every ``register_*`` hook, one plugin at a time, filling the registry."""
        for hook_name, attr in _REGISTER_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # in registration order: the core first
                info = self.infos.get(impl.plugin_name)
                if info is None or info.status != "ok":
                    continue
                catalog = getattr(self.registry, attr)
                added: list[tuple[str, Any]] = []

                def register(obj, factory=None, description="", _info=info, _added=added, _attr=attr):
                    _added.append(_make_entry(_attr, obj, factory, description, _info.name))

                try:
                    impl.function(register=register)
                    for name, entry in added:
                        catalog.add(name, entry, info.name)
                except Exception as exc:
                    for name, entry in added:
                        if catalog.get(name) is entry:
                            del catalog[name]
                    detail = exc.render() if isinstance(exc, TlappError) else f"{type(exc).__name__}: {exc}"
                    self._mark_broken(info, f"raised in {hook_name}: {detail}")
                    continue
                if added:
                    info.provides.setdefault(attr, []).extend(name for name, _ in added)
        return self.registry

    def _mark_broken(self, info: PluginInfo, error: str) -> None:
        info.status = "broken"
        info.error = error
        plugin = self.pm.get_plugin(info.name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for attr in _REGISTER_HOOKS.values():
            catalog = getattr(self.registry, attr)
            for name in [n for n, e in catalog.items() if getattr(e, "plugin", None) == info.name]:
                del catalog[name]
        info.provides = {}

    def require(self, name: str) -> PluginInfo:
        """The named plugin, or an error that says why it cannot be used."""
        info = self.infos.get(name)
        if info is None:
            known = ", ".join(n for n in self.infos if n != CORE_PLUGIN) or "(none)"
            restricted = f" (TLAPP_PLUGINS={os.environ['TLAPP_PLUGINS']})" if "TLAPP_PLUGINS" in os.environ else ""
            raise PluginError(
                f"no plugin named {name!r} is loaded{restricted}",
                fix=f"install a package providing it; loaded plugins: {known}; see `tlapp plugins`",
            )
        if info.status == "unavailable":
            raise PluginError(f"plugin {name!r} is unavailable: {info.error}", fix=info.fix)
        if info.status != "ok":
            raise PluginError(f"plugin {name!r} is broken: {info.error}", fix="see `tlapp plugins` for details")
        return info


def require_modules(*names: str) -> None:
    """Raise ``ModuleNotFoundError`` for the first of ``names`` that is not installed, importing none of them.

    For a plugin module whose dependencies are imported only when used: called at its top, the plugin
    shows as unavailable in ``tlapp plugins``, with the command that installs them, instead of failing
    in the middle of a run. Example::

        require_modules("pycocotools", "albumentations")
    """
    for name in names:
        if find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _missing_dependency(exc: Exception, plugin_module: str) -> bool:
    """Whether an import error means "install something": a missing module other than the plugin's own."""
    if not isinstance(exc, ModuleNotFoundError):
        return False
    return exc.name is None or exc.name.partition(".")[0] != plugin_module.partition(".")[0]


_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normalize(extra: str) -> str:
    return re.sub(r"[-_.]+", "-", extra).lower()


def declared_extras(dist: Distribution) -> set[str]:
    """The extras a distribution's ``Requires-Dist`` lines name (``...; extra == "medical"``), normalised."""
    return {_normalize(m) for line in dist.requires or () for m in _EXTRA_MARKER.findall(line)}


def install_command(dist: Distribution | None, extra: str, module: str | None) -> str:
    """``pip install 'DIST[EXTRA]'`` when the plugin's distribution declares an extra named after its entry
    point (with the local folder instead of the name for a project installed from one, ``-e`` if editable),
    else ``pip install MODULE``."""
    if dist is not None and _normalize(extra) in declared_extras(dist):
        target, editable = dist.metadata["Name"], False
        try:
            origin = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            origin = {}
        if origin.get("url", "").startswith("file://") and "dir_info" in origin:
            target = url2pathname(urlparse(origin["url"]).path)
            editable = bool(origin["dir_info"].get("editable"))
        return f"pip install {'-e ' if editable else ''}'{target}[{extra}]'"
    return f"pip install {module.partition('.')[0]}" if module else "install the module named in the error"


def _make_entry(attr: str, obj: Any, factory: Any, description: str, plugin: str) -> tuple[str, Any]:
    if attr in ("tasks", "strategies", "methods"):
        if factory is not None:
            raise TypeError(f"register({obj!r}) takes one argument for {attr}")
        try:
            obj.plugin = plugin
        except AttributeError:
            pass
        if attr == "tasks":
            check_task(obj)
        return obj.name, obj
    if attr == "backbones":
        if not isinstance(obj, Backbone):
            raise TypeError("register_backbones: register() takes a tlcore.Backbone")
        obj.plugin = plugin
        return obj.name, obj
    if not isinstance(obj, str) or not callable(factory):
        raise TypeError(f"register(name, factory, description) expected, got register({obj!r}, {factory!r})")
    return obj, Entry(name=obj, factory=factory, description=description, plugin=plugin)


def load_plugins(only: str | None = None) -> Plugins:
    """Load the core's built-ins and every entry-point plugin (restricted by TLAPP_PLUGINS)."""
    only = only if only is not None else os.environ.get("TLAPP_PLUGINS")
    names = {n.strip() for n in only.split(",") if n.strip()} if only else None
    plugins = Plugins(only=names)
    from . import builtins

    plugins.add(builtins, CORE_PLUGIN, package="tlapp", version=_own_version())
    plugins.load_entry_points()
    plugins.collect()
    return plugins


def _own_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlapp")
    except PackageNotFoundError:
        return None
