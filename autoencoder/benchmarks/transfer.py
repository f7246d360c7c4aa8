"""The transfer study, third edition: which start, adapted how, gives the best autoencoder of
a small target set, and do the three benefits of transfer (a higher start, a steeper slope,
a higher asymptote) show?

A *source* autoencoder is trained on a larger source set (a run folder of
``scripts/train.py``; its best checkpoint, the weights' average where it kept one, is the
start). Every *strategy* is one way to start and train a target run
(:data:`STRATEGIES`): from scratch, from a classifier-pretrained encoder (two-phase), from
the whole source model (``init_from``: frozen encoder, ``full``, the shipped two-phase,
the adaptation recipe ``experiment=adapt``), or from the source's encoder alone under a
fresh decoder (``encoder.weights=<source checkpoint>``: two-phase, ``full``, frozen), or no
training at all (the source as it is). Each regime (a number of target training images),
budget (epochs), strategy and seed is one ``python -m autoencoder.train`` run in
``<runs>/transfer3/<images>/<epochs>ep/<strategy>/seed<N>/``, which scores its start before
the first step (``score_start=true``) and is then evaluated by ``autoencoder.evaluate``
into its ``evaluation/`` (test PSNR and the latent's linear probe). Finished runs are
skipped, so more seeds or budgets can be added; ``--from`` only summarises.

**Across splits.** A recipe ranked on one source/target split is fitted to that split. With
several splits (``--split NAME=RUN_DIR:CLASSES``, one :class:`Study` each, its own source run
trained on the other classes), each split's runs go under ``<runs>/transfer3/<NAME>/`` and
:func:`splits_table` ranks the strategies by their mean change of test PSNR over the source
as it is, across every split and seed, with its spread, the worst split and the epoch-1 dip.
Candidates of the command line (``--candidate NAME=OVERRIDES``, :func:`candidate`) rank beside
the built-in strategies. :func:`~autoencoder.benchmarks.plots.transfer_frontier` draws test
PSNR against the latent probe's accuracy, one point per strategy (fidelity against semantics).
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoencoder.benchmarks.tables import Table
from autoencoder.cli import check_commands, job_command, launch
from autoencoder.errors import ConfigError
from autoencoder.inputs import existing_file, existing_folder
from autoencoder.run_folder import RunFolder

FOLDER = "transfer3"


@dataclass(frozen=True)
class Strategy:
    """A start and a way to train from it, as ``scripts/train.py`` overrides (``{source}``:
    the source's best checkpoint, ``{classifier}``: the classifier proxy's weights); a
    strategy without overrides and ``trains=False`` evaluates the source as it is."""

    name: str
    overrides: tuple[str, ...]
    trains: bool = True


STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (
        Strategy("scratch", ("encoder.weights=null", "finetune=full")),
        Strategy("classifier_frozen", ("encoder.weights={classifier}", "finetune=frozen")),
        Strategy("classifier_two_phase", ("encoder.weights={classifier}", "finetune=two_phase")),
        Strategy("classifier_full", ("encoder.weights={classifier}", "finetune=full")),
        Strategy("source", (), trains=False),
        Strategy("source_frozen", ("init_from={source}", "finetune=frozen")),
        Strategy("source_full", ("init_from={source}", "finetune=full")),
        Strategy("source_two_phase", ("init_from={source}", "finetune=two_phase")),
        Strategy("source_adapt", ("experiment=adapt", "init_from={source}")),
        Strategy("encoder_two_phase", ("encoder.weights={source}", "finetune=two_phase")),
        Strategy("encoder_full", ("encoder.weights={source}", "finetune=full")),
        Strategy("encoder_frozen", ("encoder.weights={source}", "finetune=frozen")),
    )
}


@dataclass(frozen=True)
class Study:
    """Where the study's runs go and what they share.

    Attributes:
        source: the source run's folder (its ``metrics.json`` names the best checkpoint).
        base: overrides of every target run (the data, its classes, the precision, ...);
            the study adds the regime's ``data.train_subset``, the budget and the seed.
        runs: the folder the study's runs go under.
        classifier: the classifier proxy's weights, for the ``classifier_*`` strategies.
        probe_train_images: the training images the latent probe is fitted on (``None``:
            every one; 0: no probe).
        split: the name of the source/target split, for a study across several: its runs
            go under ``<runs>/transfer3/<split>/``.
        strategies: the strategies it can run, :data:`STRATEGIES` and any candidates.
    """

    source: Path
    base: tuple[str, ...]
    runs: Path
    classifier: str | None = None
    probe_train_images: int | None = 10000
    split: str | None = None
    strategies: Mapping[str, Strategy] = field(default_factory=lambda: dict(STRATEGIES))

    def source_checkpoint(self) -> str:
        return finished_source(self.source)

    @property
    def root(self) -> Path:
        """The folder of the study's regimes."""
        return self.runs / FOLDER / self.split if self.split else self.runs / FOLDER

    def folder(self, images: int, epochs: int, strategy: str, seed: int) -> RunFolder:
        if not self.strategies[strategy].trains:  # one evaluation per regime
            return RunFolder(self.root / str(images) / strategy)
        regime = self.root / str(images)
        return RunFolder(regime / f"{epochs}ep" / strategy / f"seed{seed}")

    def _filled(self, overrides: Sequence[str]) -> list[str]:
        values = {"source": self.source_checkpoint(), "classifier": self.classifier}
        if any("{classifier}" in o for o in overrides) and not self.classifier:
            raise ConfigError(
                "the classifier_* strategies need --classifier-weights PT (a classifier of "
                "scripts/pretrain_encoder.py)."
            )
        return [o.format(**values) for o in overrides]

    def train_command(self, images: int, epochs: int, strategy: str, seed: int) -> list[str]:
        """The target run of one regime, budget, strategy and seed (the strategy's overrides
        after the base's: the strategy decides the start)."""
        return job_command(
            "train",
            *self.base,
            *self._filled(self.strategies[strategy].overrides),
            f"data.train_subset={images}",
            f"trainer.max_epochs={epochs}",
            f"seed={seed}",
            "score_start=true",
            f"hydra.run.dir={self.folder(images, epochs, strategy, seed).path}",
        )

    def evaluate_command(self, run: RunFolder, images: int) -> list[str]:
        """``autoencoder.evaluate`` of a run's best checkpoint, or of the source itself on
        the target data (the base's ``data.*`` overrides), into ``<run>/evaluation``."""
        metrics = run.metrics()
        if metrics is not None:
            ckpt, data = metrics.best_ckpt, []
        else:  # the source as it is
            ckpt = self.source_checkpoint()
            data = [o for o in self.base if o.startswith("data")]
            data += [f"data.train_subset={images}"]
        probe = (
            ["probe=false"]
            if self.probe_train_images == 0
            else [f"probe_train_images={self.probe_train_images or 'null'}"]
        )
        return job_command(
            "evaluate",
            f"ckpt_path={ckpt}",
            *data,
            *probe,
            f"hydra.run.dir={run.evaluation.path}",
            "num_shown=16",
            "num_worst=8",
        )


