"""Training: cyclic learning rate, closed-form π and σ² against brute force, the EM loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from evodenoise.estimate import estimate_patches
from evodenoise.evolution import evolve
from evodenoise.model import PI_MIN, Model
from evodenoise.mstep import PosteriorStats, add_estep_sums, learning_rate
from evodenoise.patches import extract_patches
from evodenoise.presets import get_preset
from evodenoise.states import init_states, pack, unpack
from evodenoise.train import fit


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- learning rate ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "epochs,half",
    [
        (1, 10.0),
        (7, 3.0),
        (10, 5.0),
        (10, 1.5),
        (20, 10.0),
        (25, 4.0),
        (40, 10.0),
        (500, 10.0),
        (30, 20.0),
    ],
)
def test_learning_rate_cycle(epochs, half):
    cfg = get_preset("fast").replace(epochs=epochs, lr_half_cycle=half, lr_min=1e-4, lr_max=2e-2)
    ts = np.linspace(0, epochs, 20001)
    lrs = np.array([learning_rate(t, cfg) for t in ts])
    assert learning_rate(0, cfg) == pytest.approx(cfg.lr_min, rel=1e-9)
    assert learning_rate(epochs, cfg) == pytest.approx(cfg.lr_min, rel=1e-6)  # ends at a minimum
    assert lrs.min() >= cfg.lr_min * (1 - 1e-9) and lrs.max() <= cfg.lr_max * (1 + 1e-9)
    assert lrs.max() == pytest.approx(cfg.lr_max, rel=1e-3)  # reaches its peak
    # number of peaks: the whole cycles fitted into the run, at least one
    cycles = max(1, round(epochs / (2 * half)))
    length = epochs / cycles
    for k in range(cycles):
        assert learning_rate((k + 0.5) * length, cfg) == pytest.approx(cfg.lr_max, rel=1e-9)
        assert learning_rate(k * length, cfg) == pytest.approx(cfg.lr_min, rel=1e-6)
    # a cycle lasts about 2·half epochs (rounded so that the run ends at a minimum)
    if epochs >= 2 * half:
        assert abs(length - 2 * half) <= half
    # triangular: rises linearly over the first half cycle
    t1, t2 = 0.1 * length, 0.3 * length
    assert learning_rate(t2, cfg) - learning_rate(t1, cfg) == pytest.approx(
        (cfg.lr_max - cfg.lr_min) * 2 * (t2 - t1) / length, rel=1e-6
    )


# --- closed-form π and σ² ------------------------------------------------------------------

H3, D4 = 3, 4


def tiny(seed=0):
    torch.manual_seed(seed)
    m = Model(H3, D4, (5,), "relu", sigma2=1.7)
    with torch.no_grad():
        m.pi.copy_(torch.tensor([0.2, 0.45, 0.6]))
        for layer in m.decoder.layers:
            layer.bias.normal_(generator=gen(seed + 7))
    return m


def all_states():
    return list(itertools.product((0, 1), repeat=H3))


def brute_force(m, y, obs):
    """⟨s⟩ per point and Σ_n ⟨sqerr⟩, Σ_n D_n by enumerating all 2^H states in Python."""
    w1, b1 = (
        m.decoder.layers[0].weight.double().tolist(),
        m.decoder.layers[0].bias.double().tolist(),
    )
    w2, b2 = (
        m.decoder.layers[1].weight.double().tolist(),
        m.decoder.layers[1].bias.double().tolist(),
    )
    pi = [min(max(p, PI_MIN), 1 - PI_MIN) for p in m.pi.double().tolist()]
    sigma2 = float(m.sigma2)
    es_all, err_sum, d_sum, f_sum = [], 0.0, 0.0, 0.0
    for n in range(len(y)):
        yn = y[n].double().tolist()
        on = [1.0] * D4 if obs is None else obs[n].double().tolist()
        lps, sqs = [], []
        for s in all_states():
            hid = [max(sum(w1[o][i] * s[i] for i in range(H3)) + b1[o], 0.0) for o in range(5)]
            mu = [sum(w2[d][o] * hid[o] for o in range(5)) + b2[d] for d in range(D4)]
            sq = sum(on[d] ** 2 * (yn[d] - mu[d]) ** 2 for d in range(D4))  # on: weights r
            lp = sum(math.log(pi[h]) if s[h] else math.log(1 - pi[h]) for h in range(H3))
            d_n = sum(1 for r in on if r > 0)
            lps.append(lp - 0.5 * d_n * math.log(2 * math.pi * sigma2) - sq / (2 * sigma2))
            sqs.append(sq)
        top = max(lps)
        z = sum(math.exp(v - top) for v in lps)
        q = [math.exp(v - top) / z for v in lps]
        es_all.append([sum(q[k] * all_states()[k][h] for k in range(8)) for h in range(H3)])
        err_sum += sum(q[k] * sqs[k] for k in range(8))
        d_sum += sum(1 for r in on if r > 0)
        f_sum += top + math.log(z)
    return es_all, err_sum, d_sum, f_sum


def exact_estep(m, y, obs):
    """K_n = all 8 states, so the truncated posterior is the exact posterior."""
    cfg = get_preset("fast").replace(
        n_latents=H3, hidden=(5,), n_states=8, n_parents=2, n_children=2, n_generations=0
    )
    k = pack(torch.tensor(all_states())).expand(len(y), -1, -1).contiguous()
    return evolve(m, y, obs, k, cfg, gen(0))


def epoch_stats(m, out, obs, pieces) -> PosteriorStats:
    """The closed-form M-step's statistics as training gathers them: log-joints less their
    per-point constant, summed E-batch by E-batch (``pieces``), then turned into the epoch's."""
    consts = m.constants()
    d_n = torch.full((out.states.shape[0],), float(D4)) if obs is None else (obs > 0).sum(1)
    lj = out.log_joint + consts.half_log * d_n[:, None]  # the E-step's form
    acc = torch.zeros(1, H3 + 2)
    for sl in pieces:
        w = torch.ones(lj[sl].shape[0], 1)
        add_estep_sums(acc, lj[sl], unpack(out.states[sl], H3), w)
    return PosteriorStats(acc, consts, out.states.shape[0], d_n.sum())


