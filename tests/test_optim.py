"""The batched fused-Adam step (training.optim.fused_adam_step) against torch.optim.Adam(fused=True).

torch's fused Adam has a CPU kernel (torch >= 2.4), so the equivalence is checked here on the CPU:
same kernels and arguments, so the parameters and the optimiser state must agree bit for bit,
through learning-rate changes, parameters without a gradient, and a parameter replaced the way
gsplat's densification replaces one (its state carried over).
"""
import pytest
import torch

from training.optim import AdamGraph, _direct_fused, fused_adam_step, step_all

pytestmark = pytest.mark.skipif(
    not hasattr(torch, "_fused_adam_"), reason="this torch has no fused Adam kernel")


def _make(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = {"means": (50, 3), "scales": (50, 3), "embedding": (50, 12), "head": (12, 12), "quats": (50, 4)}
    params = {k: torch.nn.Parameter(torch.randn(*s, generator=g)) for k, s in shapes.items()}
    # scales and embedding share their hyperparameters (one kernel call); quats share head's lr, not its eps
    lrs = {"means": 1.6e-4, "scales": 5e-3, "embedding": 5e-3, "head": 1e-3, "quats": 1e-3}
    opts = {k: torch.optim.Adam([{"params": [p], "lr": lrs[k], "name": k}], eps=1e-8 if k == "head" else 1e-15,
                                fused=True) for k, p in params.items()}
    return params, opts


def _grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    for k, p in params.items():
        if k == "head" and step % 3 == 0:  # a parameter without a gradient this step
            p.grad = None
        else:
            p.grad = torch.randn(p.shape, generator=g) * (10.0 ** (step % 4 - 2))


def _replace(params, opts, name):
    """What gsplat's densification does: a new Parameter (rows appended), state carried over."""
    old = params[name]
    new = torch.nn.Parameter(torch.cat([old.detach(), old.detach()[:5]]))
    opt = opts[name]
    state = opt.state.pop(old)
    for key in ("exp_avg", "exp_avg_sq"):
        state[key] = torch.cat([state[key], torch.zeros_like(state[key][:5])])
    opt.param_groups[0]["params"] = [new]
    opt.state[new] = state
    params[name] = new


def test_fused_adam_step_matches_torch_bit_for_bit():
    ref_p, ref_o = _make(0)
    our_p, our_o = _make(0)
    assert all(_direct_fused(o) for o in our_o.values())
    for step in range(1, 13):
        if step == 6:
            _replace(ref_p, ref_o, "means")
            _replace(our_p, our_o, "means")
        for opts in (ref_o, our_o):
            opts["means"].param_groups[0]["lr"] = 1.6e-4 * 0.9 ** step  # the position schedule
        _grads(ref_p, step)
        _grads(our_p, step)
        for o in ref_o.values():
            o.step()
            o.zero_grad(set_to_none=True)
        step_all(our_o)
        for k in ref_p:
            assert torch.equal(ref_p[k], our_p[k]), (k, step)
            assert our_p[k].grad is None
    for k in ref_p:
        rs, os_ = ref_o[k].state[ref_p[k]], our_o[k].state[our_p[k]]
        assert set(rs) == set(os_)
        for key in rs:
            assert torch.equal(rs[key], os_[key]), (k, key)
            assert rs[key].dtype == os_[key].dtype
    # the state dicts interchange: a checkpoint of one loads into the other's optimiser
    ref_o["embedding"].load_state_dict(our_o["embedding"].state_dict())


def test_step_all_keeps_other_optimisers_and_skips_none():
    p = torch.nn.Parameter(torch.ones(4))
    q = torch.nn.Parameter(torch.ones(4))
    plain = torch.optim.Adam([p], lr=0.1)  # for-each Adam: stepped by torch as before
    fused = torch.optim.Adam([q], lr=0.1, fused=True)
    assert not _direct_fused(plain) and _direct_fused(fused)
    p.grad, q.grad = torch.ones(4), torch.ones(4)
    step_all([plain, None, fused])
    # Adam's first step moves every coordinate by lr against the gradient's sign
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.9))
    torch.testing.assert_close(q.detach(), torch.full((4,), 0.9))
    assert p.grad is None and q.grad is None
    fused_adam_step([])  # nothing to do


