"""Sequential LoRA (`seq_lora`): only the one adapter trains, it carries over from stage to stage, it forgets
like sequential fine-tuning on the conflicting stream (the baseline's point) while per-stage `lora` does not,
every stage's PEFT export is the adapter as it was then, and a crash mid-stage resumes to the same matrix."""

import json

import pytest
import torch

from lifelong.runner import Run
from lifelong.strategies.lora import adapter_params
from lifelong.strategies.seq_lora import ADAPTER
from lifelong.testing import tiny_pretrained, tiny_run_config
from lifelong.validation import validate_raw

STEPS = 60
SEQ = {"name": "seq_lora"}
EXPORT = {"stages": "all", "format": "peft"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_pretrained(tmp_path_factory.mktemp("base") / "tiny")


def make(base, out, spec, name, lr=3e-3, export=None, **train):
    raw = tiny_run_config(spec, steps=STEPS, train={"lr": lr, **train}, name=name, output_dir=str(out))
    if export is not None:
        raw["export"] = export
    raw["model"] = {"path": base}
    raw["eval"]["bootstrap"] = 0
    return validate_raw(raw)


def snap(model):
    return {n: q.detach().clone() for n, q in adapter_params(model, ADAPTER).items()}


@pytest.fixture(scope="module")
def seq_run(base, tmp_path_factory):
    """A 3-stage seq_lora run recording the adapter at every stage's start (after wrap_model) and end."""
    out = tmp_path_factory.mktemp("runs")
    run = Run(make(base, out, SEQ, "seq", export=EXPORT, checkpoint_every=20), quiet=True)
    starts, ends = {}, {}
    before, after = run.strategy.before_stage, run.strategy.after_stage

    def on_start(ctx):
        starts[ctx.stage_index] = snap(ctx.model)
        before(ctx)

    def on_end(ctx):
        ends[ctx.stage_index] = snap(ctx.model)
        after(ctx)

    run.strategy.before_stage, run.strategy.after_stage = on_start, on_end
    return run, run.execute(), starts, ends


def test_only_the_adapter_trains_and_the_base_is_bit_identical(seq_run, base):
    from transformers import AutoModelForCausalLM

    run, res, _, ends = seq_run
    ref = AutoModelForCausalLM.from_pretrained(base).state_dict()
    live = {
        n.replace(".base_layer", ""): t for n, t in run.model.get_base_model().state_dict().items() if "lora_" not in n
    }
    assert set(live) == set(ref)
    assert all(torch.equal(live[n], ref[n]) for n in ref)  # every base weight, bit for bit
    assert list(run.model.peft_config) == [ADAPTER]  # one adapter, never a second one
    n_adapter = sum(t.numel() for t in ends[2].values())
    assert n_adapter > 0
    assert [res.costs[s.name]["trainable_params"] for s in run.cfg.stages] == [n_adapter] * 3


def test_the_adapter_continues_from_the_previous_stage(seq_run):
    from safetensors.torch import load_file

    run, _, starts, ends = seq_run
    assert all(float(t.abs().sum()) == 0 for n, t in starts[0].items() if "lora_B" in n)  # fresh: B = 0
    for k in (1, 2):
        assert starts[k].keys() == ends[k - 1].keys()
        assert all(torch.equal(starts[k][n], ends[k - 1][n]) for n in starts[k])  # not re-initialised
        assert any(not torch.equal(ends[k][n], starts[k][n]) for n in starts[k])  # and it trained on stage k
    for k in range(3):  # the exported adapter of stage k is the adapter as it was at the end of stage k
        exported = load_file(str(run.run_dir / "adapters" / f"stage{k}" / "adapter_model.safetensors"))
        flat = {n.replace(f".{ADAPTER}.", "."): t for n, t in ends[k].items()}
        assert exported.keys() == flat.keys() and all(torch.equal(exported[n], flat[n]) for n in flat)


def test_each_stage_exports_the_adapter_as_it_was_then(seq_run, base):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run, _, _, ends = seq_run
    for k, stage in enumerate(run.cfg.stages):
        exported = load_file(str(run.run_dir / "models" / stage.name / "adapter_model.safetensors"))
        flat = {n.replace(f".{ADAPTER}.", "."): t for n, t in ends[k].items()}
        assert exported.keys() == flat.keys() and all(torch.equal(exported[n], flat[n]) for n in flat)
    last = run.run_dir / "models" / run.cfg.stages[-1].name
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(last))
    ids = torch.tensor([[33, 5, 98, 14, 15, 16, 86]])
    run.model.base_model.enable_adapter_layers()
    run.model.base_model.set_adapter(ADAPTER)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, run.model(ids).logits)  # plain PEFT load = the run's last model


def test_it_forgets_like_naive_while_per_stage_lora_keeps_old_tasks(seq_run, base, tmp_path):
    _, res, _, _ = seq_run
    seq = res.metrics["score"]["metrics"]
    naive = Run(make(base, tmp_path, "naive", "naive", lr=1e-3), quiet=True).execute().metrics["score"]["metrics"]
    per_stage = Run(make(base, tmp_path, {"name": "lora"}, "lora"), quiet=True).execute()
    lora = per_stage.metrics["score"]["metrics"]
    A, L = res.matrix, per_stage.matrix
    assert min(A[k + 1][k] - A[0][k] for k in range(3)) > 20  # each stage is learned when it is trained
    assert seq["BWT"] < -25, seq  # then overwritten by the conflicting next stage
    assert naive["BWT"] < -25 and seq["BWT"] < 0.5 * naive["BWT"], (seq, naive)  # as much as naive forgets
    assert lora["BWT"] == 0 and min(L[3][j] for j in range(2)) > max(A[3][j] for j in range(2)) + 20, (A, L)


def test_crash_mid_stage_then_resume_gives_the_same_matrix(seq_run, base, tmp_path):
    run0, res0, _, _ = seq_run
    cfg = make(base, tmp_path, SEQ, "seq", export=EXPORT, checkpoint_every=20)  # the fixture run's config
    run = Run(cfg, quiet=True)
    step = run.strategy.before_step

    def crash(ctx):
        if ctx.stage_index == 1 and ctx.step == 30:  # after the stage-1 step-20 checkpoint
            raise KeyboardInterrupt
        step(ctx)

    run.strategy.before_step = crash
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    meta = json.loads((run.run_dir / "ckpt" / "stage1-step20" / "meta.json").read_text())
    assert meta["weights"]["frozen"] == "start"  # adapter-only checkpoint: the base comes from the config
    again = Run(cfg, resume=True, quiet=True)
    out = again.execute()
    assert out.matrix == res0.matrix
    assert again.strategy.state_dict() == run0.strategy.state_dict() == {"created": True, "trained": [0, 1, 2]}
