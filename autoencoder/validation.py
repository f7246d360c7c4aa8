"""Check a composed config before anything runs: a typo or a wrong type fails at start.

Every node with a ``_target_`` is checked against its target's signature, which is the
schema: keys the target does not accept (with the closest valid name), mandatory keys
left unset, and values whose type does not match the parameter's annotation. All problems
are reported at once, as one :class:`ConfigError`.

Hydra itself already rejects an unknown group or option (``encodr=resnet18``,
``encoder=resnet19``) and a new key without ``+`` (``finetune.factr=2``) when composing.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from autoencoder.compat import config_child, config_items
from autoencoder.errors import ConfigError

_MISSING = object()
_UNRESOLVED = object()  # resolvable only at run time, e.g. ${hydra:runtime.output_dir}


def validate_config(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem found in ``cfg``."""
    problems: list[str] = []
    for path, node in _instantiable_nodes(cfg, ""):
        problems += check_node(path, node)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def check_node(path: str, node: DictConfig) -> list[str]:
    """Problems of one ``_target_`` node, each as one line naming the key and the fix.

    Parameters the node leaves out are not reported: they have defaults or are passed by the
    code that instantiates the node (the model receives its encoder); ``???`` values are.
    """
    target_name = node._target_
    try:
        target = get_object(target_name)
    except Exception:
        return [f"{path}._target_: cannot import {target_name!r}; check the spelling."]
    parameters, accepts_any = _parameters(target)
    hints = _type_hints(target)
    problems = []
    present = [str(key) for key in node.keys()]  # noqa: SIM118 (`in node` skips ??? values)
    keys = [key for key in present if not key.startswith("_")]
    for key in keys:
        if key in parameters or accepts_any:
            continue
        close = difflib.get_close_matches(key, parameters, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(parameters)}"
        problems.append(f"{path}.{key}: unknown key for {target_name}; {hint}")
    for name in parameters:
        if name not in present:
            continue  # a default, or passed by the code that instantiates it
        value = _value(node, name)
        if value is _MISSING:
            problems.append(f"{path}.{name} is required: add {path}.{name}=VALUE")
            continue
        if value is _UNRESOLVED or (isinstance(value, dict) and "_target_" in value):
            continue  # resolved at run time, or a nested object checked on its own
        annotation = hints.get(name, typing.Any)
        if not matches(value, annotation):
            problems.append(
                f"{path}.{name}={value!r}: expected {_describe(annotation)}, "
                f"got {type(value).__name__}"
            )
    return problems


def matches(value: Any, annotation: Any) -> bool:
    """Whether a config value (YAML scalars, lists, dicts) fits a type annotation.

    Lists stand for tuples and sequences (YAML has no tuples), ints for floats, strings for
    paths. Annotations naming other classes accept anything: such values are converted or
    built by the target itself.
    """
    if annotation is typing.Any or isinstance(annotation, typing.TypeVar):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (Path, os.PathLike) or origin is os.PathLike:
        return isinstance(value, (str, Path))
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable, set):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(matches, value, args))
        return not args or all(matches(item, args[0]) for item in value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        return len(args) != 2 or all(matches(v, args[1]) for v in value.values())
    return True


def _instantiable_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            child = config_child(node, key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _instantiable_nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, child in enumerate(config_items(node)):
            yield from _instantiable_nodes(child, f"{path}[{index}]")


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters a target accepts, following ``**kwargs`` up a class's bases."""
    parameters: dict[str, inspect.Parameter] = {}
    for function in _constructors(target):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return parameters, True
        forwards = False
        for name, parameter in signature.parameters.items():
            if name == "self" or parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif name not in parameters:
                parameters[name] = parameter
        if not forwards:
            return parameters, False
    return parameters, True  # **kwargs reaches object: anything goes


def _constructors(target: Any) -> list[Any]:
    """A function, or a class's ``__init__`` methods from the class itself up its bases."""
    if not inspect.isclass(target):
        return [target]
    return [cls.__init__ for cls in target.__mro__ if "__init__" in vars(cls)]


def _type_hints(target: Any) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for function in reversed(_constructors(target)):
        try:
            hints.update(typing.get_type_hints(function))
        except Exception:  # an unresolvable annotation: leave that target's types unchecked
            continue
    return hints


def _value(node: DictConfig, key: str) -> Any:
    try:
        value = node[key]
    except MissingMandatoryValue:
        return _MISSING
    except OmegaConfBaseException:
        return _UNRESOLVED
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except MissingMandatoryValue:
            return _MISSING
        except OmegaConfBaseException:
            return _UNRESOLVED
    return value


def _describe(annotation: Any) -> str:
    """``int | None``, ``one of 'eval', 'train'``, ``list[float]``: types as users write them."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_describe(arg) for arg in args)}]" if args else name
    return getattr(annotation, "__name__", str(annotation))