@pytest.mark.parametrize("masked", [False, True, "weights"], ids=["full", "masked", "weights"])
def test_closed_form_pi_and_sigma2_match_brute_force(masked):
    m = tiny()
    n = 6
    y = torch.randn(n, D4, generator=gen(1)) * 1.5
    obs = None
    if masked:
        obs = torch.tensor(
            [[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]],
            dtype=torch.float32,
        )
        if masked == "weights":  # noise variance σ²/r² per value: σ² is the weighted mean
            obs = obs * (0.3 + 2 * torch.rand(n, D4, generator=gen(2)))
    out = exact_estep(m, y, obs)
    # added in two pieces, as the training loop does E-batch by E-batch
    stats = epoch_stats(m, out, obs, (slice(0, 4), slice(4, n)))
    es, err, dsum, fsum = brute_force(m, y, obs)
    want_pi = [sum(e[h] for e in es) / n for h in range(H3)]
    np.testing.assert_allclose(stats.pi().numpy(), want_pi, rtol=1e-5, atol=1e-6)
    assert float(stats.sigma2()) == pytest.approx(err / dsum, rel=1e-5)
    assert float(stats.d) == dsum
    assert float(stats.f) == pytest.approx(fsum, rel=1e-5)
    assert stats.n == n
    # the floor applies
    assert float(stats.sigma2(floor2=1e6)) == 1e6


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_closed_form_sigma2_maximises_the_bound_with_q_fixed(masked):
    m = tiny(3)
    n = 8
    y = torch.randn(n, D4, generator=gen(4)) * 2
    obs = (torch.rand(n, D4, generator=gen(5)) < 0.7).float() if masked else None
    if obs is not None:
        obs[:, 0] = 1
    out = exact_estep(m, y, obs)
    stats = epoch_stats(m, out, obs, (slice(None),))
    q = out.q.double()
    sq = out.sqerr.double()
    d_n = torch.full((n,), float(D4), dtype=torch.float64) if obs is None else obs.sum(1).double()

    def bound(s2):  # Σ_n Σ_s q log p(y_n | s; σ²) (the σ²-dependent part of Σ q log p)
        ll = -0.5 * d_n[:, None] * math.log(2 * math.pi * s2) - sq / (2 * s2)
        return float((q * ll).sum())

    best = float(stats.sigma2())
    grid = best * np.concatenate([np.linspace(0.3, 0.99, 30), np.linspace(1.01, 3, 30)])
    assert all(bound(best) > bound(s2) for s2 in grid)
    # π: the mean of ⟨s⟩ maximises Σ q log p(s) among nearby values too
    s_bits = unpack(out.states, H3).double()
    pi = stats.pi().double()

    def prior_bound(p):
        lp = (s_bits * torch.log(p) + (1 - s_bits) * torch.log1p(-p)).sum(-1)
        return float((q * lp).sum())

    for h in range(H3):
        for delta in (-0.05, -0.01, 0.01, 0.05):
            p2 = pi.clone()
            p2[h] += delta
            assert prior_bound(pi) > prior_bound(p2)


