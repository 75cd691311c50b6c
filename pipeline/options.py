"""Command-line options and config files, built from the settings classes themselves.

Every documented field of a settings dataclass (a field with ``help`` metadata:
``ExampleGenConfig``, ``EvaluationConfig``) becomes one ``--option`` with its type,
choices and default taken from the field, so no option is written out twice. Model
hyperparameters, too many for one flag each, are set as ``--hparam MODEL.NAME=VALUE``
(repeatable) and checked against ``HParams``.

A config file (``--config FILE``, JSON or YAML) holds the same settings by section::

    example_gen: {max_context_length: 20}
    evaluation: {min_top_k_accuracy: 0.2, slices: {user_activity_boundaries: [10, 50]}}
    training: {models: [retrieval, sequential], epochs: 3,
               hparams: {retrieval: {embedding_dim: 64}}}
    serving: {max_k: 200, two_stage_candidates: 300}
    batch: {batch_recommendations: true, batch_k: 20}

Precedence: the field defaults, then the file, then the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Sequence, Type

from components import typed_values

SECTIONS = ("example_gen", "training", "evaluation", "serving", "batch")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_options(group, cls: Type) -> None:
    """One option per documented field of ``cls`` (its ``help`` metadata); an option
    that is not given is absent from the parsed namespace (the file or the default
    applies), so :func:`given_values` sees only what the user typed."""
    defaults = cls()
    for field in dataclasses.fields(cls):
        help_text = field.metadata.get("help")
        if not help_text:
            continue
        hint = typed_values.field_hints(cls)[field.name]
        group.add_argument(
            _flag(field.name), dest=field.name, default=argparse.SUPPRESS,
            choices=field.metadata.get("choices"), metavar=field.name.upper(),
            type=lambda text, hint=hint: _parse(hint, text),
            help=f"{help_text} (default: {getattr(defaults, field.name)})")


def _parse(hint, text: str):
    try:
        return typed_values.coerce(hint, text)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def given_values(args: argparse.Namespace, cls: Type) -> Dict[str, Any]:
    """The fields of ``cls`` the command line set."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)
            if hasattr(args, field.name)}


def parse_hparams(assignments: Optional[Sequence[str]]) -> Dict[str, Dict[str, str]]:
    """``["retrieval.embedding_dim=64", ...]`` -> ``{"retrieval": {"embedding_dim": "64"}}``
    (values stay text: ``HParams.from_dict`` coerces them). ValueError on bad syntax."""
    result: Dict[str, Dict[str, str]] = {}
    for assignment in assignments or ():
        target, sep, value = assignment.partition("=")
        model, dot, name = target.strip().partition(".")
        if not sep or not dot or not model or not name:
            raise ValueError(f"--hparam {assignment!r}: expected MODEL.NAME=VALUE, e.g. "
                             "retrieval.embedding_dim=64")
        result.setdefault(model, {})[name.strip()] = value.strip()
    return result


def merge_hparams(*layers: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per-model overrides, later layers winning name by name."""
    merged: Dict[str, Dict[str, Any]] = {}
    for layer in layers:
        for model, values in (layer or {}).items():
            merged.setdefault(model, {}).update(values)
    return merged


def load_config_file(path: str) -> Dict[str, Dict[str, Any]]:
    """The sections of a JSON or YAML config file. ValueError names the file and what is
    wrong with it (unreadable, not a mapping, unknown section)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ValueError(f"config file {path}: {error.strerror or error}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml  # pylint: disable=import-outside-toplevel

            content = yaml.safe_load(text)
        else:
            content = json.loads(text)
    except Exception as error:  # pylint: disable=broad-except  (json and yaml errors)
        raise ValueError(f"config file {path}: not valid "
                         f"{'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                         f"{error}") from None
    content = content or {}
    if not isinstance(content, dict):
        raise ValueError(f"config file {path}: expected a mapping of sections {SECTIONS}")
    unknown = sorted(set(content) - set(SECTIONS))
    if unknown:
        raise ValueError(f"config file {path}: unknown sections {unknown}; known: "
                         f"{list(SECTIONS)}")
    for section, values in content.items():
        if not isinstance(values, dict):
            raise ValueError(f"config file {path}: section {section!r} must be a mapping")
    return content


def build(cls: Type, *layers: Mapping[str, Any], what: str):
    """``cls`` from its defaults and ``layers`` of values (later layers win)."""
    values: Dict[str, Any] = {}
    for layer in layers:
        values.update(layer or {})
    return typed_values.build(cls, values, what)
