"""DPO: the loss against hand computation and TRL, the preference stage's effect, and data errors."""

import json

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
    ipo, _ = dpo_loss(
        pc, pr, rc, rr, PreferenceConfig(beta=0.5, loss="ipo"), torch.tensor([2, 2]), torch.tensor([1, 1])
    )
    h_avg = torch.tensor([0.5 / 2 - (-0.5), 0.0 / 2 - (-0.5)])
    assert float(ipo) == pytest.approx(float(((h_avg - 1.0) ** 2).mean()))


def test_preference_stage_raises_held_out_preference_accuracy_against_stage_start(tmp_path):
    from lifelong.runner import Run
    from lifelong.testing import tiny_pretrained, tiny_run_config
    from lifelong.validation import validate_raw

    base = tiny_pretrained(tmp_path / "base")
    raw = tiny_run_config("naive", n_stages=2, steps=60, train={"lr": 1e-3}, name="dpo", output_dir=str(tmp_path / "r"))
    raw["model"] = {"path": base}
    raw["eval"]["bootstrap"] = 0
    s1 = raw["stages"][1]
    pairs = lambda rows: [
        {
            "prompt": r["text"],
            "chosen": r["label"],  # noqa: E731
            "rejected": "no" if r["label"] == "yes" else "yes",
        }
        for r in rows
    ]
    raw["stages"][1] = {
        "name": "pref",
        "kind": "preference",
        "data": {"rows": pairs(s1["data"]["rows"])},
        "eval": {"rows": pairs(s1["eval"]["rows"])},
        "preference": {"beta": 0.1},
    }
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


