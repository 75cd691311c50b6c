"""Executors of data validation: the curated schema's import, and the gate.

The gate reads ExampleValidator's anomalies and fails on any. ExampleValidator writes one
``Anomalies`` proto per split, ``Split-<name>/SchemaDiff.pb``, and marks a split "blessed"
when the proto has no feature or dataset anomaly, which lets an empty split through: TFDV
reports zero examples only as ``data_missing``. Here an empty split is an anomaly too.
"""

from __future__ import annotations

import os
from typing import Dict, List

from absl import logging
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from components.validation import DataValidationError

ANOMALIES_KEY = "anomalies"
ANOMALIES_FILE_NAME = "SchemaDiff.pb"  # ExampleValidator's, per split
EXAMPLES_NAME_KEY = "examples_name"
SCHEMA_KEY = "schema"
SCHEMA_FILE_KEY = "schema_file"
SCHEMA_TEXT_KEY = "schema_text"
SCHEMA_FILE_NAME = "schema.pbtxt"  # SchemaGen's file name: readers take the only file
EMPTY_SPLIT = "empty split: no examples"


def parse_schema(text: str, source: str) -> schema_pb2.Schema:
    """A Schema proto from its text format; ValueError naming ``source`` if invalid."""
    try:
        return text_format.Parse(text, schema_pb2.Schema())
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a valid schema: {error}") from None


def describe_anomalies(anomalies: anomalies_pb2.Anomalies) -> List[str]:
    """One line per anomaly reason, naming what it is about.

    ``feature 'user_rating': Out-of-range values [FLOAT_TYPE_SMALL_FLOAT] (Unexpectedly
    low values: 0<0.5...)``; dataset-level anomalies start with ``dataset:``; an empty
    split (TFDV's ``data_missing``) is ``empty split: no examples``. No anomaly: [].
    """
    lines: List[str] = []
    if anomalies.data_missing:
        lines.append(EMPTY_SPLIT)
    infos = [(f"feature {feature!r}", anomalies.anomaly_info[feature])
             for feature in sorted(anomalies.anomaly_info)]
    if anomalies.HasField("dataset_anomaly_info"):
        infos.append(("dataset", anomalies.dataset_anomaly_info))
    for subject, info in infos:
        reasons = list(info.reason) or [anomalies_pb2.AnomalyInfo.Reason(
            short_description=info.short_description, description=info.description)]
        for reason in reasons:
            kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type) if reason.type else ""
            lines.append(
                f"{subject}: {reason.short_description or 'anomaly'}"
                + (f" [{kind}]" if kind else "")
                + (f" ({reason.description})" if reason.description else ""))
    return lines


def read_anomalies(artifact: types.Artifact) -> Dict[str, anomalies_pb2.Anomalies]:
    """The Anomalies proto of each split of an ExampleAnomalies artifact, by split name."""
    result = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([artifact], split),
                            ANOMALIES_FILE_NAME)
        if not fileio.exists(path):
            raise FileNotFoundError(f"no anomalies for split {split!r}: {path} is missing")
        with fileio.open(path, "rb") as handle:
            result[split] = anomalies_pb2.Anomalies.FromString(handle.read())
    return result


def find_anomalies(artifact: types.Artifact) -> Dict[str, List[str]]:
    """``{split: [anomaly lines]}`` for the splits that have any (see describe_anomalies)."""
    found = {}
    for split, anomalies in read_anomalies(artifact).items():
        lines = describe_anomalies(anomalies)
        if lines:
            found[split] = lines
    return found


def failure_message(examples_name: str, found: Dict[str, List[str]], uri: str) -> str:
    """The error of a failed gate: every anomaly, by split."""
    count = sum(len(lines) for lines in found.values())
    listed = "\n".join(f"  split {split!r}: {line}" for split, lines in found.items()
                       for line in lines)
    return (f"data validation failed: {count} anomal{'y' if count == 1 else 'ies'} in the "
            f"{examples_name} (checked against the curated schema; the run stops before training):\n"
            f"{listed}\nAnomalies protos: {uri}")


class CuratedSchemaGenExecutor(base_executor.BaseExecutor):
    """Writes the schema text of the exec properties into the Schema artifact."""

    def Do(self, input_dict, output_dict, exec_properties):
        source, text = exec_properties[SCHEMA_FILE_KEY], exec_properties[SCHEMA_TEXT_KEY]
        parse_schema(text, source)
        path = os.path.join(artifact_utils.get_single_uri(output_dict[SCHEMA_KEY]),
                            SCHEMA_FILE_NAME)
        fileio.makedirs(os.path.dirname(path))  # not made for us on every orchestrator
        with fileio.open(path, "w") as handle:  # verbatim, with the reviewers' comments
            handle.write(text)
        logging.info("CuratedSchemaGen: %s -> %s", source, path)


class AnomaliesGateExecutor(base_executor.BaseExecutor):
    """Raises DataValidationError when any split of the anomalies artifact has one."""

    def Do(self, input_dict, output_dict, exec_properties):
        artifact = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        examples_name = exec_properties.get(EXAMPLES_NAME_KEY) or "examples"
        found = find_anomalies(artifact)
        if found:
            message = failure_message(examples_name, found, artifact.uri)
            logging.error(message)
            raise DataValidationError(message)
        logging.info("AnomaliesGate: no anomaly in the %s (splits %s)", examples_name,
                     ", ".join(artifact_utils.decode_split_names(artifact.split_names)))
