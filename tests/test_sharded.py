"""Sharded training (FSDP2 through accelerate) on CPU with gloo.

`test_sharding_api_two_processes`: the shared API of `lifelong.train.sharding` over 2 processes of a model
sharded with torch's `fully_shard` (what accelerate's FSDP2 plugin calls): gathers, shard-local writes, full
state dicts and optimizer state round trips, against the same model unsharded."""

from __future__ import annotations

import os
import socket
import types

import pytest
import torch

from lifelong.train import sharding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from lifelong.testing import tiny_llama

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ref = tiny_llama(seed=0)  # the same weights on every process
        model = tiny_llama(seed=0)
        assert not sharding.is_sharded(model)
        assert sharding.full_state_dict(model).keys() == ref.state_dict().keys()
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        assert sharding.is_sharded(model) and not sharding.is_sharded(ref)
        names = [n for n, _ in model.named_parameters()]
        params = dict(model.named_parameters())
        plain = dict(ref.named_parameters())
        for n in names:  # every rank gathers every parameter, in the same order
            p = params[n]
            assert sharding.is_sharded(p)
            assert torch.equal(sharding.full_tensor(p), plain[n].detach()), n
            local = sharding.local_tensor(p)
            assert local.shape[0] == torch.chunk(plain[n], world, dim=0)[rank].shape[0]
            assert torch.equal(sharding.local_tensor(sharding.shard_like(plain[n].detach(), p)), local)
        plain_t = plain[names[1]]
        assert sharding.full_tensor(plain_t) is plain_t and sharding.local_tensor(plain_t) is plain_t
        # a shard-local write of a full tensor: every process holds the same new values
        target = names[3]
        new = torch.arange(plain[target].numel(), dtype=torch.float32).reshape(plain[target].shape)
        sharding.assign_full_(params[target], new)
        assert torch.equal(sharding.full_tensor(params[target]), new)
        with pytest.raises(ValueError, match="shape"):
            sharding.shard_like(new[:1], params[target])
        # full state dicts: process 0 only by default, every process with all_ranks
        sd = sharding.full_state_dict(model)
        every = sharding.full_state_dict(model, all_ranks=True)
        expected = {**ref.state_dict(), target: new}
        assert every.keys() == expected.keys()
        assert all(torch.equal(every[k], expected[k]) and every[k].device.type == "cpu" for k in expected)
        assert (sd.keys() == expected.keys()) if rank == 0 else sd == {}
        # loaded back from a full state dict every process holds; a part with strict=False
        sharding.load_full_state_dict(model, ref.state_dict())
        assert torch.equal(sharding.full_tensor(params[target]), plain[target].detach())
        sharding.load_full_state_dict(model, {target: new}, strict=False)
        assert torch.equal(sharding.full_tensor(params[target]), new)
        sharding.load_full_state_dict(model, ref.state_dict())
        # optimizer state: one step, saved whole, loaded into a fresh sharded model, then the same next step
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        batch = torch.tensor([[1, 2, 3, 4, 5, 6]]) + rank
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
        state = sharding.full_optimizer_state(model, opt)
        weights = sharding.full_state_dict(model, all_ranks=True)
        assert set(state["state"]) == set(names)  # keyed by parameter name, whole tensors
        assert state["state"][target]["exp_avg"].shape == plain[target].shape
        twin = tiny_llama(seed=1)
        for layer in twin.model.layers:
            fully_shard(layer)
        fully_shard(twin)
        twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-2)
        sharding.load_full_state_dict(twin, weights)
        sharding.load_full_optimizer_state(twin, twin_opt, state)
        assert not any(sharding.is_sharded(v) for v in weights.values())  # what was loaded is left as it was
        for m, o in ((model, opt), (twin, twin_opt)):
            m(input_ids=batch, labels=batch).loss.backward()
            o.step()
            o.zero_grad()
        a, b = sharding.full_state_dict(model, all_ranks=True), sharding.full_state_dict(twin, all_ranks=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharding_api_two_processes():
    import torch.multiprocessing as mp

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    mp.spawn(_api_worker, args=(2, _free_port()), nprocs=2, join=True)


def test_sharding_mode_names_the_accelerator_setup():
    from accelerate.utils import DistributedType

    def acc(kind, n=1, version=2):
        plugin = types.SimpleNamespace(fsdp_version=version)
        return types.SimpleNamespace(
            distributed_type=kind, num_processes=n, state=types.SimpleNamespace(fsdp_plugin=plugin)
        )

    assert sharding.sharding_mode(acc(DistributedType.NO)) == "none"
    assert sharding.sharding_mode(acc(DistributedType.MULTI_CPU, 2)) == "ddp"
    assert sharding.sharding_mode(acc(DistributedType.MULTI_GPU, 1)) == "none"
    assert sharding.sharding_mode(acc(DistributedType.FSDP, 2)) == "fsdp2"
    assert sharding.sharding_mode(acc(DistributedType.FSDP, 2, version=1)) == "fsdp1"
    assert sharding.sharding_mode(acc(DistributedType.DEEPSPEED, 2)) == "deepspeed"


def test_plain_tensors_and_models_pass_through():
    from lifelong.testing import tiny_llama

    model = tiny_llama(seed=0)
    p = model.model.embed_tokens.weight
    assert not sharding.is_sharded(model) and not sharding.is_sharded(p)
    assert sharding.full_tensor(p) is p and sharding.local_tensor(p) is p
    new = torch.ones_like(p)
    sharding.assign_full_(p, new)
    assert torch.equal(p, new) and not p.requires_grad or p.grad is None
    sd = sharding.full_state_dict(model)
    fresh = tiny_llama(seed=1)
    sharding.load_full_state_dict(fresh, sd)
    assert torch.equal(fresh.model.embed_tokens.weight, new)
    with pytest.raises(ValueError, match="missing"):
        sharding.load_full_state_dict(fresh, {k: v for k, v in sd.items() if "embed" not in k})
