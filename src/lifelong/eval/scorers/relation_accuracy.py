"""Relation classification accuracy over the relations seen so far, the measure of continual relation extraction
(Wang et al. 2019, "Sentence Embedding Alignment for Lifelong Relation Extraction"; Zhao et al. 2022, CRL): the
relation label with the highest log-likelihood given the prompt is the prediction (as `choice` ranks options,
Brown et al. 2020), among the options the eval suite gives each item at each matrix row: the relations of the
stages up to that row plus the task's own (`lifelong.eval.tasks.EvalTask.items_at`), or `data.labels` of the
eval task when it lists them. So after stage k an old stage's test set is classified among all k stages'
relations, and the baseline and earlier rows among those seen by then plus the task's own.

Statistics and records are `choice`'s: column 0 the accuracy (`length_norm`), column 1 the other one (acc_norm
per character beside plain acc)."""

from __future__ import annotations

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.choice import Choice


@SCORERS.register("relation_accuracy")
class RelationAccuracy(Choice):
    formats = ("relation",)  # type: ignore[assignment]  # Choice's tuple is inferred as two strings