@pytest.fixture
def fresh_accelerate_state():
    """TRL's Trainer configures accelerate's process-wide state; restore it for the tests that follow."""
    yield
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def test_dpo_loss_and_rewards_match_trl(fresh_accelerate_state):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lifelong.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model, ref = tiny_llama(seed=1), tiny_llama(seed=2)
    data = Dataset.from_list(
        [
            {"prompt": "t0 abc?", "chosen": " yes", "rejected": " no"},
            {"prompt": "t1 bcd?", "chosen": " no way", "rejected": " yes"},
        ]
    )
    args = DPOConfig(
        output_dir="/tmp/lifelong-trl",
        per_device_train_batch_size=2,
        beta=0.1,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        max_length=64,
    )
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    trl_loss = trainer.compute_loss(model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    # the same sequences through lifelong's functions
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        pol, _ = sequence_logps(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, labels
        )
        rf, _ = sequence_logps(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, labels)
    n = pol.shape[0] // 2
    ours, logs = dpo_loss(pol[:n], pol[n:], rf[:n], rf[n:], PreferenceConfig(beta=0.1))
    assert float(ours) == pytest.approx(float(trl_loss), abs=1e-5)
    assert logs["reward_chosen"] == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert logs["reward_rejected"] == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    assert logs["reward_margin"] == pytest.approx(metrics["rewards/margins"], abs=1e-5)


def _pref_stream(tmp_path, name, stages, steps=60):
    from lifelong.testing import tiny_pretrained, tiny_run_config
    from lifelong.validation import validate_raw

    base = tmp_path / "base"
    if not base.exists():
        tiny_pretrained(base)
    raw = tiny_run_config(
        "naive", n_stages=3, steps=steps, train={"lr": 1e-3}, name=name, output_dir=str(tmp_path / "r")
    )
    raw["model"] = {"path": str(base)}
    raw["eval"]["bootstrap"] = 0
    pairs = lambda rows, flip=False: [
        {
            "prompt": r["text"],
            "chosen": r["label"]
            if not flip
            # noqa: E731
            else ("no" if r["label"] == "yes" else "yes"),
            "rejected": ("no" if r["label"] == "yes" else "yes") if not flip else r["label"],
        }
        for r in rows
    ]
    src = raw["stages"]
    out = []
    for k, (kind, opts) in enumerate(stages):
        s = src[k]
        if kind == "instruct":
            out.append(s)
        else:
            out.append(
                {
                    "name": s["name"],
                    "kind": "preference",
                    "data": {"rows": pairs(s["data"]["rows"])},
                    "eval": {"rows": pairs(s["eval"]["rows"])},
                    "preference": {"beta": 0.1, **opts},
                }
            )
    raw["stages"] = out
    return validate_raw(raw)


def test_averaging_sweep_is_above_the_line_and_the_tax_is_reported(tmp_path):
    from lifelong.runner import Run

    cfg = _pref_stream(
        tmp_path,
        "avg",
        [("instruct", {}), ("preference", {"average_sweep": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "average": [0.6]})],
    )
    res = Run(cfg, quiet=True).execute()
    sweep = res.extra["averaging_sweep"]["task1"]
    ends = {p["ratio"]: p["scores"] for p in sweep}
    p0, p1 = ends[0.0]["task1"], ends[1.0]["task1"]
    t0, t1 = ends[0.0]["task0"], ends[1.0]["task0"]
    assert p1 > p0 + 40 and t0 > t1 + 40  # DPO gains preference accuracy and costs the instruct task
    gains = [
        (p["scores"]["task1"] - p0) / (p1 - p0) + (p["scores"]["task0"] - t1) / (t0 - t1)
        for p in sweep
        if 0 < p["ratio"] < 1
    ]
    assert max(gains) > 1.1  # some ratio keeps most of the gain and recovers part of the task: above the line
    assert res.matrix[2] == [ends[0.6]["task0"], ends[0.6]["task1"]]  # the chosen ratio was applied
    tax = res.metrics["alignment_tax"]["task1"]
    assert tax["columns"] == 1 and tax["mean_change"] < 0


def test_preference_replay_keeps_the_first_preferences(tmp_path):
    from lifelong.runner import Run

    acc = {}
    for f in (0.0, 0.3):
        cfg = _pref_stream(tmp_path, f"replay{f}", [("preference", {}), ("preference", {"replay_fraction": f})])
        res = Run(cfg, quiet=True).execute()
        acc[f] = res.matrix[2][0]  # first stage's preference accuracy after the second stage
        assert res.matrix[1][0] > 80  # the first stage learned its preferences
    assert acc[0.3] > acc[0.0] + 20, acc


def test_elastic_reset_resets_policy_to_ema_and_ema_to_initial():
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.elastic_reset import ElasticReset, ElasticResetParams
    from lifelong.testing import tiny_llama

    model = tiny_llama(seed=3)
    s = ElasticReset(ElasticResetParams(ema_decay=0.5, reset_every=3))
    ctx = StageContext(stage_index=0, stage_name="s", model=model, tokenizer=None)
    s.before_stage(ctx)
    w = model.lm_head.weight
    init = w.detach().clone()
    ema = init.clone()
    for _ in range(3):
        with torch.no_grad():
            w.add_(1.0)  # an "update"
        w.grad = torch.ones_like(w)
        ema = 0.5 * ema + 0.5 * w.detach()
        s.before_step(ctx)
    assert torch.allclose(w, ema)  # policy reset to the EMA on the 3rd step
    assert torch.allclose(s.ema["model.embed_tokens.weight"], init)  # EMA reset to the initial model (tied head)
    assert torch.count_nonzero(w.grad) == 0 and s.resets == 1


def test_replay_of_instruction_data_inside_a_preference_stage_uses_the_lm_loss(tmp_path):
    from lifelong.runner import Run

    cfg = _pref_stream(tmp_path, "lmreplay", [("instruct", {}), ("preference", {})], steps=10)
    cfg.strategy[0].name = "replay"
    cfg.strategy[0].__pydantic_extra__ = {"fraction": 0.25}
    cfg.stages[1].eval.scorer = "preference_margin"
    run = Run(cfg, quiet=True)
    res = run.execute()
    ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in ev if e["type"] == "step" and e["stage"] == 1]
    assert any("lm_replay_loss" in e for e in steps)  # replayed instruct examples took the LM loss
    assert res.costs["task1"]["replayed_examples"] > 0
    assert "preference_margin" in res.metrics and res.tasks[1]["metric"] == "preference_margin"
