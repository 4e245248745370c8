"""Data: rows from files, hub datasets or inline; formats; tokenization into training examples."""
from lifelong.data.sources import Rows, load_rows
from lifelong.data.formats import Formatter, infer_format, check_rows, to_examples, to_eval_items

__all__ = ["Rows", "load_rows", "Formatter", "infer_format", "check_rows", "to_examples", "to_eval_items"]
