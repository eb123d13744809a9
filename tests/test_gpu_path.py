"""The GPU path, proven on the CPU: no host-device sync inside a training epoch, a
fixed number of operator calls per step whatever the batch size, analytic M-step gradients
equal to autograd's, and the compiled E-step and M-step equal to the eager ones on the same
random numbers. Tests marked ``cuda`` repeat the engine checks on a CUDA device when there is
one and are skipped otherwise."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import gen, small_patches, tiny_cfg
from torch.utils._python_dispatch import TorchDispatchMode

import evodenoise.train as train_module
from evodenoise.config import MUTATIONS, SELECTIONS
from evodenoise.evolution import draw_noise, estep
from evodenoise.model import Model
from evodenoise.mstep import decoder_grads
from evodenoise.states import init_states, unpack
from evodenoise.train import fit

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# Operators that make the host wait for the device: reading a value (.item(), float(t),
# bool(t)), data-dependent output shapes (nonzero, unique, boolean-mask indexing,
# masked_select), and multinomial (synchronises on CUDA).
SYNC_OPS = {
    "_local_scalar_dense",
    "item",
    "is_nonzero",
    "equal",
    "nonzero",
    "nonzero_static",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "masked_select",
    "multinomial",
    "allclose",
    "_assert_async",
    "repeat_interleave",
}


class NoSync(TorchDispatchMode):
    """Fails on any synchronising operator; counts every call (``calls``) and those that run
    work rather than make a view (``launches``)."""

    def __init__(self):
        super().__init__()
        self.calls = self.launches = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            raise AssertionError(f"host-device sync inside an epoch: {func}")
        if name in ("index", "index_put", "index_put_"):
            indices = args[1]
            if any(t is not None and t.dtype == torch.bool for t in indices):
                raise AssertionError(f"boolean-mask indexing (a sync) inside an epoch: {func}")
        self.calls += 1
        self.launches += not (func.is_view or func.namespace == "profiler")
        return func(*args, **(kwargs or {}))


def watch_epochs(monkeypatch):
    """Run every training epoch under NoSync; returns the list of modes, one per epoch."""
    modes = []
    orig = train_module._train_epoch

    def watched(*args, **kwargs):
        with NoSync() as mode:
            out = orig(*args, **kwargs)
        modes.append(mode)
        return out

    monkeypatch.setattr(train_module, "_train_epoch", watched)
    return modes


def patches(device="cpu"):
    return small_patches().to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_no_sync_inside_an_epoch(monkeypatch, device, selection, mutation, masked):
    modes = watch_epochs(monkeypatch)
    y = patches(device)
    obs = None
    if masked:
        obs = (torch.rand(y.shape, generator=gen(1)) < 0.7).float().to(device)
        obs[:, 0] = 1
        y = y * obs
    # estep_batch 24 of 8: several mini-batches per E-step and a padded last E-batch
    cfg = tiny_cfg(
        epochs=2,
        selection=selection,
        mutation=mutation,
        estep_batch=24,
        batch_size=8,
        sigma_mode="init",
        compile="off",
    )
    fitted = fit(y, obs, cfg, torch.Generator(device).manual_seed(0), sigma=20.0)
    assert len(modes) == 2 and all(m.calls > 0 for m in modes)
    assert all(math.isfinite(e["free_energy"]) for e in fitted.log)


def ops_per_step(monkeypatch, cfg, y, sizes=(128, 256)):
    """Operator calls per Adam step as a GPU runs them (distinct bits by one top-k, not the
    CPU's Floyd loop): the difference of two epochs over ``sizes`` patches."""
    import evodenoise.evolution as evolution_module

    counts = {}
    for size in sizes:
        modes = watch_epochs(monkeypatch)
        monkeypatch.setattr(evolution_module, "FLOYD_ON_CPU", False)
        c = cfg.replace(epochs=1)
        fit(y[:size], None, c, gen(0))
        steps = math.ceil(size / c.batch_size)
        counts[size] = (steps, modes[0].calls, modes[0].launches)
        monkeypatch.undo()
    (s0, c0, l0), (s1, c1, l1) = counts.values()
    return (c1 - c0) / (s1 - s0), (l1 - l0) / (s1 - s0)


@pytest.mark.parametrize("per_estep", [1, 4])
def test_operator_calls_per_step_do_not_grow_with_batch_size(monkeypatch, per_estep):
    """Exact alternation (one E-step per mini-batch) and E-steps over 4 mini-batches: the same
    calls per step for batches of 4, 8 and 16 patches."""
    y = patches()
    per_step = {}
    for bs in (4, 8, 16):
        cfg = tiny_cfg(
            batch_size=bs,
            estep_batch=(per_estep > 1) * per_estep * bs,
            n_generations=2,
            compile="off",
        )
        per_step[bs] = ops_per_step(monkeypatch, cfg, y)
    calls = [c for c, _ in per_step.values()]
    assert max(calls) - min(calls) < 1, per_step


def test_paper_step_dispatches_at_most_150_operators(monkeypatch):
    """The paper's House settings (4 generations of 10 x 9 children): every dispatched operator
    call per Adam step, views included, at most 150 (the GPU target; 691 at first, 249 with
    144 launching before the E-step was reshaped), and the launching calls among them."""
    from evodenoise.presets import get_preset

    cfg = get_preset("paper-house-25").replace(min_visits=0, compile="off")
    y = small_patches(h=24, w=24, p=8)  # 289 patches
    calls, launches = ops_per_step(monkeypatch, cfg, y, (96, 288))
    assert calls <= 150, (calls, launches)
    assert launches <= 115, (calls, launches)


# --- analytic M-step -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden,activation", [((8,), "relu"), ((6, 5), "leaky_relu"), ((7,), "tanh"), ((), "relu")]
)
@pytest.mark.parametrize("masked", [False, True, "weights"], ids=["full", "masked", "weights"])
def test_analytic_mstep_gradient_equals_autograd_in_float64(hidden, activation, masked):
    h, d, b, s_ = 10, 9, 6, 7
    cfg = tiny_cfg(n_latents=h, hidden=hidden, activation=activation, n_states=s_, grad_states=5)
    torch.manual_seed(0)
    model = Model(h, d, hidden, activation, sigma2=2.0, gen=gen(1)).double()
    with torch.no_grad():
        model.pi.copy_(torch.rand(h, generator=gen(2), dtype=torch.float64) * 0.3)
        for layer in model.decoder.layers:
            layer.bias.normal_(generator=gen(3))
    y = torch.randn(b, d, generator=gen(4), dtype=torch.float64) * 2
    obs = None
    if masked:
        obs = (torch.rand(b, d, generator=gen(5)) < 0.6).double()
        obs[:, 0] = 1
        if masked == "weights":  # per-value likelihood weights (0: missing)
            obs = obs * (0.2 + 2 * torch.rand(b, d, generator=gen(7), dtype=torch.float64))
    states = init_states(b, s_, h, gen(6), "cpu")
    w = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.float64)  # padding rows weigh 0
    got = decoder_grads(model, y, obs, states, w, model.constants(), cfg)
    bits = unpack(states[:, :5], h, torch.float64)
    lse = torch.logsumexp(model.log_joint(y, bits, obs), 1)
    loss = -(w * lse).sum() / w.sum()
    want = torch.autograd.grad(loss, list(model.decoder.parameters()))
    assert len(got) == len(want)
    for g, g_want in zip(got, want):
        torch.testing.assert_close(g, g_want, rtol=1e-10, atol=1e-12)


