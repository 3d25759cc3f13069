"""``--strategy auto``: race the candidate strategies on the user's data, then train the winner fully.

The race (``tlcore.race``) trains each candidate for a share of the run's epochs with successive halving and
scores it on held-out data; ``metrics.json`` records every candidate's score and cost under
``strategy_choice.race``. After the full run, auto checks the winner against the linear probe's race score
and says so in the log and in ``metrics.json`` when the full run ended below it. A model with no transferred
weights has nothing to keep, so it trains from scratch without a race.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Literal

from pydantic import Field

from .engine import is_improvement
from .errors import ConfigError
from .race import race
from .strategies import Strategy, StrategyOptions

log = logging.getLogger("tlapp")


class AutoOptions(StrategyOptions):
    candidates: list[str] = Field(["linear-probe", "freeze-unfreeze", "finetune"], min_length=1,
                                  description="strategies the race tries, cheapest first: ties go to the earlier")
    race_fraction: float = Field(0.25, gt=0, le=1, description="share of the run's epochs the race's finalists "
                                                              "train; the others stop at half of it")
    race_on: Literal["auto", "val", "folds"] = Field("auto", description="score on the validation split, on "
                                                                        "k folds of the training data, or on "
                                                                        "folds only when validation is small")
    folds: int = Field(3, ge=2, le=10, description="k of the k-fold race")
    metric: str | None = Field(None, description="validation metric the race ranks by, read at each candidate's "
                                                 "best train.monitor epoch; default: the task's headline metric "
                                                 "(train.monitor unless it is the loss, else the first declared)")


class Auto(Strategy):
    name = "auto"
    description = "race linear-probe, freeze-unfreeze and finetune briefly on held-out data, train the winner"
    Options = AutoOptions
    options: AutoOptions

    def phases(self, groups, epochs):
        raise RuntimeError("the auto strategy must choose before it has phases")

    def choose(self, run, prepared, recorded: dict[str, Any] | None) -> tuple[Strategy, dict[str, Any]]:
        if recorded is not None:  # a resumed run keeps the choice it made
            cls = run.context.registry.strategies[recorded["chosen"]]
            return cls(cls.Options.model_validate(recorded["options"])), recorded
        if prepared.init_report.loaded == 0:
            strategy = self._candidate(run, "scratch")
            reason = "no pretrained tensors were transferred (init none), so there is nothing to keep"
            record: dict[str, Any] = {}
        else:
            candidates = [self._candidate(run, name) for name in self.options.candidates]
            record = race(run, prepared, candidates, fraction=self.options.race_fraction, folds=self.options.folds,
                          race_on=self.options.race_on, metric=self.options.metric)
            strategy = next(c for c in candidates if c.name == record["winner"])
            reason = (f"best {record['metric']} on {record['scored_on']} in a race of "
                      f"{len(record['candidates'])} strategies")
        choice = {"chosen": strategy.name, "reason": reason, "options": strategy.options.model_dump(),
                  **({"race": record} if record else {})}
        log.info("auto strategy: %s (%s)", strategy.name, reason)
        return strategy, choice

    def check(self, registry) -> None:
        racers = [s for s in registry.strategies if s != self.name]
        for name in self.options.candidates:
            if name not in racers:
                close = difflib.get_close_matches(name, racers, n=1)
                raise ConfigError(f"strategy.candidates names {name!r}, which is not a strategy auto can race",
                                  where="strategy.candidates",
                                  fix=(f"did you mean {close[0]!r}? " if close else "") + f"choose from: "
                                      f"{', '.join(racers)}")

    def _candidate(self, run, name: str) -> Strategy:
        """A candidate with the recipe's options when the recipe names that strategy, else its defaults."""
        cls = run.context.registry.strategies[name]
        recipe = dict(run.task.recipe.get("strategy") or {})
        options = {k: v for k, v in recipe.items() if k != "name"} if recipe.get("name") == name else {}
        return cls.from_spec({**options, "train_bn": self.options.train_bn})

    def review(self, run, choice: dict[str, Any] | None) -> None:
        """The race's cost as a share of the whole run, and whether the full run ended below the linear probe."""
        race = (choice or {}).get("race")
        if not race:
            return
        total = run.metrics.get("wall_seconds")
        if total:
            race["share_of_run_seconds"] = round(race["seconds"] / total, 3)
        probe = next((c for c in race["candidates"] if c["strategy"] == "linear-probe"), None)
        kept = run.metrics.get("best_epoch")
        history = run.metrics.get("history", [])
        value = history[kept - 1]["val"].get(race["metric"]) if kept and kept <= len(history) else None
        if probe is None or probe["score"] is None or value is None or race["folds"] or choice is None \
                or choice["chosen"] == "linear-probe":
            return  # folds scored other data than the run's validation split: nothing to set side by side
        if is_improvement(probe["score"], value, race["mode"]):
            choice["below_linear_probe"] = {"run": value, "linear_probe_in_race": probe["score"]}
            log.warning("auto: the full %s run's validation %s at its kept epoch (%.4g) is worse than the linear "
                        "probe reached in the race (%.4g); on this data `--strategy linear-probe` is likely the "
                        "better choice", choice["chosen"], race["metric"], value, probe["score"])