# --------------------------------------------------------------------------- results
@dataclass
class Job:
    """One finished run of the study (or the source's evaluation) as the tables read it."""

    strategy: str
    seed: int
    start: float | None  # validation PSNR before the first step
    val_psnr: list[float]  # after each epoch
    test_psnr: float
    best_epoch: int | None
    fit_seconds: float
    probe_acc: float | None
    test_ssim: float | None = None


def read_job(run: RunFolder, strategy: Strategy, seed: int) -> Job | None:
    """A run as it finished, ``None`` before (the source's: its evaluation)."""
    evaluation = run.evaluation.metrics()
    if not strategy.trains:
        if evaluation is None:
            return None
        test = evaluation.test["test/psnr"]
        ssim = evaluation.test.get("test/ssim")
        return Job(strategy.name, 0, None, [], test, 0, 0.0, _probe(evaluation), ssim)
    metrics = run.metrics()
    if metrics is None:
        return None
    return Job(
        strategy=strategy.name,
        seed=seed,
        start=run.start_score("val/psnr"),
        val_psnr=run.val_curve("val/psnr"),
        test_psnr=float(metrics.test["test/psnr"]),
        best_epoch=metrics.best_epoch,
        fit_seconds=float(metrics.fit_seconds or math.nan),
        probe_acc=_probe(evaluation) if evaluation is not None else None,
        test_ssim=metrics.test.get("test/ssim"),
    )


def _probe(evaluation) -> float | None:
    value = evaluation.get("test/probe_acc")
    return float(value) if value is not None else None


@dataclass
class Regime:
    """The finished jobs of one regime and budget, by strategy (in the study's order)."""

    images: int
    epochs: int
    jobs: dict[str, list[Job]] = field(default_factory=dict)
    strategies: dict[str, bool] = field(  # name: whether it trains
        default_factory=lambda: {name: s.trains for name, s in STRATEGIES.items()}
    )

    def runs(self, strategy: str) -> list[Job]:
        return sorted(self.jobs.get(strategy, []), key=lambda job: job.seed)


