"""A hyperparameter search on current Optuna, driving ordinary training jobs.

``hydra-optuna-sweeper`` (``hparams_search=optuna``) pins Optuna below 3 and, with it,
SQLAlchemy 1.x. This search uses Optuna's ask-and-tell API (Optuna 2.6 and later, 4.x
included) and needs nothing else: each trial asks the study for values, runs
``python -m autoencoder.train`` with them as overrides (its own run folder, checks and
``metrics.json``, like any run), and tells the study the value of ``optimized_metric`` that
the run recorded, or that it failed. The search space, the direction and the sampler's seed
are read from ``conf/hparams_search/optuna.yaml`` (``hydra.sweeper.params``, in Hydra's
sweep syntax: ``choice(...)``, ``interval(a, b)``, ``tag(log, interval(a, b))``), so both
searches explore the same space.

A study with ``--storage sqlite:///study.db`` survives the process: the same command
resumes it, each trial in ``<output>/<trial number>``. Trials are separate processes, so
they are not pruned from their validation curves; each costs one training run.

    python -m autoencoder.search --trials 20 [--storage URL] [--study NAME]
                                 [--output DIR] [--exclude layout] [OVERRIDES ...]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep
from omegaconf import OmegaConf

from autoencoder.cli import check_commands, exit_with_message, job_command, launch
from autoencoder.config import compose_config, config_dir
from autoencoder.errors import AutoencoderError, ConfigError, StepFailed
from autoencoder.run_folder import RunFolder

log = logging.getLogger(__name__)

SPACE_FILE = Path("hparams_search") / "optuna.yaml"


@dataclass(frozen=True)
class Dimension:
    """One key of the search space: ``choices``, or a float range (``log`` scale or not)."""

    key: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions, the direction and the sampler's seed of ``hparams_search=optuna``."""

    dimensions: tuple[Dimension, ...]
    direction: str
    seed: int | None

    @classmethod
    def from_config(cls, exclude: Sequence[str] = (), seed: int | None = None) -> SearchSpace:
        """The space of ``hparams_search=optuna`` without the keys ``exclude``; ``seed``
        stands for its sampler's ``${seed}`` (the run's seed)."""
        raw = OmegaConf.to_container(OmegaConf.load(config_dir() / SPACE_FILE), resolve=False)
        assert isinstance(raw, dict)
        sweeper = raw["hydra"]["sweeper"]
        params = {k: v for k, v in sweeper["params"].items() if k not in exclude}
        overrides = OverridesParser.create().parse_overrides(
            [f"{k}={v}" for k, v in params.items()]
        )
        fixed = sweeper.get("sampler", {}).get("seed")
        return cls(
            tuple(
                _dimension(override.get_key_element(), override.value()) for override in overrides
            ),
            sweeper.get("direction", "maximize"),
            fixed if isinstance(fixed, int) else seed,
        )


def _dimension(key: str, sweep: Any) -> Dimension:
    if isinstance(sweep, ChoiceSweep):
        return Dimension(key, choices=tuple(sweep.list))
    if isinstance(sweep, IntervalSweep):
        return Dimension(
            key, low=float(sweep.start), high=float(sweep.end), log="log" in sweep.tags
        )
    raise ConfigError(
        f"{SPACE_FILE}: {key}={sweep!r} is neither choice(...) nor interval(a, b); the search "
        "takes those two."
    )


def search(
    overrides: Sequence[str],
    trials: int,
    output: Path,
    storage: str | None = None,
    study_name: str | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``trials`` more trials of the study; return its best value and parameters (also
    written to ``<output>/best.json``)."""
    import optuna

    cfg = compose_config("train", *overrides)
    space = SearchSpace.from_config(exclude, seed=int(cfg.seed))
    metric = str(cfg.optimized_metric)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=space.direction,
        sampler=optuna.samplers.TPESampler(seed=space.seed),
        load_if_exists=storage is not None,
    )
    check_commands(
        [_command(overrides, {d.key: _first(d) for d in space.dimensions}, output / "check")]
    )
    for _ in range(trials):
        trial = study.ask()
        values = {dimension.key: dimension.suggest(trial) for dimension in space.dimensions}
        folder = output / str(trial.number)
        try:
            launch(_command(overrides, values, folder))
        except StepFailed as error:
            log.warning("trial %d failed: %s", trial.number, error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        metrics = RunFolder(folder).metrics()
        value = metrics.get(metric) if metrics is not None else None
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, float(value))
    return _best(study, output, metric)


def _command(overrides: Sequence[str], values: dict[str, Any], folder: Path) -> list[str]:
    chosen = [f"{key}={value}" for key, value in values.items()]
    return job_command("train", *overrides, *chosen, f"hydra.run.dir={folder}")


def _first(dimension: Dimension) -> Any:
    return dimension.choices[0] if dimension.choices else dimension.low


def _best(study: Any, output: Path, metric: str) -> dict[str, Any]:
    completed = [t for t in study.trials if t.value is not None]
    if not completed:
        raise ConfigError(f"no trial of study {study.study_name!r} finished; see {output}.")
    best = study.best_trial
    result = {
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "best_value": best.value,
        "best_params": best.params,
        "best_trial": best.number,
        "run_dir": str(output / str(best.number)),
        "trials": len(study.trials),
        "completed": len(completed),
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "best.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"best {metric} {best.value:.4g} in trial {best.number}: {best.params}")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m autoencoder.search``: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials to add to the study")
    parser.add_argument("--storage", help="e.g. sqlite:///study.db: keep and resume the study")
    parser.add_argument("--study", help="the study's name (needed to resume one from storage)")
    parser.add_argument("--output", type=Path, default=Path("outputs/search"))
    parser.add_argument(
        "--exclude", nargs="*", default=[], help="keys of the space to leave out, e.g. layout"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every trial")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        search(args.overrides, args.trials, args.output, args.storage, args.study, args.exclude)
    except ModuleNotFoundError as error:
        exit_with_message(
            ConfigError(f'the search needs Optuna ({error}): pip install -e ".[search]".')
        )
    except AutoencoderError as error:
        exit_with_message(error)


if __name__ == "__main__":
    main()
