"""The evolutionary E-step: packed states, de-duplication, initial states, and the invariants of
``evolve`` (free energy never decreases, every K_n duplicate-free, scores exact)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from evodenoise.config import MUTATIONS, SELECTIONS
from evodenoise.evolution import (
    _bitflip,
    _flips,
    _Population,
    _prepare,
    _recombine,
    _select_parents,
    distinct_bits,
    draw_noise,
    estep,
    evolve,
    preactivations,
)
from evodenoise.model import Model
from evodenoise.presets import get_preset
from evodenoise.states import duplicate_mask, init_states, n_words, pack, unpack


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows_as_sets(packed: torch.Tensor) -> list[set]:
    return [set(map(tuple, row.tolist())) for row in packed]


# --- packing ------------------------------------------------------------------------------


@pytest.mark.parametrize("h", [1, 7, 63, 64, 65, 130, 512])
def test_pack_unpack_round_trip(h):
    s = torch.rand(3, 5, h, generator=gen(h)) < 0.5
    p = pack(s)
    assert p.dtype == torch.int64 and p.shape == (3, 5, n_words(h))
    assert torch.equal(unpack(p, h), s.float())
    assert torch.equal(unpack(p, h, dtype=torch.uint8), s.to(torch.uint8))
    # all-zero and all-one states
    for v in (0, 1):
        full = torch.full((2, h), v)
        assert torch.equal(unpack(pack(full), h), full.float())
    # different states pack to different words, equal ones to equal words
    a, b = s[0, 0].clone(), s[0, 0].clone()
    b[-1] = ~b[-1]
    assert not torch.equal(pack(a), pack(b))
    assert torch.equal(pack(a), pack(s[0, 0].float()))


def test_n_words():
    assert [n_words(h) for h in (1, 63, 64, 65, 128, 129, 512)] == [1, 1, 1, 2, 2, 3, 8]


# --- de-duplication -------------------------------------------------------------------------


@pytest.mark.parametrize("h", [6, 64, 70, 200])
def test_duplicate_mask_leaves_one_copy_of_each_distinct_state(h):
    pool = pack(torch.rand(5, h, generator=gen(h)) < 0.5)  # 5 distinct-ish states
    idx = torch.randint(0, 5, (8, 12), generator=gen(h + 1))
    packed = pool[idx]  # (8, 12, W), many repeats
    dup = duplicate_mask(packed)
    assert dup.shape == (8, 12) and dup.dtype == torch.bool
    for row, d in zip(packed, dup):
        states = [tuple(x) for x in row.tolist()]
        kept = [st for st, is_dup in zip(states, d.tolist()) if not is_dup]
        assert len(kept) == len(set(kept)) == len(set(states))
        # the kept copy of each state is its first occurrence in the row (stable)
        first = {}
        for i, st in enumerate(states):
            first.setdefault(st, i)
        assert sorted(first.values()) == [i for i, x in enumerate(d.tolist()) if not x]


def test_duplicate_mask_compares_every_word():
    """States equal in one word but different in another are distinct (W = 2)."""
    h = 128
    base = torch.zeros(h)
    a, b, c = base.clone(), base.clone(), base.clone()
    b[100] = 1  # differs from a only in word 1
    c[3] = 1  # differs from a only in word 0
    d = b.clone()
    d[3] = 1
    row = pack(torch.stack([a, b, c, d, a, d, b, c, c]))[None]
    assert duplicate_mask(row)[0].tolist() == [False] * 4 + [True] * 5


def test_duplicate_mask_no_duplicates():
    p = pack(torch.tensor(list(itertools.product((0, 1), repeat=4))))[None]  # all 16 states
    assert not duplicate_mask(p).any()


# --- initial states -------------------------------------------------------------------------


@pytest.mark.parametrize("h,s", [(4, 16), (4, 15), (1, 2), (3, 8), (64, 32), (70, 40), (130, 16)])
def test_init_states_are_distinct(h, s):
    packed = init_states(9, s, h, gen(h * s), "cpu")
    assert packed.shape == (9, s, n_words(h)) and packed.dtype == torch.int64
    assert not duplicate_mask(packed).any()
    for row in rows_as_sets(packed):
        assert len(row) == s
    bits = unpack(packed, h)
    assert bits.shape == (9, s, h)
    if s == 2**h:
        full = set(itertools.product((0.0, 1.0), repeat=h))
        for row in bits:
            assert set(map(tuple, row.tolist())) == full


def test_init_states_sparse_and_seeded():
    a = init_states(50, 16, 64, gen(0), "cpu")
    b = init_states(50, 16, 64, gen(0), "cpu")
    assert torch.equal(a, b)
    assert unpack(a, 64).sum(-1).mean() < 4  # sparse: about one active latent per state


def test_init_states_chunked_equals_shape():
    packed = init_states(10, 6, 70, gen(0), "cpu", chunk=3)  # several chunks, a short last one
    assert packed.shape == (10, 6, 2) and not duplicate_mask(packed).any()


@pytest.fixture(params=[True, False], ids=["floyd", "topk"])
def floyd(request, monkeypatch):
    """Both ways of drawing distinct bits: Floyd's loop (the CPU's) and a top-k (a GPU's)."""
    import evodenoise.evolution as evolution_module

    monkeypatch.setattr(evolution_module, "FLOYD_ON_CPU", request.param)


@pytest.mark.parametrize("h,k", [(1, 1), (5, 5), (8, 3), (64, 7), (70, 9), (512, 4)])
def test_distinct_bits(h, k, floyd):
    bits = distinct_bits((300, 4), h, k, gen(h + k), "cpu")
    assert bits.shape == (300, 4, k) and bits.dtype == torch.int64
    assert ((bits >= 0) & (bits < h)).all()
    assert all(len(set(r)) == k for r in bits.reshape(-1, k).tolist())
    if k == h:
        assert all(sorted(r) == list(range(h)) for r in bits.reshape(-1, k).tolist())


def test_distinct_bits_roughly_uniform(floyd):
    h, k = 8, 3
    bits = distinct_bits((4000,), h, k, gen(0), "cpu")
    counts = torch.bincount(bits.flatten(), minlength=h).float()
    expected = 4000 * k / h  # 1500 per latent
    assert ((counts - expected).abs() < 0.1 * expected).all(), counts
    # every subset is possible, not just a few: 56 3-subsets of 8
    subsets = {tuple(sorted(r)) for r in bits.tolist()}
    assert len(subsets) == 56


# --- evolve ---------------------------------------------------------------------------------

B, D = 12, 9


def setup(h, selection="fitness", mutation="bitflip", *, masked=False, s=8, generations=2, seed=0):
    cfg = get_preset("fast").replace(
        n_latents=h,
        hidden=(8,),
        n_states=s,
        n_parents=4,
        n_children=3,
        n_generations=generations,
        selection=selection,
        mutation=mutation,
    )
    torch.manual_seed(seed)
    model = Model(h, D, cfg.hidden, cfg.activation, sigma2=4.0)
    with torch.no_grad():
        model.pi.copy_(torch.rand(h, generator=gen(seed + 1)) * 0.2)
    y = torch.randn(B, D, generator=gen(seed + 2)) * 3
    obs = None
    if masked:
        obs = (torch.rand(B, D, generator=gen(seed + 3)) < 0.6).float()
        obs[:, 0] = 1  # at least one observed value per point
    states = init_states(B, s, h, gen(seed + 4), "cpu")
    return cfg, model, y, obs, states


def free_energy(model, y, obs, states, h):
    return torch.logsumexp(model.log_joint(y, unpack(states, h), obs), dim=1)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("h", [64, 70])
@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("selection", SELECTIONS)
def test_evolve_never_lowers_free_energy_and_keeps_k_distinct(selection, mutation, h, masked):
    cfg, model, y, obs, states = setup(h, selection, mutation, masked=masked)
    before = free_energy(model, y, obs, states, h)
    k = states
    improved = torch.zeros(B, dtype=torch.bool)
    for step in range(3):  # several E-steps in a row
        out = evolve(model, y, obs, k, cfg, gen(10 + step))
        assert out.states.shape == k.shape and out.states.dtype == torch.int64
        after = free_energy(model, y, obs, out.states, h)
        assert (after >= before - 1e-5 * before.abs().clamp(min=1)).all(), (after - before).min()
        # stronger: K_n after is the top S of a superset, so it dominates rank by rank
        old = torch.sort(model.log_joint(y, unpack(k, h), obs), 1, descending=True).values
        new = torch.sort(model.log_joint(y, unpack(out.states, h), obs), 1, descending=True).values
        assert (new >= old - 1e-5 * old.abs().clamp(min=1)).all(), (new - old).min()
        improved |= after > before + 1e-3
        assert not duplicate_mask(out.states).any()
        for row in rows_as_sets(out.states):
            assert len(row) == cfg.n_states
        # the scores returned are those of the returned states under the same parameters
        lj = model.log_joint(y, unpack(out.states, h), obs)
        torch.testing.assert_close(out.log_joint, lj, rtol=1e-5, atol=1e-3)
        _, sq = model.score(
            y,
            obs,
            model.decoder.first(unpack(out.states, h)),
            model.log_prior(unpack(out.states, h)),
        )
        torch.testing.assert_close(out.sqerr, sq, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(out.f, torch.logsumexp(out.log_joint, 1))
        torch.testing.assert_close(out.q.sum(1), torch.ones(B))
        # sorted, best first
        assert (out.log_joint[:, 1:] <= out.log_joint[:, :-1]).all()
        before, k = after, out.states
    assert improved.float().mean() > 0.5  # the E-step is not a no-op


def test_evolve_keeps_the_best_of_old_and_new():
    """With one generation and 'best' selection, K_n after ⊇ the S best of K_n before."""
    h = 16
    cfg, model, y, obs, states = setup(h, "best", "bitflip", generations=1)
    before = model.log_joint(y, unpack(states, h), obs)
    out = evolve(model, y, obs, states, cfg, gen(5))
    # every old state that is not in the new K_n scores no better than the worst new one
    for n in range(B):
        new = set(map(tuple, out.states[n].tolist()))
        worst = out.log_joint[n].min()
        for j, st in enumerate(map(tuple, states[n].tolist())):
            if st not in new:
                assert before[n, j] <= worst + 1e-4


@pytest.mark.parametrize("masked", [False, True])
def test_zero_generations_rescores_and_sorts(masked):
    h = 70
    cfg, model, y, obs, states = setup(h, masked=masked, generations=0)
    out = evolve(model, y, obs, states, cfg, gen(1))
    lj = model.log_joint(y, unpack(states, h), obs)
    want, order = torch.sort(lj, dim=1, descending=True)
    torch.testing.assert_close(out.log_joint, want)
    assert torch.equal(out.states, torch.gather(states, 1, order[..., None].expand_as(states)))
    assert rows_as_sets(out.states) == rows_as_sets(states)


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("h", [64, 70])
def test_evolve_keeps_and_takes_preactivations(mutation, h):
    """``keep`` returns the new states' extended pre-activations (first layer, log-prior
    last), and passing them back (``a``) gives the E-step the same result as recomputing."""
    cfg, model, y, obs, states = setup(h, "fitness", mutation, masked=True)
    consts = model.constants()
    plain = evolve(model, y, obs, states, cfg, gen(7))
    kept = evolve(
        model, y, obs, states, cfg, gen(7), a=preactivations(model, states, consts), keep=True
    )
    assert torch.equal(kept.states, plain.states)
    torch.testing.assert_close(kept.log_joint, plain.log_joint, rtol=1e-5, atol=1e-4)
    s = unpack(kept.states, h)
    torch.testing.assert_close(
        kept.a,
        torch.cat([model.decoder.first(s), model.log_prior(s)[..., None]], -1),
        rtol=1e-5,
        atol=1e-4,
    )


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@torch.no_grad()
def test_estep_takes_the_kept_states_scores(masked):
    """A second sweep under the same parameters given the first's scores of the states it
    kept (``scored``) ends where one that scores them again ends: same states and scores."""
    cfg, model, y, obs, states = setup(64, "best", "bitflip", masked=masked)
    consts = model.constants()
    first = evolve(model, y, obs, states, cfg, gen(7), keep=True)
    noise = draw_noise(cfg, y.shape[0], "cpu", gen(8))
    again = estep(model, y, obs, first.states, noise, consts, cfg, a=first.a, keep=True)
    given = estep(
        model, y, obs, first.states, noise, consts, cfg, a=first.a, keep=True,
        scored=(first.score, first.norm),
    )  # fmt: skip
    assert torch.equal(given.states, again.states)
    torch.testing.assert_close(given.score, again.score, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(given.norm, again.norm, rtol=1e-6, atol=1e-5)


def test_evolve_is_seeded():
    cfg, model, y, obs, states = setup(70, "fitness", "crossover")
    a = evolve(model, y, obs, states, cfg, gen(3))
    b = evolve(model, y, obs, states, cfg, gen(3))
    assert torch.equal(a.states, b.states) and torch.equal(a.log_joint, b.log_joint)


def test_evolve_does_not_touch_its_input():
    cfg, model, y, obs, states = setup(64)
    copy = states.clone()
    evolve(model, y, obs, states, cfg, gen(0))
    assert torch.equal(states, copy)


# --- parents and children -------------------------------------------------------------------


@pytest.mark.parametrize("mode", SELECTIONS)
def test_select_parents_distinct_per_point(mode):
    lj = torch.randn(20, 10, generator=gen(0)) * 50
    idx = _select_parents(lj, 4, mode, gen(1))
    assert idx.shape == (20, 4)
    assert all(len(set(r)) == 4 for r in idx.tolist())
    assert ((idx >= 0) & (idx < 10)).all()
    if mode == "best":
        assert torch.equal(idx, torch.topk(lj, 4, dim=1).indices)


def test_fitness_selection_is_per_data_point():
    """Points whose log-joints are on very different scales each get their own parents: a
    point with tiny log-joints still has its best states picked more often than its worst."""
    lj = torch.tensor([[-1e6, -1e6 + 5, -1e6 + 10, -1e6 + 20], [0.0, 5.0, 10.0, 20.0]]).repeat(
        500, 1
    )
    idx = _select_parents(lj, 1, "fitness", gen(0))[:, 0]
    for r in (0, 1):
        counts = torch.bincount(idx[r::2], minlength=4)
        assert counts[3] > counts[0]
        assert (counts > 0).all()  # all members have a chance


def population(model, states, y=None, obs=None, lj=None):
    """A population with extended pre-activations (log-prior last) and its first layer."""
    h = model.pi.numel()
    if y is None:  # no data: the log-prior alone in the last column
        y = torch.zeros(states.shape[0], model.decoder.layers[-1].weight.shape[0])
    wt, bias, score = _prepare(model, y, obs, model.constants())
    a = unpack(states, h) @ wt + bias
    if lj is None:  # the log-joint less its per-point constant, made whole
        lj = score(a)[0] - 0.5 * torch.log(2 * math.pi * model.sigma2) * (
            y.shape[1] if obs is None else obs.sum(1, keepdim=True)
        )
    return _Population(states, a, lj), wt, bias


def split(a):
    """Extended pre-activations -> (first-layer pre-activation, log-prior)."""
    return a[..., :-1], a[..., -1]


def parents_of(h, mutation, seed=0, pop_too=False):
    cfg, model, y, obs, states = setup(h, mutation=mutation, seed=seed)
    if h == 64:  # every other state with bit 63, the sign bit of a one-word state, set
        states[:, ::2, 0] |= -(2**63)
    with torch.no_grad():
        pop, wt, bias = population(model, states, y, obs)
        # the extended pre-activation scores exactly as the model does
        s = unpack(states, h)
        want, _ = model.score(y, obs, model.decoder.first(s), model.log_prior(s))
        torch.testing.assert_close(pop.lj, want, rtol=1e-5, atol=1e-3)
    idx = _select_parents(pop.lj, cfg.n_parents, "uniform", gen(seed))
    if pop_too:
        return cfg, model, pop, idx, wt
    return cfg, model, pop.take(idx), wt, bias, split


@pytest.mark.parametrize("h", [8, 64, 70])
def test_bitflip_children_flip_distinct_single_bits_and_score_exactly(h):
    cfg, model, pop, idx, wt = parents_of(h, "bitflip", pop_too=True)
    b, p, c = B, cfg.n_parents, cfg.n_children
    bits = distinct_bits((1, b, p), h, c, gen(2), "cpu")  # (1, B, P, C)
    if h == 64:  # bit 63 flipped in parents with it set and without
        bits[0, :, 0] = torch.tensor([63, 0, 1])
    with torch.no_grad():
        flips = [x[0] for x in _flips(wt, bits, n_words(h))]
        ch, a = _bitflip(pop, idx, *flips)  # each parent of idx (B, P) makes C children
        a, prior = split(a)
    parents = pop.take(idx)
    par = unpack(parents.states, h)[:, :, None, :].expand(b, p, c, h)
    kid = unpack(ch, h).reshape(b, p, c, h)
    diff = kid != par
    assert (diff.sum(-1) == 1).all()  # exactly one bit per child
    flipped = diff.float().argmax(-1)  # (B, P, C)
    assert all(len(set(r)) == c for r in flipped.reshape(-1, c).tolist())  # distinct per parent
    if h == 64:
        assert set(par[:, 0, 0, 63].tolist()) == {0.0, 1.0}
    with torch.no_grad():
        kid_flat = unpack(ch, h)
        torch.testing.assert_close(a, model.decoder.first(kid_flat), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prior, model.log_prior(kid_flat), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mutation", ["sparseflip", "crossover"])
def test_recombine_children_score_exactly(mutation):
    h = 70
    cfg, model, parents, wt, bias, unsplit = parents_of(h, mutation)
    with torch.no_grad():
        ch, a = _recombine(model, parents, wt, bias, cfg, gen(2))
        a, prior = unsplit(a)
        kid = unpack(ch, h)
        assert kid.shape == (B, cfg.n_parents * cfg.n_children, h)
        torch.testing.assert_close(a, model.decoder.first(kid), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prior, model.log_prior(kid), rtol=1e-5, atol=1e-4)


def test_crossover_children_mix_two_parents_then_flip_one_bit():
    h = 40
    cfg, model, parents, wt, bias, _ = parents_of(h, "crossover")
    with torch.no_grad():
        ch, _ = _recombine(model, parents, wt, bias, cfg, gen(3))
    par = unpack(parents.states, h)  # (B, P, H)
    kid = unpack(ch, h).reshape(B, cfg.n_parents, cfg.n_children, h)
    for bi in range(B):
        for i in range(cfg.n_parents):
            for k in range(cfg.n_children):
                child = kid[bi, i, k]
                # some cut point and partner j != i give the child up to one flipped bit
                ok = any(
                    (torch.cat([par[bi, i, :cut], par[bi, j, cut:]]) != child).sum() <= 1
                    for j in range(cfg.n_parents)
                    if j != i
                    for cut in range(1, h)
                )
                assert ok


def test_sparseflip_moves_active_count_towards_target():
    """Target H·mean(π) = 2 active latents: dense parents lose bits, empty parents gain."""
    h, c = 64, 50
    cfg = get_preset("fast").replace(
        n_latents=h, hidden=(4,), n_states=8, n_parents=2, n_children=c, mutation="sparseflip"
    )
    torch.manual_seed(0)
    model = Model(h, 3, (4,), "relu", sigma2=1.0)
    with torch.no_grad():
        model.pi.fill_(2 / h)
    dense = torch.zeros(h)
    dense[:10] = 1
    par = torch.stack([dense, torch.zeros(h)])[None].expand(20, 2, h)  # (B=20, P=2, H)
    with torch.no_grad():
        pop, wt, bias = population(model, pack(par), lj=torch.zeros(20, 2))
        ch, _ = _recombine(model, pop, wt, bias, cfg, gen(0))
    active = unpack(ch, h).reshape(20, 2, c, h).sum(-1)
    assert active[:, 0].mean() < 10 - 0.5  # a 10-bit parent's children have fewer bits
    assert active[:, 1].mean() > 0.5  # an empty parent's children gain bits
    assert (active[:, 0] <= 10).all()  # a dense parent's children never gain bits here