def _strategy_seeds(strategy: Strategy, seeds: int) -> range:
    """Seeds 1 .. ``seeds``; the source as it is has one evaluation (seed 0)."""
    return range(1, seeds + 1) if strategy.trains else range(1)


def read_regime(study: Study, images: int, epochs: int, seeds: int) -> Regime:
    trains = {name: strategy.trains for name, strategy in study.strategies.items()}
    regime = Regime(images, epochs, strategies=trains)
    for name, strategy in study.strategies.items():
        for seed in _strategy_seeds(strategy, seeds):
            job = read_job(study.folder(images, epochs, name, seed), strategy, seed)
            if job is not None:
                regime.jobs.setdefault(name, []).append(job)
    return regime


def mean_spread(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± standard deviation`` over seeds, or the value of a single seed."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def epochs_to(start: float | None, curve: Sequence[float], threshold: float) -> int | None:
    """The first epoch whose validation PSNR reaches ``threshold`` (0: the start already
    does), ``None`` if none within the budget."""
    if start is not None and start >= threshold:
        return 0
    return next((epoch for epoch, value in enumerate(curve, 1) if value >= threshold), None)


def regime_table(regime: Regime, long: Regime | None = None) -> Table:
    """One row per strategy: the score before the first step, the start (after epoch 1),
    the epochs to reach scratch's final validation PSNR, the test PSNR at the budget (and
    at the longer one), the change over the source as it is, how many seeds returned their
    start, the probe accuracy and the wall time (mean ± sd over seeds)."""
    scratch = [job.val_psnr[-1] for job in regime.runs("scratch") if job.val_psnr]
    threshold = statistics.mean(scratch) if scratch else None
    source = regime.runs("source")
    source_psnr = source[0].test_psnr if source else None
    long_column = f"test PSNR, {long.epochs} epochs" if long is not None else None
    columns = [
        "strategy",
        "seeds",
        "before step 1: val PSNR",
        "start: val PSNR epoch 1",
        "epochs to scratch's final",
        f"test PSNR, {regime.epochs} epochs",
        *([long_column] if long_column else []),
        "test SSIM",
        "test PSNR - source's",
        "returned the start",
        "probe acc (%)",
        "wall time (s)",
    ]
    table = Table(title=f"transfer, {regime.images} target training images", columns=columns)
    for strategy in regime.strategies:
        runs = regime.runs(strategy)
        longer = long.runs(strategy) if long is not None else []
        if not runs and not longer:
            continue
        row = _strategy_row(
            strategy, regime.strategies[strategy], runs, regime.epochs, threshold, source_psnr
        )
        if long_column:
            row[long_column] = mean_spread([job.test_psnr for job in longer])
        table.add(**row)
    table.notes.append(
        "before step 1: the model each run starts from, scored on the validation images "
        "(do no harm). epochs to scratch's final: the first epoch whose validation PSNR "
        "reaches the mean final validation PSNR of the scratch runs at this budget (0: the "
        "start already does; '-': never within the budget). returned the start: seeds whose "
        "best checkpoint is the start (no epoch beat it)."
    )
    return table


def _strategy_row(
    strategy: str,
    trains: bool,
    runs: list[Job],
    epochs: int,
    threshold: float | None,
    source_psnr: float | None,
) -> dict[str, Any]:
    """The cells of one strategy's seeds (``trains``: false for the source as it is) at the
    regime's budget of ``epochs`` (``threshold``:
    scratch's final validation PSNR; ``source_psnr``: the source's test PSNR as it is)."""
    reached = (
        [epochs_to(job.start, job.val_psnr, threshold) for job in runs]
        if threshold is not None
        else []
    )
    return {
        "strategy": strategy,
        "seeds": len(runs) if trains else "-",
        "before step 1: val PSNR": mean_spread([job.start for job in runs]),
        "start: val PSNR epoch 1": mean_spread([job.val_psnr[0] for job in runs if job.val_psnr]),
        "epochs to scratch's final": (
            ", ".join("-" if e is None else str(e) for e in reached)
            if trains and threshold is not None
            else "-"
        ),
        f"test PSNR, {epochs} epochs": mean_spread([job.test_psnr for job in runs]),
        "test SSIM": mean_spread([job.test_ssim for job in runs], digits=4),
        "test PSNR - source's": mean_spread(  # adapting moves it by hundredths
            [job.test_psnr - source_psnr for job in runs] if source_psnr else [], digits=3
        ),
        "returned the start": (
            f"{sum(job.best_epoch == 0 for job in runs)} of {len(runs)}" if trains else "-"
        ),
        "probe acc (%)": mean_spread([job.probe_acc for job in runs], 100, 1),
        "wall time (s)": mean_spread([job.fit_seconds for job in runs], digits=0)
        if trains
        else "-",
    }


def strategy_keys(strategies: Iterable[Strategy]) -> frozenset[str]:
    """The keys the strategies set after the base's overrides, on purpose: a strategy decides
    the start and how to train from it (an override of them for every run holds for the
    strategies that leave them alone)."""
    return frozenset(
        override.partition("=")[0] for strategy in strategies for override in strategy.overrides
    )



def candidate(entry: str) -> Strategy:
    """A strategy of the command line, ``NAME=OVERRIDES`` (``{source}``, ``{classifier}``
    as in :data:`STRATEGIES`): ``"adabn_full=init_from={source} finetune=full
    reestimate_bn=true"``."""
    name, _, overrides = entry.partition("=")
    if not name or not overrides.strip() or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(
            f"--candidate {entry!r}: write NAME=OVERRIDES, e.g. --candidate "
            '"adabn_full=init_from={source} finetune=full reestimate_bn=true".'
        )
    if name in STRATEGIES:
        raise ConfigError(f"--candidate {name}: a built-in strategy has that name; pick another.")
    return Strategy(name, tuple(shlex.split(overrides)))


# --------------------------------------------------------------------------- splits
def split_changes(regimes: Mapping[str, Regime], strategy: str) -> dict[str, list[float]]:
    """Per split, the change of each seed's test PSNR over the source as it is on that
    split's target (splits without the source's evaluation are left out)."""
    changes = {}
    for split, regime in regimes.items():
        source = regime.runs("source")
        runs = regime.runs(strategy)
        if source and runs:
            changes[split] = [job.test_psnr - source[0].test_psnr for job in runs]
    return changes


def splits_table(regimes: Mapping[str, Regime], reference: str = "source_full") -> Table:
    """The ranking across source/target splits: one row per strategy that trains, best mean
    first: its runs (splits x seeds), the epoch-1 dip (validation PSNR after epoch 1 minus
    before step 1), the change of test PSNR over the source as it is (mean ± sd over every
    split and seed), the mean less ``reference``'s, the worst split's mean, each split's
    mean, and how many runs returned their start."""
    names = list(regimes)
    first = next(iter(regimes.values()))
    rows = []
    for strategy, trains in first.strategies.items():
        changes = split_changes(regimes, strategy)
        if not trains or not changes:
            continue
        jobs = [job for regime in regimes.values() for job in regime.runs(strategy)]
        values = [value for split in changes.values() for value in split]
        per_split = {split: statistics.mean(v) for split, v in changes.items()}
        worst = min(per_split, key=per_split.__getitem__)
        rows.append((statistics.mean(values), strategy, jobs, values, per_split, worst))
    reference_changes = split_changes(regimes, reference)
    reference_mean = (
        statistics.mean(v for split in reference_changes.values() for v in split)
        if reference_changes
        else None
    )
    table = Table(
        title=f"transfer across {len(names)} splits, {first.images} target training images",
        columns=[
            "strategy",
            "runs",
            "epoch-1 dip (val)",
            "change over the start",
            f"mean - {reference}'s",
            "worst split",
            *(f"split {name}" for name in names),
            "returned the start",
        ],
    )
    for mean, strategy, jobs, values, per_split, worst in sorted(rows, key=lambda r: -r[0]):
        dips = [j.val_psnr[0] - j.start for j in jobs if j.start is not None and j.val_psnr]
        table.add(
            strategy=strategy,
            runs=len(values),
            **{
                "epoch-1 dip (val)": mean_spread(dips, digits=3),
                "change over the start": mean_spread(values, digits=3),
                f"mean - {reference}'s": (
                    f"{mean - reference_mean:+.3f}" if reference_mean is not None else "-"
                ),
                "worst split": f"{worst}: {per_split[worst]:+.3f}",
                **{
                    f"split {name}": f"{per_split[name]:+.3f}" if name in per_split else "-"
                    for name in names
                },
                "returned the start": f"{sum(job.best_epoch == 0 for job in jobs)} of {len(jobs)}",
            },
        )
    table.notes.append(
        "change over the start: test PSNR (dB) less that of the source as it is on the same "
        "split's target test images, mean ± sd over every split and seed; worst split: the "
        "split whose mean change is lowest; split NAME: that split's mean change; epoch-1 dip: "
        "validation PSNR after the first epoch less before the first step (negative: a dip); "
        "returned the start: runs whose best checkpoint is the start (no epoch beat it)."
    )
    return table


# --------------------------------------------------------------------------- running
def finished_source(source: Path, option: str = "--source") -> str:
    """The best checkpoint of the source run folder ``source`` (given as ``option``); a
    :class:`ConfigError` when it is not a finished training run or its checkpoint is gone."""
    fix = "train the source autoencoder first (docs/results.md), or pass its run folder."
    folder = existing_folder(option, source, fix)
    metrics = RunFolder(folder).metrics()
    if metrics is None or not metrics.best_ckpt:
        raise ConfigError(
            f"{option} {source}: not a finished training run (no metrics.json with a "
            f"best_ckpt); {fix}"
        )
    return str(
        existing_file(
            f"{option} {source}: its best checkpoint",
            metrics.best_ckpt,
            "Restore it, or train the source again.",
        ).resolve()
    )


def run(
    studies: Sequence[Study],
    regimes: Sequence[int],
    epochs: int,
    seeds: dict[int, int],
    strategies: Sequence[str],
    long_epochs: int | None,
    long_regimes: Sequence[int],
    long_strategies: Sequence[str],
    output: Path,
    train: bool = True,
) -> list[Table]:
    """Train and evaluate (unless ``train`` is false) every missing run of every study (one
    per source/target split), every planned job's config checked before the first starts;
    then write per study and regime ``transfer3[_<split>]_<images>.csv``/``.md``, its
    learning curves ``transfer3[_<split>]_curves.png`` and the frontier of test PSNR against
    probe accuracy ``transfer3[_<split>]_frontier_<images>.png``; with several splits, the
    ranking across them, ``transfer3_splits_<images>.csv``/``.md`` and ``.png``."""
    plans = [(images, epochs, strategies) for images in regimes]
    if long_epochs:
        plans += [(images, long_epochs, long_strategies) for images in long_regimes]
    if train:
        planned = [
            (study, (images, budget, strategy, seed))
            for study in studies
            for images, budget, names in plans
            for strategy in names
            for seed in _strategy_seeds(study.strategies[strategy], seeds.get(images, 1))
        ]
        check_commands(
            (
                study.train_command(*job)
                for study, job in planned
                if study.strategies[job[2]].trains and not study.folder(*job).is_finished()
            ),
            replaced=frozenset().union(*(strategy_keys(s.strategies.values()) for s in studies)),
        )
        for study, job in planned:
            _train_and_evaluate(study, *job)
    from autoencoder.benchmarks.plots import (
        splits_ranking,
        transfer_frontier,
        transfer_start_curves,
    )

    tables: list[Table] = []
    across: dict[int, dict[str, Regime]] = {images: {} for images in regimes}
    for study in studies:
        prefix = f"{FOLDER}_{study.split}" if study.split else FOLDER
        read = {}
        for images in regimes:
            regime = read_regime(study, images, epochs, seeds.get(images, 1))
            long = (
                read_regime(study, images, long_epochs, seeds.get(images, 1))
                if long_epochs and images in long_regimes
                else None
            )
            if not regime.jobs:
                raise ConfigError(
                    f"no finished runs under {study.root / str(images)}"
                    + (": train them (without --from)." if not train else ".")
                )
            table = regime_table(regime, long)
            table.write(output, f"{prefix}_{images}")
            tables.append(table)
            read[images] = regime
            across[images][study.split or "-"] = regime
            transfer_frontier(regime, output / f"{prefix}_frontier_{images}.png")
        transfer_start_curves(read, output / f"{prefix}_curves.png")
    if len(studies) > 1:
        for images, by_split in across.items():
            table = splits_table(by_split)
            table.write(output, f"{FOLDER}_splits_{images}")
            tables.append(table)
            changes = {
                name: split_changes(by_split, name)
                for name, trains in next(iter(by_split.values())).strategies.items()
                if trains
            }
            splits_ranking(changes, images, output / f"{FOLDER}_splits_{images}.png")
    return tables


def _train_and_evaluate(study: Study, images: int, epochs: int, strategy: str, seed: int) -> None:
    run_folder = study.folder(images, epochs, strategy, seed)
    if study.strategies[strategy].trains and not run_folder.is_finished():
        launch(study.train_command(images, epochs, strategy, seed))
    if run_folder.evaluation.metrics() is None:
        launch(study.evaluate_command(run_folder, images))
