"""DPO: the loss against hand computation and TRL, the preference stage's effect, and data errors."""
import json
import math

import pytest
import torch

from lifelong.config import PreferenceConfig
from lifelong.train.dpo import dpo_loss, sequence_logps


def test_dpo_loss_hand_computed_and_variants():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.5])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.0])
    loss, logs = dpo_loss(pc, pr, rc, rr, PreferenceConfig(beta=0.5))
    h = torch.tensor([0.5 - (-0.5), 0.0 - (-0.5)])  # (pc-rc) - (pr-rr)
    assert float(loss) == pytest.approx(float(-torch.nn.functional.logsigmoid(0.5 * h).mean()))
    assert logs["reward_chosen"] == pytest.approx(0.5 * (0.5 + 0.0) / 2)
    assert logs["reward_accuracy"] == 1.0
    smooth, _ = dpo_loss(pc, pr, rc, rr, PreferenceConfig(beta=0.5, label_smoothing=0.2))
    want = (-(0.8) * torch.nn.functional.logsigmoid(0.5 * h) - 0.2 * torch.nn.functional.logsigmoid(-0.5 * h)).mean()
    assert float(smooth) == pytest.approx(float(want))
    ipo, _ = dpo_loss(pc, pr, rc, rr, PreferenceConfig(beta=0.5, loss="ipo"), torch.tensor([2, 2]), torch.tensor([1, 1]))
    h_avg = torch.tensor([0.5 / 2 - (-0.5), 0.0 / 2 - (-0.5)])
    assert float(ipo) == pytest.approx(float(((h_avg - 1.0) ** 2).mean()))


def test_preference_stage_raises_held_out_preference_accuracy_against_stage_start(tmp_path):
    from lifelong.config import validate_raw
    from lifelong.runner import Run
    from lifelong.testing import tiny_pretrained, tiny_run_config

    base = tiny_pretrained(tmp_path / "base")
    raw = tiny_run_config("naive", n_stages=2, steps=60, train={"lr": 1e-3}, name="dpo", output_dir=str(tmp_path / "r"))
    raw["model"] = {"path": base}
    raw["eval"]["bootstrap"] = 0
    s1 = raw["stages"][1]
    pairs = lambda rows: [{"prompt": r["text"], "chosen": r["label"],  # noqa: E731
                           "rejected": "no" if r["label"] == "yes" else "yes"} for r in rows]
    raw["stages"][1] = {"name": "pref", "kind": "preference", "data": {"rows": pairs(s1["data"]["rows"])},
                        "eval": {"rows": pairs(s1["eval"]["rows"])}, "preference": {"beta": 0.1}}
    run = Run(validate_raw(raw), quiet=True)
    res = run.execute()
    assert res.tasks[1]["metric"] == "preference_accuracy"
    assert res.matrix[2][1] > res.matrix[1][1] + 40  # DPO raises held-out preference accuracy
    ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in ev if e["type"] == "step" and e["stage"] == 1]
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the start
    assert steps[-1]["reward_margin"] > 0.2 and steps[-1]["reward_accuracy"] > 0.8
    assert {"reward_chosen", "reward_rejected", "kl_chosen"} <= set(steps[-1])
    assert (run.run_dir / "keep" / "dpo_ref_stage1.json").exists()  # reference log-probs computed once, stored


def test_identical_or_empty_pairs_are_rejected():
    from lifelong.config import DataConfig
    from lifelong.data import check_rows, load_rows

    rows = load_rows(DataConfig(rows=[{"prompt": "p", "chosen": "a", "rejected": "a"}]))
    with pytest.raises(ValueError, match="inline row 0: 'chosen' and 'rejected' are identical"):
        check_rows(rows, "preference")
    rows = load_rows(DataConfig(rows=[{"prompt": "p", "chosen": "", "rejected": "a"}]))
    with pytest.raises(ValueError, match="field 'chosen' must be a non-empty"):
        check_rows(rows, "preference")


def test_dpo_loss_and_rewards_match_trl():
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lifelong.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model, ref = tiny_llama(seed=1), tiny_llama(seed=2)
    data = Dataset.from_list([{"prompt": "t0 abc?", "chosen": " yes", "rejected": " no"},
                              {"prompt": "t1 bcd?", "chosen": " no way", "rejected": " yes"}])
    args = DPOConfig(output_dir="/tmp/lifelong-trl", per_device_train_batch_size=2, beta=0.1, report_to=[],
                     use_cpu=True, logging_steps=1, max_length=64)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    trl_loss = trainer.compute_loss(model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    # the same sequences through lifelong's functions
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        pol, _ = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, labels)
        rf, _ = sequence_logps(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, labels)
    n = pol.shape[0] // 2
    ours, logs = dpo_loss(pol[:n], pol[n:], rf[:n], rf[n:], PreferenceConfig(beta=0.1))
    assert float(ours) == pytest.approx(float(trl_loss), abs=1e-5)
    assert logs["reward_chosen"] == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert logs["reward_rejected"] == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    assert logs["reward_margin"] == pytest.approx(metrics["rewards/margins"], abs=1e-5)
