"""Training-file formats: JSONL, JSON, CSV and plain text, with chat, prompt/completion, Alpaca, Q/A,
preference and text examples, detected from content, validated as the file streams, normalised to the one
internal example form the trainer reads (see `examples.py`)."""

from services.files.formats.detect import FORMATS
from services.files.formats.examples import ExampleError
from services.files.formats.pipeline import encode, validate_stream
from services.files.formats.preview import csv_safe_cell, formula_like_paths
from services.files.formats.validation_report import Limits, Location, Report

__all__ = ["FORMATS", "ExampleError", "Limits", "Location", "Report", "csv_safe_cell", "encode",
           "formula_like_paths", "validate_stream"]
