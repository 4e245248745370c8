"""Continual pre-training stage: language modelling on raw text, packed into fixed-length blocks."""

from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import TrainableStage


@STAGE_KINDS.register("pretrain")
class Pretrain(TrainableStage):
    """Next-token prediction on every token of `text` rows, packed with EOS between documents."""

    formats = ("text",)
