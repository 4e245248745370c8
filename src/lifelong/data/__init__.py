"""Data: rows from files, hub datasets or inline; formats; tokenization into training examples."""

from lifelong.data.formats import Formatter, check_rows, infer_format, to_eval_items, to_examples
from lifelong.data.sources import Rows, load_rows

__all__ = ["Rows", "load_rows", "Formatter", "infer_format", "check_rows", "to_examples", "to_eval_items"]
