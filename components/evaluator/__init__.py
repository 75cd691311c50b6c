"""The Evaluators' configuration (stock TFX Evaluator + TFMA) and their baseline resolver."""
