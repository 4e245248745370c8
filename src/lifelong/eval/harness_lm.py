"""The in-memory model as an lm-evaluation-harness LM (Gao et al. 2021-2024, `lm_eval`, EleutherAI): a thin
`lm_eval.api.model.TemplateLM` over our batched `HFLM` (`lifelong.eval.lm`), so an lm-eval task scores the model a
run holds after each stage (with the strategy's eval model: adapters, soft prompts), never a copy reloaded from
disk. Imported only when lm-eval is installed (`lifelong.eval.harness.require`).

Requests are tokenized as lm-eval's own Hugging Face wrapper (`lm_eval.models.huggingface.HFLM`) tokenizes them,
so the same model gives the same numbers through either:
- `tok_encode`: the tokenizer's own special tokens (a BOS where it adds one), none when the text already starts
  with the prefix token; `TemplateLM._encode_pair` moves a context's trailing spaces into the continuation and
  splits the encoding of context + continuation; an empty context is the prefix token (BOS, else EOS).
- `loglikelihood_rolling`: lm-eval's disjoint rolling windows (`get_rolling_token_windows`), one token shorter than
  our `max_length` because `HFLM.loglikelihood` keeps `max_length` tokens of context + continuation.
- `generate_until`: greedy (`do_sample` is ignored: every probe scores greedy output), the context cut from the left
  to leave `max_gen_toks` (default 256), the text cut at the first stop sequence (`until`, plus the EOS text).
  Generation runs to `max_gen_toks` or EOS and is cut afterwards; greedy decoding makes that the same text as
  stopping at the sequence.
No chat template is applied (lm-eval's default), whatever `model.chat_template` says for training prompts.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

DEFAULT_MAX_GEN_TOKS = 256
"""lm-eval's `HFLM.max_gen_toks`: the generation budget of a task whose generation_kwargs name none."""


class HarnessLM(TemplateLM):  # type: ignore[misc]
    """`lm`: our `HFLM` (model, tokenizer, batch size, max_length)."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = lm.tok

    # ---- tokenization (as lm_eval.models.huggingface.HFLM) ------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return int(self.lm.max_length)

    def tok_encode(self, string: str, add_special_tokens: Any = None, **kwargs: Any) -> list[int]:
        kw: dict[str, Any] = {}
        if add_special_tokens is not None:
            kw["add_special_tokens"] = bool(add_special_tokens)
        elif string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            kw["add_special_tokens"] = False  # the text carries its BOS already
        return list(self.tokenizer.encode(string, **kw))

    def tok_decode(self, tokens: Any, skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens))

    # ---- requests ----------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: Any, **kwargs: Any) -> list[tuple[float, bool]]:
        """(log p(continuation | context), greedy) per ((context, continuation), context ids, continuation ids),
        batched by `HFLM.loglikelihood` (longest first, right-padded)."""
        return self.lm.loglikelihood([(list(c), list(x)) for _, c, x in requests])

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[int, tuple[list[int], list[int]]]] = []
        for k, req in enumerate(requests):
            (text,) = req.args
            for w in get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=max(self.max_length - 1, 1),
                context_len=1,
            ):
                windows.append((k, make_disjoint_window(w)))
        scored = self.lm.loglikelihood([w for _, w in windows])
        out = [0.0] * len(requests)
        for (k, _), (ll, _) in zip(windows, scored):
            out[k] += ll
        return out

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        plans = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until")
            until = [until] if isinstance(until, str) else list(until or [])
            if eos and eos not in until:
                until.append(eos)
            budget = int(kwargs.get("max_gen_toks") or kwargs.get("max_new_tokens") or DEFAULT_MAX_GEN_TOKS)
            plans.append((self.tok_encode(context), until, budget))
        out = [""] * len(plans)
        for budget in sorted({p[2] for p in plans}):  # one batched call per generation budget
            idx = [k for k, p in enumerate(plans) if p[2] == budget]
            texts = self.lm.generate([plans[k][0] for k in idx], max_new_tokens=budget)
            for k, text in zip(idx, texts):
                for stop in plans[k][1]:
                    if stop:
                        text = text.split(stop)[0]
                out[k] = text
        return out
