"""Preference stage: DPO (or IPO / cDPO) on prompt, chosen, rejected pairs, against the model as the stage
starts (see `lifelong.train.dpo`). Strategies (replay, EWC, LwF, ...) apply as in any trainable stage."""

from __future__ import annotations

from typing import Any, Optional

from lifelong.data import check_rows, infer_format, load_rows
from lifelong.data.formats import to_preference_examples
from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import TrainableStage, record_lengths, stage_lengths
from lifelong.train.context import StageEnv


@STAGE_KINDS.register("preference")
class Preference(TrainableStage):
    """Align on preference pairs with DPO against the stage-start model (IPO and conservative variants)."""

    formats = ("preference",)

    def _examples(self, run: StageEnv, index: int, data: Any) -> Any:
        rows = load_rows(data)
        fmt = infer_format(rows, data.format)
        if fmt != "preference":
            raise ValueError(
                f"stages.{index} ({run.cfg.stages[index].name}): a preference stage needs prompt, "
                f"chosen, rejected rows; {rows.source} has format {fmt}"
            )
        check_rows(rows, fmt)
        return to_preference_examples(rows, data, run.formatter, run.cfg.stage_train(index).max_length)

    def apply(self, run: StageEnv, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        from lifelong.train.dpo import DPOObjective
        from lifelong.train.loop import train_stage

        pcfg = run.cfg.stages[index].preference
        pad = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
        counts = record_lengths(run, index, stage_lengths([prepared]))
        examples = list(prepared) + self._replayed(run, index, len(prepared))
        obj = DPOObjective(pcfg, pad)
        store = run.run_dir / "keep" / f"dpo_ref_stage{index}.json"
        obj.prepare(run.model, examples, store, write=run.accelerator.is_main_process)
        before = (
            {n: p.detach().cpu().clone() for n, p in run.model.named_parameters()}
            if (pcfg.average or pcfg.average_sweep)
            else None
        )
        if run.results_extra is not None:  # the alignment tax is measured across preference stages
            marked = run.results_extra.setdefault("preference_stages", [])
            if index not in marked:
                marked.append(index)
        cost = train_stage(run, index, examples, resume, objective=obj)
        if before is not None:
            self._average(run, index, before)
        return cost | counts

    def _replayed(self, run: StageEnv, index: int, n_new: int) -> list[dict]:
        """Preference replay: pairs of earlier preference stages, f / (1 - f) of the new pairs, drawn with the
        run's seed (reference log-probs are recomputed against this stage's start)."""
        f = run.cfg.stages[index].preference.replay_fraction
        pool = [
            e
            for j in range(index)
            if run.cfg.stages[j].kind == "preference"
            for e in (run.prepared[j] if isinstance(run.prepared[j], list) else [])
        ]
        if not f or not pool:
            return []
        import numpy as np

        k = round(f / (1 - f) * n_new)
        idx = np.random.default_rng([run.cfg.seed, index, 31337]).choice(len(pool), size=k, replace=k > len(pool))
        run.log(type="preference_replay", stage=index, pairs=int(k))
        return [{key: v for key, v in pool[int(i)].items() if not key.startswith("ref_")} for i in idx]

    def _average(self, run: StageEnv, index: int, before: dict) -> None:
        from lifelong.train.averaging import average_into

        pcfg = run.cfg.stages[index].preference
        after = {n: p.detach().cpu().clone() for n, p in run.model.named_parameters()}
        if pcfg.average_sweep and run.results_extra is not None:
            sweep = []
            for a in pcfg.average_sweep:  # a: weight of the aligned end (1 - a: the stage-start model)
                average_into(run.model, before, after, [a])
                suite = run.score_suite(index + 1)
                sweep.append(
                    {
                        "ratio": a,
                        "scores": {t: v["score"] for t, v in suite.items()},
                        "ci95": {t: v["ci95"] for t, v in suite.items()},
                    }
                )
            run.results_extra.setdefault("averaging_sweep", {})[run.cfg.stages[index].name] = sweep
            run.log(type="averaging_sweep", stage=index, sweep=sweep)
        ratios = pcfg.average if pcfg.average else [1.0]
        average_into(run.model, before, after, ratios)
        run.log(type="averaged", stage=index, ratios=ratios)
