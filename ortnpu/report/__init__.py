"""Evaluation reports: plain text, JSON (stable schema) and one self-contained HTML file."""

from ortnpu.report.evaluation import SCHEMA, SCHEMA_VERSION, EvaluationReport

__all__ = ["SCHEMA", "SCHEMA_VERSION", "EvaluationReport"]