# --- the EM loop ---------------------------------------------------------------------------


def small_patches(h=20, w=22, sigma=20.0, seed=0, p=4):
    yy, xx = np.mgrid[0:h, 0:w]
    clean = 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + 40 * (xx + yy > 20)
    rng = np.random.default_rng(seed)
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    x = torch.tensor(noisy, dtype=torch.float32)[None]
    x = x - x.mean()
    return extract_patches(x, p)


TINY = dict(
    patch_size=4,
    n_latents=12,
    hidden=(16,),
    n_states=8,
    n_parents=3,
    n_children=3,
    n_generations=1,
    batch_size=8,
    estep_batch=128,
    lr_max=0.1,
    lr_half_cycle=3.0,
    min_visits=0,
)


def tiny_cfg(**kw):
    return get_preset("fast").replace(**{**TINY, **kw})


def test_free_energy_increases_over_training():
    y = small_patches()
    torch.manual_seed(0)
    entries = []
    fitted = fit(y, None, tiny_cfg(epochs=6), gen(0), callback=entries.append)
    fe = [e["free_energy"] for e in fitted.log]
    assert len(fe) == 6 and all(np.isfinite(fe))
    assert fe[-1] > fe[0] + 2  # per patch; allow noise in between, compare first vs last
    assert entries == fitted.log
    assert [e["epoch"] for e in entries] == list(range(1, 7))
    assert all(
        {"epoch", "epochs", "free_energy", "sigma", "mean_active", "lr", "seconds"} <= e.keys()
        for e in entries
    )
    assert fitted.states.shape == (y.shape[0], 8, 1)
    # learned σ ends near the noise level (20) rather than the data's spread
    assert 12 < entries[-1]["sigma"] < 35
    assert entries[-1]["lr"] == pytest.approx(1e-4, rel=1e-6)


def test_free_energy_increases_with_missing_values():
    y = small_patches(seed=1)
    obs = (torch.rand(y.shape, generator=gen(2)) < 0.6).float()
    obs[:, 0] = 1
    torch.manual_seed(0)
    fitted = fit(y.masked_fill(obs == 0, 0.0), obs, tiny_cfg(epochs=5), gen(1))
    fe = [e["free_energy"] for e in fitted.log]
    assert fe[-1] > fe[0]