def test_groups_with_the_same_hyperparameters_share_one_kernel_call(monkeypatch):
    """One ``torch._fused_adam_`` call per set of hyperparameters: scales and embedding (lr 5e-3, eps 1e-15) go
    together; head and quats share a learning rate but not eps, so they do not."""
    params, opts = _make(0)
    _grads(params, 1)
    calls = []
    real = torch._fused_adam_

    def counting(ps, *args, **kwargs):
        calls.append(sorted(next(k for k, p in params.items() if p is q) for q in ps))
        return real(ps, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", counting)
    step_all(opts)
    assert sorted(calls) == [["embedding", "scales"], ["head"], ["means"], ["quats"]]


def test_a_graph_given_for_cpu_parameters_steps_them_eagerly():
    """step_all(..., graph=AdamGraph()) on CPU parameters is the eager step (CUDA graphs are CUDA's)."""
    ref_p, ref_o = _make(0)
    our_p, our_o = _make(0)
    graph = AdamGraph()
    for step in range(1, 4):
        _grads(ref_p, step)
        _grads(our_p, step)
        step_all(ref_o)
        step_all(our_o, graph=graph)
    assert all(torch.equal(ref_p[k], our_p[k]) for k in ref_p)
    assert graph.replays == graph.captures == graph.eager == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_adam_graph_replays_the_fused_step_bit_for_bit():
    """--optimizer_graph: the captured step, replayed with new gradients wherever the allocator puts them (the graph
    copies them into its own buffers), moves the parameters and the moments as the eager fused step does: bit for
    bit where the learning rate is a constant of the graph, and to the float32 rounding of the learning rate for the
    means, whose rate changes every step (a device scalar the graph reads; the eager kernel takes it in double).
    Also through a step with one parameter without a gradient (eager, then a graph of its own). The counts are
    exact, as the key does not hold the gradients' addresses: step 1 makes the state, step 2 is the first
    sighting, step 3 captures; steps 7 and 14 (no gradient for the head) are another key, eager at first sight
    and captured at the second."""
    def make(seed):
        params, opts = _make(seed)
        cuda = {k: torch.nn.Parameter(p.detach().cuda()) for k, p in params.items()}
        for k, o in opts.items():
            o.param_groups[0]["params"] = [cuda[k]]
        return cuda, opts

    ref_p, ref_o = make(0)
    our_p, our_o = make(0)
    graph = AdamGraph()
    for step in range(1, 21):
        for opts in (ref_o, our_o):
            opts["means"].param_groups[0]["lr"] = 1.6e-4 * 0.9 ** step
        for params in (ref_p, our_p):
            g = torch.Generator(device="cuda").manual_seed(1000 + step)
            for k, p in params.items():
                skip = k == "head" and step % 7 == 0
                p.grad = None if skip else torch.randn(p.shape, generator=g, device="cuda") * 10.0 ** (step % 4 - 2)
        step_all(ref_o)
        step_all(our_o, graph=graph)
        for k in ref_p:
            if k == "means":
                torch.testing.assert_close(our_p[k], ref_p[k], rtol=1e-6, atol=1e-9)
            else:
                assert torch.equal(ref_p[k], our_p[k]), (k, step)
            assert our_p[k].grad is None
    for k in ref_p:
        rs, os_ = ref_o[k].state[ref_p[k]], our_o[k].state[our_p[k]]
        for key in rs:
            assert torch.equal(rs[key], os_[key]), (k, key)  # the moments do not read the learning rate
    assert (graph.captures, graph.replays, graph.eager) == (2, 17, 3)