def test_compile_auto():
    from evodenoise.plan import use_compile
    from evodenoise.presets import get_preset

    fast, paper = get_preset("fast"), get_preset("paper-house-25")
    assert use_compile(fast, "cuda") and use_compile(paper, "cuda")
    assert not use_compile(fast, "cpu", 1938)  # E-steps over 256 patches: compiling never pays
    assert not use_compile(paper.replace(epochs=20), "cpu", 1938)  # too short to pay
    assert not use_compile(paper.replace(compile="off"), "cuda")
    assert use_compile(fast.replace(compile="on"), "cpu", 10)
    import shutil

    has_cxx = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    assert use_compile(paper, "cpu", 1938) == has_cxx  # 969,000 Adam steps of exact alternation


# --- compiled against eager --------------------------------------------------------------------


def estep_inputs(selection, mutation, masked, device="cpu"):
    h = 70 if mutation != "bitflip" else 64
    cfg = tiny_cfg(
        n_latents=h,
        hidden=(16,),
        n_states=12,
        n_parents=4,
        n_children=3,
        n_generations=2,
        selection=selection,
        mutation=mutation,
    )
    torch.manual_seed(0)
    model = Model(h, 16, cfg.hidden, cfg.activation, sigma2=3.0, gen=gen(1)).to(device)
    with torch.no_grad():
        model.pi.copy_(torch.rand(h, generator=gen(2)) * 0.2)
    y = (torch.randn(32, 16, generator=gen(3)) * 2).to(device)
    obs = None
    if masked:
        obs = (torch.rand(32, 16, generator=gen(4)) < 0.7).float().to(device)
        obs[:, 0] = 1
    states = init_states(32, cfg.n_states, h, gen(5), "cpu").to(device)
    noise = draw_noise(cfg, 32, "cpu", gen(6)).to(device)
    return cfg, model, y, obs, states, noise


