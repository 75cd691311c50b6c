"""Data validation before training: curated schemas in, anomalies stop the run.

For each kind of examples (sequence, rating) the pipeline runs StatisticsGen, then
ExampleValidator against the curated schema of ``pipeline/schemas/<kind>/`` (imported by
:class:`~components.validation.component.CuratedSchemaGen`), then
:class:`~components.validation.component.AnomaliesGate`, which raises
:class:`DataValidationError` naming every anomaly. Every Trainer runs after the gates.

This module stays free of TFX imports so that the command line can catch the error cheaply.
"""


class DataValidationError(RuntimeError):
    """The examples of a run do not match the curated schema (the message lists each
    anomaly by split and feature); the run stops before any Trainer."""
