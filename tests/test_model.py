"""The generative model: log p(y, s) against a direct computation with Python loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from evodenoise.model import PI_MIN, Decoder, Model

H, D, HIDDEN = 3, 4, (5,)


def tiny_model(activation="relu", dtype=torch.float64) -> Model:
    torch.manual_seed(0)
    m = Model(H, D, HIDDEN, activation, sigma2=2.3).to(dtype)
    with torch.no_grad():
        m.pi.copy_(torch.tensor([0.1, 0.5, 0.7]))
        # non-zero biases so that they are exercised too
        for layer in m.decoder.layers:
            layer.bias.copy_(torch.linspace(-0.5, 0.5, layer.bias.numel()))
    return m


def all_states() -> list[tuple[int, ...]]:
    return list(itertools.product((0, 1), repeat=H))


def direct_log_joint(m: Model, y: list[float], s: tuple[int, ...], obs: list[int] | None):
    """log p(y, s) with Python floats and loops, straight from the formula."""
    act = {
        "relu": lambda v: max(v, 0.0),
        "tanh": math.tanh,
        "leaky_relu": lambda v: v if v > 0 else 0.01 * v,
    }[_act_name(m)]
    x = [float(v) for v in s]
    layers = list(m.decoder.layers)
    for k, layer in enumerate(layers):
        wt, b = layer.weight.tolist(), layer.bias.tolist()
        x = [sum(wt[o][i] * x[i] for i in range(len(x))) + b[o] for o in range(len(b))]
        if k < len(layers) - 1:
            x = [act(v) for v in x]
    mu = x
    pi = [min(max(p, PI_MIN), 1 - PI_MIN) for p in m.pi.tolist()]
    sigma2 = float(m.sigma2)
    lp = sum(math.log(pi[h]) if s[h] else math.log(1 - pi[h]) for h in range(H))
    obs = obs if obs is not None else [1] * len(y)
    d_n = sum(1 for r in obs if r > 0)  # obs: each value's weight r (a mask: 0/1)
    sq = sum(obs[d] ** 2 * (y[d] - mu[d]) ** 2 for d in range(len(y)))
    return lp - 0.5 * d_n * math.log(2 * math.pi * sigma2) - sq / (2 * sigma2), sq


def _act_name(m: Model) -> str:
    return {torch.nn.ReLU: "relu", torch.nn.LeakyReLU: "leaky_relu", torch.nn.Tanh: "tanh"}[
        type(m.decoder.act)
    ]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("with_mask", [False, True, "weights"])
def test_log_joint_equals_direct_computation(activation, with_mask):
    m = tiny_model(activation)
    g = torch.Generator().manual_seed(1)
    b = 3
    y = torch.randn(b, D, generator=g, dtype=torch.float64) * 2
    states = torch.tensor(all_states(), dtype=torch.float64)  # (8, H)
    s = states.expand(b, -1, -1)  # every state for every point
    obs = None
    if with_mask:
        # point 0 fully observed, point 1 one missing, point 2 only one observed value
        obs = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.float64)
        y = y.clone()
        y[obs == 0] = 1e3  # missing values must not matter at all
        if with_mask == "weights":  # noise variance σ²/r² per value (signal-dependent noise)
            obs = obs * torch.tensor([[0.5, 2.0, 1.0, 0.3], [1.5, 1.0, 0.7, 1.1], [1, 1, 3, 1]])
    lj = m.log_joint(y, s, obs)
    a, prior = m.decoder.first(s), m.log_prior(s)
    lj2, sqerr = m.score(y, obs, a, prior)
    assert lj.shape == sqerr.shape == (b, 2**H)
    for n in range(b):
        for k, st in enumerate(all_states()):
            want, want_sq = direct_log_joint(
                m, y[n].tolist(), st, None if obs is None else obs[n].tolist()
            )
            assert lj[n, k].item() == pytest.approx(want, rel=1e-12, abs=1e-12)
            assert lj2[n, k].item() == pytest.approx(want, rel=1e-12, abs=1e-12)
            assert sqerr[n, k].item() == pytest.approx(want_sq, rel=1e-12, abs=1e-12)


def test_log_joint_float32_matches_float64():
    m64 = tiny_model()
    m32 = tiny_model(dtype=torch.float32)
    g = torch.Generator().manual_seed(2)
    y = torch.randn(4, D, generator=g, dtype=torch.float64)
    s = torch.tensor(all_states(), dtype=torch.float64).expand(4, -1, -1)
    torch.testing.assert_close(
        m32.log_joint(y.float(), s.float()).double(), m64.log_joint(y, s), rtol=1e-5, atol=1e-5
    )


def test_missing_values_are_left_out():
    """A point with mask equal to all-ones gives the unmasked value; changing a missing value
    changes nothing; dropping a value removes its squared error and its share of D_n."""
    m = tiny_model()
    g = torch.Generator().manual_seed(3)
    y = torch.randn(1, D, generator=g, dtype=torch.float64)
    s = torch.tensor(all_states(), dtype=torch.float64)[None]
    ones = torch.ones(1, D, dtype=torch.float64)
    torch.testing.assert_close(m.log_joint(y, s, ones), m.log_joint(y, s))
    obs = torch.tensor([[1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    y2 = y.clone()
    y2[0, 2] += 17.0
    torch.testing.assert_close(m.log_joint(y, s, obs), m.log_joint(y2, s, obs))
    # dropping value 2 of a 4-value point equals scoring the 3 observed values with a model
    # whose output keeps only those 3
    mu = m.decoder(s)  # (1, 8, D)
    keep = [0, 1, 3]
    sq = ((mu[..., keep] - y[:, None, keep]) ** 2).sum(-1)
    want = m.log_prior(s) - 1.5 * math.log(2 * math.pi * float(m.sigma2)) - sq / (2 * m.sigma2)
    torch.testing.assert_close(m.log_joint(y, s, obs), want)


def test_log_prior_and_clamped_pi():
    m = tiny_model()
    with torch.no_grad():
        m.pi.copy_(torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64))  # clamped inside
    s = torch.tensor(all_states(), dtype=torch.float64)
    lp = m.log_prior(s)
    assert torch.isfinite(lp).all()
    pi = [PI_MIN, 1 - PI_MIN, 0.25]
    for k, st in enumerate(all_states()):
        want = sum(math.log(pi[h]) if st[h] else math.log(1 - pi[h]) for h in range(H))
        assert lp[k].item() == pytest.approx(want, rel=1e-9)
    # log p(s) sums to one over all states
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)


def test_first_layer_of_binary_input_is_sum_of_columns():
    torch.manual_seed(0)
    dec = Decoder(6, 5, (7, 4), "leaky_relu")
    s = torch.tensor([[1.0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
    a = dec.first(s)
    w, b = dec.layers[0].weight, dec.layers[0].bias
    torch.testing.assert_close(a[0], b + w[:, 0] + w[:, 2] + w[:, 5])
    torch.testing.assert_close(a[1], b)
    torch.testing.assert_close(dec.rest(a), dec(s))
    assert dec(torch.zeros(2, 3, 6)).shape == (2, 3, 5)


def test_decoder_without_hidden_layer_is_linear():
    torch.manual_seed(0)
    dec = Decoder(4, 3, (), "relu")
    s = torch.tensor([[1.0, 0, 1, 1]])
    w, b = dec.layers[0].weight, dec.layers[0].bias
    torch.testing.assert_close(dec(s)[0], b + w[:, 0] + w[:, 2] + w[:, 3])


@pytest.mark.parametrize(
    "hidden,activation", [((), "relu"), ((6,), "relu"), ((6, 5), "leaky_relu"), ((6,), "tanh")]
)
def test_decoder_mean_is_the_weighted_mean_of_the_outputs(hidden, activation):
    """Decoder.mean applies the (affine) output layer once to the q-weighted hidden
    activations: the same as averaging the K outputs, also when q does not sum to 1."""
    g = torch.Generator().manual_seed(0)
    dec = Decoder(7, 5, hidden, activation, g).double()
    with torch.no_grad():
        for layer in dec.layers:
            layer.bias.uniform_(-1, 1, generator=g)
    s = (torch.rand(4, 9, 7, generator=g) < 0.4).double()
    for q in (
        torch.softmax(torch.randn(4, 9, generator=g, dtype=torch.float64), 1),
        torch.rand(4, 9, generator=g, dtype=torch.float64),
    ):
        torch.testing.assert_close(dec.mean(dec.first(s), q), torch.einsum("bk,bkd->bd", q, dec(s)))


def test_log_joint_is_differentiable_in_decoder_only():
    m = tiny_model()
    y = torch.randn(2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    s = torch.tensor(all_states(), dtype=torch.float64).expand(2, -1, -1)
    torch.logsumexp(m.log_joint(y, s), 1).sum().backward()
    for p in m.decoder.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # π and σ² are closed-form buffers, not parameters
    names = {n for n, _ in m.named_parameters()}
    assert all(n.startswith("decoder.") for n in names)
    assert {n for n, _ in m.named_buffers()} == {"pi", "sigma2"}


def test_model_initial_pi_is_one_over_h():
    m = Model(8, 3, (4,), "relu", sigma2=1.0)
    torch.testing.assert_close(m.pi, torch.full((8,), 1 / 8))
    assert float(m.sigma2) == 1.0


def test_decoder_init_from_the_given_generator():
    """Xavier-uniform weights drawn from the run's generator, zero biases: equal seeds give
    equal decoders whatever torch's global generator holds."""
    torch.manual_seed(1)
    a = Model(6, 5, (7, 4), "relu", sigma2=1.0, gen=torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    b = Model(6, 5, (7, 4), "relu", sigma2=1.0, gen=torch.Generator().manual_seed(3))
    c = Model(6, 5, (7, 4), "relu", sigma2=1.0, gen=torch.Generator().manual_seed(4))
    for la, lb, lc in zip(a.decoder.layers, b.decoder.layers, c.decoder.layers):
        assert torch.equal(la.weight, lb.weight)
        assert not torch.equal(la.weight, lc.weight)
        assert torch.equal(la.bias, torch.zeros_like(la.bias))
        bound = math.sqrt(6.0 / (la.in_features + la.out_features))
        assert la.weight.abs().max() <= bound
        assert la.weight.abs().max() > 0.5 * bound  # spread over the range, not tiny