def test_sigma_fixed_keeps_sigma_exactly():
    y = small_patches()
    torch.manual_seed(0)
    fitted = fit(y, None, tiny_cfg(epochs=3, sigma_mode="fixed"), gen(0), sigma=20.0)
    assert float(fitted.model.sigma2) == 400.0
    assert all(e["sigma"] == 20.0 for e in fitted.log)


def test_sigma_init_moves_sigma():
    y = small_patches()
    torch.manual_seed(0)
    fitted = fit(y, None, tiny_cfg(epochs=3, sigma_mode="init"), gen(0), sigma=60.0)
    sig = [e["sigma"] for e in fitted.log]
    assert all(s != 60.0 for s in sig)
    assert sig[-1] < 50  # pulled towards the real noise level (20)


def test_sigma_floor():
    y = small_patches(sigma=0.0)  # noiseless smooth-ish data
    torch.manual_seed(0)
    cfg = tiny_cfg(epochs=2, sigma_floor=30.0)
    fitted = fit(y, None, cfg, gen(0), sigma=1.0)  # a fixed σ below the floor is honoured
    assert float(fitted.model.sigma2) == pytest.approx(1.0)
    fitted = fit(y, None, cfg.replace(sigma_mode="init"), gen(0), sigma=1.0)  # learned: floored
    assert all(e["sigma"] >= 30.0 - 1e-4 for e in fitted.log)
    fitted = fit(y, None, cfg.replace(sigma_mode="init"), gen(0))
    assert all(e["sigma"] >= 30.0 - 1e-4 for e in fitted.log)


def test_pi_is_updated_in_closed_form():
    y = small_patches()
    torch.manual_seed(0)
    fitted = fit(y, None, tiny_cfg(epochs=2), gen(0))
    pi = fitted.model.pi
    assert ((pi >= PI_MIN) & (pi <= 1 - PI_MIN)).all()
    assert not torch.allclose(pi, torch.full_like(pi, 1 / 12))
    assert fitted.log[-1]["mean_active"] == pytest.approx(float(pi.sum()), rel=1e-6)


def test_estimate_covers_every_patch():
    """The final sweep and the estimate cover every patch given: every K_n is sorted under the
    final parameters and the estimate is each patch's posterior mean over it."""
    y = small_patches()
    cfg = tiny_cfg(epochs=2, chunk_size=50)
    torch.manual_seed(0)
    fitted = fit(y, None, cfg, gen(0))
    est = estimate_patches(fitted.model, fitted.states, y, None, cfg, gen(1))
    assert est.shape == y.shape and torch.isfinite(est).all()
    m = fitted.model
    with torch.no_grad():
        s = unpack(fitted.states, cfg.n_latents)
        lj = m.log_joint(y, s)
        assert (lj[:, 1:] <= lj[:, :-1] + 1e-3).all()  # all N rows evolved and sorted
        q = torch.softmax(lj, 1)
        want = torch.einsum("ns,nsd->nd", q, m.decoder(s))
    torch.testing.assert_close(est, want, rtol=1e-4, atol=1e-3)
    # the estimate is a denoised version: closer to the patches' mean structure than noise
    assert est.std() < y.std()


@pytest.mark.parametrize("sweeps", [1, 2])
def test_estimate_in_place_equals_a_separate_output(sweeps):
    """estimate_patches(..., out=y) overwrites the patches chunk by chunk and gives the same result."""
    y = small_patches()
    cfg = tiny_cfg(epochs=1, chunk_size=37, final_sweeps=sweeps)
    fitted = fit(y, None, cfg, gen(0))
    states = fitted.states.clone()
    want = estimate_patches(fitted.model, fitted.states, y, None, cfg, gen(1))
    fitted.states.copy_(states)
    y2 = y.clone()
    got = estimate_patches(fitted.model, fitted.states, y2, None, cfg, gen(1), out=y2)
    assert got is y2 and torch.equal(got, want)


