"""Evaluation: the LM interface, scorers, eval tasks, the results matrix and its metrics."""
