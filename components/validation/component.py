"""Data validation components: a cache-safe ImportSchemaGen and the gate before training.

Which schema the examples are checked against: a curated one, checked into the
repository (``pipeline/schemas/<kind>/schema.pbtxt``), not the schema SchemaGen infers
during the latest earlier run. The curated schema started as SchemaGen's output of an
earlier run and was then reviewed by hand, which is the practice TFX recommends
(ImportSchemaGen's documentation): an inferred schema holds whatever one data set
happened to show, here the genres, occupations and numeric zip codes of a small first
run, so it would reject the other MovieLens layouts and real data; it knows no rating
scale, so it cannot tell that a zero rating is wrong; and resolving "the latest schema"
would also pick up the schema inferred from a bad run itself (SchemaGen publishes before
any gate fails), so bad data would become the reference of the next run. A reviewed file
keeps the reference fixed, explicit and diffable; SchemaGen still runs on every run so
that its inferred schema can be compared with the curated one when the data changes.

  StatisticsGen ─┐
  CuratedSchemaGen ─ ExampleValidator ─ AnomaliesGate ─(upstream of)─ every Trainer
"""

from __future__ import annotations

import os
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.validation import executor


class CuratedSchemaGenSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        # Where the schema came from (provenance only: the executor does not read it).
        executor.SCHEMA_FILE_KEY: component_spec.ExecutionParameter(type=str),
        # The schema itself: edits change the cache key, and the compiled pipeline holds
        # the schema, so a Kubeflow / Vertex run needs no file at a local path.
        executor.SCHEMA_TEXT_KEY: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema),
    }


class CuratedSchemaGen(base_component.BaseComponent):
    """TFX's ImportSchemaGen, with the schema's text rather than its path as parameter.

    ImportSchemaGen's only parameter is a path: with caching on, an edited schema at the
    same path would be served from the cache (the old schema staying in force), and on
    Kubeflow / Vertex the path of the machine that compiled the pipeline is read in the
    container. Here the file is read when the pipeline is built; the output is the same
    Schema artifact (``schema.pbtxt``).
    """

    SPEC_CLASS = CuratedSchemaGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.CuratedSchemaGenExecutor)

    def __init__(self, schema_file: str):
        with open(schema_file, encoding="utf-8") as handle:
            text = handle.read()
        executor.parse_schema(text, schema_file)  # a broken file fails here, not in a run
        spec = CuratedSchemaGenSpec(
            schema_file=os.path.abspath(schema_file),
            schema_text=text,
            schema=types.Channel(type=standard_artifacts.Schema))
        super().__init__(spec=spec)


class AnomaliesGateSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        executor.EXAMPLES_NAME_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        executor.ANOMALIES_KEY:
            component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {}


class AnomaliesGate(base_component.BaseComponent):
    """Fails the run when ExampleValidator found any anomaly, or a split is empty.

    The error (components.validation.DataValidationError) lists each anomaly, e.g.
    ``split 'train': feature 'user_rating': Out-of-range values [FLOAT_TYPE_SMALL_FLOAT]
    (Unexpectedly low values: 0<0.5...)`` or ``split 'eval': empty split: no examples``.
    The gate has no output: Trainers depend on it with ``add_upstream_node``, so that
    with LocalDagRunner (which runs nodes in topological order and stops at the first
    failure) and on Kubeflow / Vertex no Trainer starts unless every gate passed.

    Args:
      anomalies: ExampleValidator's output.
      examples_name: what the examples are, for the error ("rating examples").
    """

    SPEC_CLASS = AnomaliesGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.AnomaliesGateExecutor)

    def __init__(self, anomalies: types.BaseChannel, examples_name: Optional[str] = None):
        super().__init__(spec=AnomaliesGateSpec(anomalies=anomalies,
                                                examples_name=examples_name))
