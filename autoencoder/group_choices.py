"""Config groups chosen on the command line whose values a later config sets back.

``python scripts/train.py experiment=quality_256 layout=depth2`` selects the layout, then the
experiment, applied after it, sets the cut back to its own: the run would record
``layout=depth2`` among its overrides and train another cut. :func:`check_group_choices`
compares the values an option of a group sets itself with the composed config, and refuses
the choice where a decisive value (:data:`DECISIVE_KEYS`) was set back, naming the keys to
set instead; other values set back are reported in one warning line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.utilities import rank_zero_warn

from autoencoder.config import config_dir
from autoencoder.errors import ConfigError

# Groups whose options are meant to override what comes before them, or that configure
# Hydra itself: their values are not checked against the composed config.
_COMPOSING_GROUPS = ("experiment", "hparams_search", "hydra")

# The keys that make a group's option what it is: a command-line choice whose decisive keys
# a later config (the experiment) sets back is refused; any other of its keys set back is
# reported in one warning line (an experiment may tune, e.g., the batch size of any data).
DECISIVE_KEYS: dict[str, tuple[str, ...] | None] = {
    "layout": None,  # every key: the cut and the latent channels are the option
    "trainer": ("trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes"),
    "encoder": ("encoder.name", "encoder.weights"),
    "data": ("data._target_", "data.path", "data.root"),
    "finetune": ("finetune.max_frozen_epochs",),
    "logger": None,
}


def check_group_choices(cfg: DictConfig) -> None:
    """Refuse a config group chosen on the command line (``layout=depth2``,
    ``trainer=gpu``) whose decisive values (:data:`DECISIVE_KEYS`) the composed config does
    not hold, because a config applied after it (the experiment) sets them: the choice would
    be recorded in the run's overrides but not used. Other values of the choice set back
    are reported in one warning line. Runs on the config as composed, before any value is
    resolved for the machine (``trainer.precision=auto``)."""
    problems, notes = _overridden_choices(cfg)
    for note in notes:
        rank_zero_warn(note)
    if problems:
        raise ConfigError("\n".join(problems))


def _overridden_choices(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The refusals and the warnings of :func:`check_group_choices`."""
    hydra = _hydra_section(cfg)
    if hydra is None:
        return [], []
    # the last choice of each group: an earlier one on the same command line is replaced
    overrides = list({o.partition("=")[0]: o for o in map(str, hydra.overrides.task)}.values())
    explicit = {o.lstrip("+~").partition("=")[0] for o in overrides}
    experiment = hydra.runtime.choices.get("experiment")
    by = f"experiment={experiment}" if experiment else "a config applied after it"
    problems, notes = [], []
    for override in overrides:
        group, equals, option = override.partition("=")
        if not equals or group.startswith(("+", "~")) or group in _COMPOSING_GROUPS:
            continue
        chosen = hydra.runtime.choices.get(group)
        if chosen is not None and chosen != option:
            problems.append(
                f"{group}={option} is replaced by {group}={chosen} (set by {by}); drop "
                f"{group}={option} or pick another experiment."
            )
            continue
        differing = {
            key: (value, theirs)
            for key, value in group_values(group, option).items()
            if key not in explicit
            and (theirs := _composed(cfg, key)) is not _UNKNOWN
            and theirs != value
        }
        decisive = DECISIVE_KEYS.get(group, ())
        if differing and (decisive is None or set(decisive) & set(differing)):
            problems.append(_overridden_message(group, option, by, differing))
        elif differing:
            theirs = ", ".join(f"{k}={_show(v[1])}" for k, v in differing.items())
            notes.append(f"{group}={option}: {by} sets {theirs} over its values.")
    return problems, notes


def _overridden_message(
    group: str, option: str, by: str, differing: Mapping[str, tuple[Any, Any]]
) -> str:
    theirs = ", ".join(f"{key}={_show(value[1])}" for key, value in differing.items())
    ours = " ".join(f"{key}={_show(value[0])}" for key, value in differing.items())
    return (
        f"{group}={option} is not used: {by} sets {theirs}. Set the keys themselves "
        f"instead ({ours}), or drop {group}={option}."
    )


_UNKNOWN = object()


def group_values(group: str, option: str) -> dict[str, Any]:
    """The values an option of a config group sets itself (not through its own defaults
    list), by dotted key in the composed config; interpolations are left out."""
    path = config_dir() / group / f"{option}.yaml"
    if not path.is_file():
        return {}
    text = path.read_text()
    package = group.replace("/", ".")
    for line in text.splitlines():
        if line.startswith("# @package"):
            declared = line.split("@package", 1)[1].strip()
            package = "" if declared == "_global_" else declared.replace("_group_", package)
            break
    loaded = OmegaConf.create(text)
    values = OmegaConf.to_container(loaded, resolve=False) if isinstance(loaded, DictConfig) else {}
    assert isinstance(values, dict)
    values.pop("defaults", None)
    return {
        key: value
        for key, value in _flatten(values, package)
        if not (isinstance(value, str) and "${" in value)
    }


def _flatten(values: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, values


def _composed(cfg: DictConfig, key: str) -> Any:
    try:
        node = OmegaConf.select(cfg, key, default=_UNKNOWN, throw_on_missing=False)
        if isinstance(node, (DictConfig, list)) or OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
        return node
    except (OmegaConfBaseException, ValueError):
        return _UNKNOWN


def _show(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _hydra_section(cfg: DictConfig) -> Any:
    """The Hydra section of a job: composed into ``cfg`` (sweeps, tests) or the running
    job's; ``None`` outside Hydra."""
    if "hydra" in cfg:
        return cfg.hydra
    return HydraConfig.get() if HydraConfig.initialized() else None