def test_estimate_final_sweeps():
    y = small_patches()
    cfg = tiny_cfg(epochs=1, final_sweeps=3)
    torch.manual_seed(0)
    fitted = fit(y, None, cfg, gen(0))
    with torch.no_grad():
        f0 = torch.logsumexp(fitted.model.log_joint(y, unpack(fitted.states, 12)), 1)
    estimate_patches(fitted.model, fitted.states, y, None, cfg, gen(1))
    with torch.no_grad():
        f1 = torch.logsumexp(fitted.model.log_joint(y, unpack(fitted.states, 12)), 1)
    assert (f1 >= f0 - 1e-3).all() and (f1 > f0 + 1e-3).any()


def test_grad_states_and_estep_batch_run():
    y = small_patches()
    torch.manual_seed(0)
    fitted = fit(y, None, tiny_cfg(epochs=3, grad_states=2, estep_batch=0, batch_size=16), gen(0))
    fe = [e["free_energy"] for e in fitted.log]
    assert len(fe) == 3 and all(np.isfinite(fe))


def test_zero_epochs():
    y = small_patches()
    cfg = tiny_cfg(epochs=0)
    torch.manual_seed(0)
    fitted = fit(y, None, cfg, gen(0))
    assert fitted.log == []
    assert torch.isfinite(estimate_patches(fitted.model, fitted.states, y, None, cfg, gen(0))).all()


def _record_schedule(monkeypatch):
    import evodenoise.train as train_module

    ts: list[float] = []
    orig = train_module.learning_rate

    def recording(t, cfg):  # t: one position, or all of a run's steps at once (a tensor)
        ts.extend(torch.as_tensor(t, dtype=torch.float64).flatten().tolist())
        return orig(t, cfg)

    monkeypatch.setattr(train_module, "learning_rate", recording)
    return ts


def test_schedule_position_stays_within_the_run(monkeypatch):
    """estep_batch a multiple of batch_size: every Adam step's schedule position t lies in
    [0, epochs], so the last steps run near lr_min."""
    ts = _record_schedule(monkeypatch)
    cfg = tiny_cfg(epochs=3, batch_size=8, estep_batch=24)
    torch.manual_seed(0)
    fit(small_patches(), None, cfg, gen(0))
    assert min(ts) == 0 and max(ts) <= cfg.epochs
    last_step = max(t for t in ts if t < cfg.epochs)
    assert learning_rate(last_step, cfg) < 0.05 * cfg.lr_max


def test_schedule_position_stays_within_the_run_any_estep_batch(monkeypatch):
    """Regression: with estep_batch not a multiple of batch_size, an epoch used to run more
    Adam steps than the schedule counted, so t ran past the end (3.17 of 3 epochs) and the run
    ended on a rising learning rate."""
    ts = _record_schedule(monkeypatch)
    cfg = tiny_cfg(epochs=3, batch_size=8, estep_batch=20)  # 20 = 8 + 8 + 4
    torch.manual_seed(0)
    fit(small_patches(), None, cfg, gen(0))
    assert max(ts) <= cfg.epochs
    last_step = max(t for t in ts if t < cfg.epochs)
    assert learning_rate(last_step, cfg) < 0.05 * cfg.lr_max


@pytest.mark.parametrize("estep_batch", [0, 24])
def test_epochs_write_the_new_states_back(monkeypatch, estep_batch):
    """Every trained patch's K_n after an epoch is that epoch's E-step result, not the
    initial draw (each row writes back its own patch; padding rows only the spare row)."""
    import evodenoise.train as train_module

    first = []

    def recorded(*args, **kwargs):
        first.append(init_states(*args, **kwargs))
        return first[-1].clone()

    monkeypatch.setattr(train_module, "init_states", recorded)
    y = small_patches()
    fitted = fit(y, None, tiny_cfg(epochs=1, estep_batch=estep_batch), gen(0))
    changed = (fitted.states != first[0][: len(y)]).any(-1).any(-1)
    assert changed.float().mean() > 0.9
