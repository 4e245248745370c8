"""What the training loop's speed work (docs/performance.md) must not change: the loop's losses and weights are
those of a plain PyTorch loop on the same batches, collation and sharding equal independent references, the
optimizer's memory goes at a stage's end without a garbage collection, and the batched step events are all
on disk before a checkpoint and when a stage ends."""

import copy
import gc
import json
import weakref

import numpy as np
import pytest
import torch

from lifelong.data.collate import collate
from lifelong.runner import Run
from lifelong.testing import tiny_run_config
from lifelong.train import loop
from lifelong.train.accel import shard
from lifelong.train.loop import micro_batches
from lifelong.train.schedules import lr_multiplier
from lifelong.validation import validate_raw


def config(tmp_path, name, steps=6, **train):
    raw = tiny_run_config("naive", n_stages=2, steps=steps, name=name, output_dir=str(tmp_path / "runs"))
    raw["eval"]["bootstrap"] = 0
    raw["train"].update(train)
    raw["stages"][1]["train"] = {"grad_accum": 2, "schedule": "cosine", "warmup_steps": 2}
    return validate_raw(raw)


def step_events(run_dir):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "step"]


def test_loop_losses_and_weights_equal_a_plain_loop_on_the_same_batches(tmp_path):
    """A naive 2-stage run (stage 2 with gradient accumulation and a warmed cosine schedule) against AdamW,
    clipping and the schedule written out by hand over the loop's own micro-batches."""
    cfg = config(tmp_path, "loop")
    run = Run(cfg, quiet=True)
    model = copy.deepcopy(run.model)  # the initial weights
    run.execute()
    hand_losses = []
    for stage in range(2):
        tc, examples = cfg.stage_train(stage), run.prepared[stage]
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(tc, tc.max_steps, stage))
        batches = micro_batches(len(examples), tc.batch_size, cfg.seed, stage)
        model.train()
        for _ in range(tc.max_steps):
            loss_sum = 0.0
            for _ in range(tc.grad_accum):
                loss = model(**collate([examples[i] for i in next(batches)], 0, "cpu")).loss
                (loss / tc.grad_accum).backward()
                loss_sum += loss.item() / tc.grad_accum
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            hand_losses.append(loss_sum)
    logged = step_events(run.run_dir)
    assert [(e["stage"], e["step"]) for e in logged] == [(s, k) for s in range(2) for k in range(6)]
    assert np.allclose([e["loss"] for e in logged], hand_losses, rtol=0, atol=1e-6)
    trained = run.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())  # bit for bit


@pytest.mark.parametrize("as_type", [list, tuple, np.array])
def test_collate_equals_padding_by_pad_sequence(as_type):
    rng = np.random.default_rng(0)
    examples = []
    for k in [5, 1, 9, 9, 3]:
        ids = rng.integers(3, 100, k).tolist()
        labels = [-100] * (k // 2) + ids[k // 2 :]
        examples.append({"input_ids": as_type(ids), "labels": as_type(labels)})
    got = collate(examples, 7, "cpu")

    def padded(key, value):
        rows = [torch.as_tensor(np.asarray(e[key]), dtype=torch.long) for e in examples]
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)

    assert torch.equal(got["input_ids"], padded("input_ids", 7))
    assert torch.equal(got["labels"], padded("labels", -100))
    mask = [torch.ones(len(e["input_ids"]), dtype=torch.long) for e in examples]
    assert torch.equal(got["attention_mask"], torch.nn.utils.rnn.pad_sequence(mask, batch_first=True))
    assert all(t.dtype == torch.long for t in got.values())


def test_collate_names_an_example_whose_labels_do_not_match_its_tokens():
    good = {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}
    with pytest.raises(ValueError, match=r"example 1: 2 labels for 3 input_ids"):
        collate([good, {"input_ids": [5, 6, 7], "labels": [6, 7]}], 0, "cpu")


def test_shard_splits_a_global_batch_like_numpy_array_split():
    for n in range(0, 23):
        for world in range(1, 6):
            parts = np.array_split(np.arange(n), world)
            assert [list(shard(n, world, r)) for r in range(world)] == [p.tolist() for p in parts]


def test_stage_end_frees_the_optimizer_state_without_a_garbage_collection(tmp_path, monkeypatch):
    cfg = config(tmp_path, "free", steps=3)
    run = Run(cfg, quiet=True)
    made = []

    def recording_adamw(*args, **kwargs):
        opt = loop_adamw(*args, **kwargs)
        made.append(weakref.ref(opt))
        return opt

    loop_adamw = loop.adamw
    monkeypatch.setattr(loop, "adamw", recording_adamw)
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(a) or 0)
    was_enabled = gc.isenabled()
    gc.disable()  # only reference counting may free it
    try:
        loop.train_stage(run, 0, run.prepared[0])
        assert len(made) == 1 and made[0]() is None  # AdamW and its moments are gone
    finally:
        if was_enabled:
            gc.enable()
    assert collections == []
    assert not run.accelerator._models and not run.accelerator._optimizers


def test_step_events_are_on_disk_before_each_checkpoint_and_when_the_stage_ends(tmp_path, monkeypatch):
    cfg = config(tmp_path, "events", steps=7, checkpoint_every=3)
    run = Run(cfg, quiet=True)
    seen = {}
    save = loop.save_checkpoint

    def recording_save(run_dir, name, *args, **kwargs):
        seen[name] = [e["step"] for e in step_events(run_dir)]
        return save(run_dir, name, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", recording_save)
    loop.train_stage(run, 0, run.prepared[0])
    assert seen == {"stage0-step3": [0, 1, 2], "stage0-step6": [0, 1, 2, 3, 4, 5]}
    assert [e["step"] for e in step_events(run.run_dir)] == list(range(7))  # before the runner logs anything


def test_fused_adamw_takes_the_same_steps_up_to_rounding(tmp_path):
    weights = {}
    for fused in (False, True):
        run = Run(config(tmp_path, f"fused{fused}", steps=4, fused_adamw=fused), quiet=True)
        loop.train_stage(run, 0, run.prepared[0])
        weights[fused] = run.model.state_dict()
    assert any(not torch.equal(weights[True][k], v) for k, v in weights[False].items())  # another kernel
    assert all(torch.allclose(weights[True][k], v, rtol=0, atol=1e-5) for k, v in weights[False].items())
