"""Defaults live in one place: the signatures of the project's classes and functions.

``conf/`` repeats them, so that every option shows in ``--cfg job`` and can be overridden
without ``+``. The rule this module enforces, node by node: a config node whose ``_target_``
is the project's lists every parameter of that target that has a default, with the
signature's value. An option that inherits a base option of its group (``defaults: [base]``)
may change exactly the keys written in its own file, which is what that option is; one that
inherits a neutral base (``defaults: [_base]``, the signature's defaults) only the keys that
name it (the encoder's ``name``).
Third-party targets (Trainer, optimisers, Lightning callbacks) are configured, not
mirrored; experiments (``conf/experiment/``) change whatever they need.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from autoencoder.validation import _instantiable_nodes, _parameters
from tests.conftest import CONFIG_DIR, compose_job

CONF = Path(CONFIG_DIR)
# The keys whose value says which option of its group a node is, not a default to mirror.
NAMING_KEYS = {"encoder": {"name"}}
# Keys an option over a neutral base sets because its model cannot run without them: a vision
# transformer's input_scale, which must divide its patch size (1 is no divisor of 14 that
# gives 32 px images a grid).
NEEDED_KEYS = {("encoder", "vit"): {"input_scale"}}
# Where composed configs put their outputs, so that every value resolves.
RUN_DIR = Path("/tmp/run")
MIRRORED_GROUPS = ("data", "encoder", "decoder", "model", "finetune", "logger", "callbacks")
# Parameters the code passes when it instantiates the node, so the YAML leaves them out.
PASSED_BY_CODE = {
    "autoencoder.models.autoencoder.Autoencoder": {"encoder", "decoder", "optimizer"},
    "autoencoder.models.decoders.Decoder": {
        "latent_channels",
        "stage_channels",
        "stage_reductions",
    },
    "autoencoder.models.classifier.Classifier": {"num_classes"},
}


def own_keys(group: str, option: str) -> set[str]:
    """The keys an option may set otherwise than its target's signature: over a base option
    of its group, those written in its own file, which is what that option is; over a
    neutral base (``_base``, the signature's defaults), the keys that name the option
    (``NAMING_KEYS``); none for an option without a base."""
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    bases = [entry for entry in raw.get("defaults", []) if isinstance(entry, str)]
    if any(base.startswith("_") and base != "_self_" for base in bases):
        return NAMING_KEYS.get(group, set()) | NEEDED_KEYS.get((group, option), set())
    inherits = any((CONF / group / f"{base}.yaml").is_file() for base in bases)
    return {str(key) for key in raw if key != "defaults"} if inherits else set()


def same(value: Any, default: Any) -> bool:
    if isinstance(default, (tuple, list)):
        return isinstance(value, list) and list(default) == value
    if isinstance(default, Mapping):
        return isinstance(value, dict) and dict(default) == value
    return (type(value) is type(default) and value == default) or (
        isinstance(default, float) and isinstance(value, int) and value == default
    )


def disagreements(node: DictConfig, path: str, changed: set[str]) -> list[str]:
    target = node._target_
    if not target.startswith("autoencoder."):
        return []
    parameters, _ = _parameters(get_object(target))
    skipped = PASSED_BY_CODE.get(target, set())
    problems = []
    for name, parameter in parameters.items():
        if name in skipped or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if name not in node:
            if parameter.default is not inspect.Parameter.empty:
                problems.append(f"{path}.{name}: missing (default {parameter.default!r})")
            continue
        if parameter.default is inspect.Parameter.empty or name in changed:
            continue
        value = OmegaConf.to_container(node, resolve=True)[name]
        if isinstance(value, dict) and "_target_" in value:
            continue  # an object the config builds, e.g. the classifier's optimiser
        if not same(value, parameter.default):
            problems.append(f"{path}.{name}={value!r}, signature default {parameter.default!r}")
    return problems


# The options of each group; a file whose name starts with "_" is a base they inherit, checked
# through them.
OPTIONS = [
    (g, p.stem)
    for g in MIRRORED_GROUPS
    for p in sorted((CONF / g).glob("*.yaml"))
    if not p.stem.startswith("_")
]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_an_option_repeats_its_targets_defaults(group: str, option: str) -> None:
    overrides = ["~experiment", f"{group}={option}"]
    if group == "data" and option in ("arrays", "folder"):
        overrides.append(f"data.path={CONF}")
    cfg = compose_job("train", *overrides, output_dir=RUN_DIR, hydra=True)
    section = cfg[group]
    changed = own_keys(group, option)
    problems = [
        problem
        for path, node in _instantiable_nodes(section, group)
        for problem in disagreements(node, path, changed)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("config", "section"), [("pretrain", "classifier"), ("train", "hydra.callbacks")]
)
def test_other_project_nodes_repeat_their_targets_defaults(config: str, section: str) -> None:
    node = OmegaConf.select(compose_job(config, output_dir=RUN_DIR, hydra=True), section)
    problems = [
        problem
        for path, child in _instantiable_nodes(node, section)
        for problem in disagreements(child, path, set())
    ]
    assert problems == []
