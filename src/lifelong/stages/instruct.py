"""Instruction-tuning stage: supervised fine-tuning with the loss on response tokens only."""

from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import TrainableStage


@STAGE_KINDS.register("instruct")
class Instruct(TrainableStage):
    """Fine-tune on prompt/response, chat messages, classification or choice rows; prompt tokens carry
    no loss; prompts use the tokenizer's chat template where it has one."""

    formats = ("prompt_response", "messages", "classification", "choice")