CASES = [
    ("best", "bitflip", False),
    ("fitness", "bitflip", True),
    ("uniform", "sparseflip", False),
    ("fitness", "crossover", True),
]


@pytest.mark.slow
@pytest.mark.parametrize("selection,mutation,masked", CASES)
def test_compiled_estep_and_mstep_equal_eager(selection, mutation, masked):
    """torch.compile(fullgraph=True, dynamic=False) on the CPU, the same random numbers: the
    same state sets, log-joints within 1e-5, the same M-step gradients."""
    cfg, model, y, obs, states, noise = estep_inputs(selection, mutation, masked)
    consts = model.constants()
    with torch.no_grad():
        e = estep(model, y, obs, states, noise, consts, cfg)
        want = e.states, e.log_joint, e.sqerr

        def as_tuple(*args):  # a compiled function's outputs: tensors
            e = estep(*args)
            return e.states, e.log_joint, e.sqerr

        est = torch.compile(as_tuple, fullgraph=True, dynamic=False)
        got = est(model, y, obs, states, noise, consts, cfg)
        assert torch.equal(got[0], want[0])
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
        w = torch.ones(32)
        g_want = decoder_grads(model, y, obs, want[0], w, consts, cfg)
        mst = torch.compile(decoder_grads, fullgraph=True, dynamic=False)
        g_got = mst(model, y, obs, want[0], w, consts, cfg)
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_fit_equals_eager():
    """Config.compile = "on" trains the same model as "off" (same seed, 2 epochs)."""
    y = patches()
    logs = {}
    for mode in ("off", "on"):
        fitted = fit(y, None, tiny_cfg(epochs=2, compile=mode), gen(0))
        logs[mode] = fitted
    a, b = logs["off"], logs["on"]
    assert torch.equal(a.states, b.states)
    for ea, eb in zip(a.log, b.log):
        assert ea["free_energy"] == pytest.approx(eb["free_energy"], rel=1e-5)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


# --- CUDA (skipped without a CUDA device) --------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("selection,mutation,masked", CASES)
def test_cuda_estep_matches_cpu(selection, mutation, masked):
    """The same E-step on CUDA and on the CPU from the same random numbers: same state sets
    (TF32 off), log-joints close."""
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg, model, y, obs, states, noise = estep_inputs(selection, mutation, masked)
    with torch.no_grad():
        want = estep(model, y, obs, states, noise, model.constants(), cfg)
        dev = [t if t is None else t.cuda() for t in (y, obs, states, noise)]
        m = model.cuda()
        got = estep(m, dev[0], dev[1], dev[2], dev[3], m.constants(), cfg)
    torch.testing.assert_close(got.log_joint.cpu(), want.log_joint, rtol=1e-4, atol=1e-3)
    assert (got.states.cpu() == want.states).float().mean() > 0.99


@pytest.mark.cuda
@pytest.mark.parametrize("compile_mode", ["off", "on"])
def test_cuda_epoch_never_synchronises(compile_mode):
    """torch.cuda's own sync detector around the epochs (compiled with CUDA graphs, or eager)."""
    y = patches("cuda")
    orig = train_module._train_epoch
    epochs = []

    def watched(*args, **kwargs):
        if len(epochs) == 2:  # epochs 1-2 compile and capture (capturing syncs); 3 replays
            torch.cuda.set_sync_debug_mode("error")
        try:
            return orig(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            epochs.append(1)

    train_module._train_epoch = watched
    try:
        fit(
            y,
            None,
            tiny_cfg(epochs=3, compile=compile_mode),
            torch.Generator("cuda").manual_seed(0),
        )
    finally:
        train_module._train_epoch = orig
    assert len(epochs) == 3
