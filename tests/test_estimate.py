"""The bounded training pool, the streaming estimate and the memory budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from evodenoise import denoise, get_preset, inpaint
from evodenoise import estimate as estimate_module
from evodenoise.color import OPPONENT
from evodenoise.estimate import Dictionary, estimate_image
from evodenoise.memory import MemoryBudgetError, check_fits, keep_freed_memory
from evodenoise.model import Model
from evodenoise.patches import count_patches, extract_patches, fold_rows, gather_patches
from evodenoise.plan import MIN_RAISED_POOL, training_epochs
from evodenoise.states import duplicate_mask, init_states, pack, unpack
from evodenoise.train import Fit, fit

SIGMA = 25 / 255
SMALL = get_preset("fast").replace(
    patch_size=5,
    n_latents=16,
    hidden=(32,),
    n_states=16,
    n_parents=4,
    n_children=3,
    n_generations=2,
    epochs=20,
    batch_size=8,
    estep_batch=256,
    lr_max=0.02,
    lr_half_cycle=5.0,
    min_visits=0,
)


def psnr(clean, x):
    return peak_signal_noise_ratio(clean, x, data_range=1.0)


def noisy_crop(h=48, w=56):
    clean = (data.camera()[140 : 140 + h, 170 : 170 + w] / 255.0).astype(np.float32)
    rng = np.random.default_rng(0)
    return clean, (clean + SIGMA * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.mark.parametrize("c", [1, 3])
def test_gather_patches_equals_rows_of_extract(c):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(c, 9, 11, generator=g)
    idx = torch.tensor([0, 5, 6, 17, 20, 34])
    assert torch.equal(gather_patches(img, idx, 4), extract_patches(img, 4)[idx])


def _model_and_dictionary(h=10, d=12, k=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = Model(h, d, (16,), "relu", 0.7, g)
    with torch.no_grad():
        model.pi.uniform_(0.05, 0.5, generator=g)
    states = pack(torch.rand(1, k, h, generator=g) < 0.3)
    states = states[:, ~duplicate_mask(states)[0]]
    return model, Dictionary(Fit(model, states, SMALL), 10**6), g


def test_dictionary_seeds_and_posterior_follow_the_log_joint():
    """Each patch gets the S dictionary states of highest log-joint, ranked as the model's own
    log_joint ranks them; the posterior mean and variance (of a patch that takes no sweep) are
    those of the softmax over every entry (with and without missing values)."""
    model, dic, g = _model_and_dictionary()
    h, s = 10, 5
    y = torch.randn(7, 12, generator=g)
    for obs in (None, (torch.rand(7, 12, generator=g) > 0.3).float()):
        with torch.no_grad():
            lj = model.log_joint(y, unpack(dic.states, h).expand(7, -1, -1), obs)  # (7, K)
            best = torch.topk(lj, s, dim=1).indices
            top = dic.top(y, obs, s)
            seeds, a = dic.states[top.indices], dic.a[top.indices]
            assert torch.equal(seeds, dic.states[best])
            torch.testing.assert_close(  # their extended pre-activations, log-prior last
                a,
                torch.cat(
                    [
                        model.decoder.first(unpack(seeds, h)),
                        model.log_prior(unpack(seeds, h))[..., None],
                    ],
                    -1,
                ),
            )
            q = torch.softmax(lj, 1)  # the posterior over every entry
            mu = model.decoder(unpack(dic.states, h))  # (K, D)
            mean = torch.einsum("bk,kd->bd", q, mu)
            var = torch.einsum("bk,kd->bd", q, mu * mu) - mean**2
        got_mean, got_var, got_best = dic.posterior(y, obs)
        assert torch.equal(got_best, best[:, 0])
        torch.testing.assert_close(got_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got_var, var, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("n_latents", [60, 100])  # one packed word (flat unique) or two
def test_dictionary_is_the_most_frequent_distinct_states(n_latents):
    g = torch.Generator().manual_seed(1)
    states = init_states(30, 6, n_latents, g, "cpu")
    states[:10, 0] = states[0, 0]  # one state in 10 sets
    states[10:14, 1] = states[10, 1]  # another in 4 sets
    model = Model(n_latents, 4, (8,), "relu", 1.0, g)
    dic = Dictionary(Fit(model, states, SMALL), 8).states
    assert dic.shape == (8, states.shape[-1]) and not duplicate_mask(dic[None]).any()
    assert torch.equal(dic[0], states[0, 0]) and torch.equal(dic[1], states[10, 1])


@pytest.fixture(scope="module")
def trained_crop():
    """A model trained on every patch of the noisy crop, and ``run(keep, **changes)``: the PSNR
    of the estimate made with the trained states of the patches ``keep`` only (the others
    fresh, as on a large image), with ``changes`` to the config."""
    clean, noisy = noisy_crop()
    x = torch.from_numpy(noisy)[None] * 255
    off, unit = x.mean(), float(x.std())
    x = (x - off) / unit
    cfg = SMALL.replace(dictionary_size=4096)
    pool = torch.arange(44 * 52)
    fitted = fit(
        gather_patches(x, pool, 5),
        None,
        cfg,
        torch.Generator().manual_seed(0),
        sigma=25 / unit,
        unit=unit,
    )

    def run(keep, **kw):
        part = Fit(fitted.model, fitted.states[keep].clone(), cfg)
        out = estimate_image(
            part, x, None, pool[keep], cfg.replace(**kw), torch.Generator().manual_seed(1)
        )
        return psnr(clean, ((out * unit + off) / 255).clamp(0, 1)[0].numpy())

    return clean, noisy, run


def test_fresh_states_under_a_trained_decoder_lose_little(trained_crop):
    """Train on every patch, then estimate with the trained states of only every fourth patch:
    the rest get their sets from the dictionary (the streaming path of a large image), with no
    sweep or one. Bands of 5 rows or one band give the same quality."""
    clean, noisy, run = trained_crop
    full = run(slice(None))
    assert full > psnr(clean, noisy) + 8
    assert run(slice(None, None, 4)) > full - 0.2
    assert run(slice(None, None, 4), band_rows=5) > full - 0.2
    assert run(slice(None, None, 4), fresh_sweeps=1) > full - 0.2


@pytest.fixture
def rows(monkeypatch):
    """The patches of every E-step call of the estimate while the test runs (appended to)."""
    counts: list[int] = []
    real = estimate_module.estep_rows

    def counted(model, y, *args, **kw):
        counts.append(y.shape[0])
        return real(model, y, *args, **kw)

    monkeypatch.setattr(estimate_module, "estep_rows", counted)
    return counts


def test_sweeps_stop_where_they_gain_nothing(trained_crop, rows):
    """Fresh patches sweep until a sweep gains less than ``sweep_tol`` on their free-energy
    term: a tolerance nothing reaches is exactly one sweep, the default sweeps fewer patches
    than every sweep for every patch and loses almost nothing against it."""
    _, _, run = trained_crop
    every4 = slice(None, None, 4)
    one = run(every4, fresh_sweeps=1, poor_fit_sweeps=1, sweep_tol=0.0)
    assert run(every4, fresh_sweeps=3, sweep_tol=1e9) == one
    rows.clear()
    every = run(every4, fresh_sweeps=3, sweep_tol=0.0)
    n_every = sum(rows)
    rows.clear()
    adaptive = run(every4, fresh_sweeps=3)  # the default tolerance
    assert get_preset("fast").sweep_tol > 0
    assert sum(rows) < 0.8 * n_every
    assert adaptive > every - 0.05


def test_without_sweeps_only_the_poorly_explained_patches_are_swept(trained_crop, rows):
    """``fresh_sweeps`` 0: fresh patches take the posterior over the whole dictionary, and
    only those it explains worst (above the ``poor_fit_quantile`` of the pool's residuals)
    take E-step sweeps: fewer rows than sweeping every fresh patch, little quality lost;
    without ``poor_fit_sweeps`` none at all."""
    _, _, run = trained_crop
    every4 = slice(None, None, 4)
    swept = run(every4, fresh_sweeps=3)
    n_swept = sum(rows)
    rows.clear()
    none = run(every4, fresh_sweeps=0, poor_fit_sweeps=0)
    n_pool = sum(rows)  # the pool's own final sweeps only
    rows.clear()
    poorest = run(every4, fresh_sweeps=0, poor_fit_quantile=0.9)
    assert 0 < sum(rows) - n_pool < 0.5 * (n_swept - n_pool)
    assert none > swept - 0.3 and poorest > swept - 0.2, (none, poorest, swept)


def test_fresh_patches_on_a_coarser_grid(trained_crop, rows):
    """``fresh_stride`` 2 estimates the fresh patches of every other row and column only (and
    the last, so every pixel is covered): about a quarter of their E-step rows, little
    quality lost, the same result in bands as in one."""
    clean, noisy, run = trained_crop
    every4 = slice(None, None, 4)
    swept = dict(fresh_sweeps=3, sweep_tol=0.0, poor_fit_sweeps=1)  # every fresh patch swept
    every = run(every4, **swept)
    n_every = sum(rows)
    rows.clear()
    coarse = run(every4, **swept, fresh_stride=2)
    assert sum(rows) < 0.45 * n_every  # the pool's own rows are all still estimated
    assert np.isfinite(coarse) and coarse > every - 0.3, (coarse, every)
    assert run(every4, fresh_stride=2, band_rows=5) == pytest.approx(run(every4, fresh_stride=2))
    assert run(slice(None), fresh_stride=2) == run(slice(None))  # no fresh patch: no change


def test_pooled_training_is_reported_and_denoises():
    """A pool of 1,200 of the 2,288 patches: the config that ran says so; the result is still
    far above the noisy input (measured 28.2 dB from 20.2; a pool this small on a tiny image
    costs about 0.5 dB against training on all)."""
    clean, noisy = noisy_crop()
    out, r = denoise(noisy, SIGMA, config=SMALL.replace(train_patches=1200, band_rows=5), seed=0)
    assert r.config.train_patches == 1200 and r.config.band_rows == 5
    assert psnr(clean, out) > psnr(clean, noisy) + 7


def test_progress_covers_training_and_every_band():
    clean, noisy = noisy_crop(20, 24)
    events = []
    cfg = SMALL.replace(epochs=2, band_rows=3)
    denoise(noisy, SIGMA, config=cfg, seed=0, callback=events.append)
    train = [e for e in events if e["phase"] == "train"]
    bands = [e for e in events if e["phase"] == "estimate"]
    assert [e["epoch"] for e in train] == [1, 2]
    assert [e["band"] for e in bands] == list(range(1, 7)) and bands[0]["bands"] == 6  # 16 rows
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] == 1.0


def test_small_images_get_more_epochs_up_to_twice_but_tiny_ones_do_not():
    cfg = SMALL.replace(epochs=16, min_visits=470_000)
    assert training_epochs(cfg, 65_536) == 16  # enough visits already
    assert training_epochs(cfg, 20_000) == 24  # ceil(470,000 / 20,000)
    assert training_epochs(cfg, 10_000) == 32  # at most 2x
    assert training_epochs(cfg, MIN_RAISED_POOL - 1) == 16  # tiny images: measured no gain
    assert training_epochs(cfg.replace(min_visits=0), 10_000) == 16
    clean, noisy = noisy_crop(20, 24)  # 320 patches: the preset's epochs, and the record says so
    _, r = denoise(noisy, SIGMA, config=SMALL.replace(epochs=2, min_visits=10**6), seed=0)
    assert r.config.epochs == 2 and len(r.log) == 2


def test_a_denoising_runs_chroma_model_keeps_the_presets_epochs():
    from evodenoise.plan import plan_run

    cfg = SMALL.replace(epochs=16, min_visits=470_000, train_patches=65_536, patch_size=4)
    x = torch.rand(3, 200, 200) * 255  # 38,809 patches: luminance pool 38,809, chroma 9,702
    lum, chroma = plan_run(cfg, x, None, 25.0, opponent=True).models
    assert lum.config.epochs == 16 and chroma.config.epochs == 16  # raised: 32
    missing = torch.zeros(3, 200, 200, dtype=torch.bool)
    missing[:, ::7] = True
    lum, chroma = plan_run(cfg, x, missing, None, opponent=True).models
    assert chroma.config.epochs > 16  # inpainting: raised as before (not measured without)


def test_fresh_stride_spares_the_chroma_models_cheap_fresh_patches():
    """The chroma model's fresh patches take the dictionary's posterior without a sweep
    (``chroma_sweeps`` 0): they stay on every patch; with sweeps they follow the stride."""
    from evodenoise.plan import plan_run

    cfg = SMALL.replace(train_patches=4096, patch_size=4, fresh_stride=2)
    x = torch.rand(3, 100, 100) * 255
    lum, chroma = plan_run(cfg, x, None, 25.0, opponent=True).models
    assert lum.config.fresh_stride == 2 and chroma.config.fresh_stride == 1
    swept = plan_run(cfg.replace(chroma_sweeps=1), x, None, 25.0, opponent=True).models[1]
    assert swept.config.fresh_stride == 2
    assert lum.work < plan_run(cfg.replace(fresh_stride=1), x, None, 25.0, True).models[0].work


def test_memory_budget_refuses_before_any_work():
    clean, noisy = noisy_crop(20, 24)
    events = []
    with pytest.raises(MemoryBudgetError, match=r"megapixels fit"):
        denoise(noisy, SIGMA, config=SMALL, max_memory=10**6, callback=events.append)
    assert events == []
    with pytest.raises(MemoryBudgetError):
        inpaint(
            noisy,
            np.random.default_rng(0).random(noisy.shape) < 0.5,
            config=SMALL,
            max_memory=10**6,
        )


def test_memory_budget_shrinks_bands_before_refusing():
    cfg = SMALL.replace(train_patches=1000)
    shape = (1, 2000, 2000)
    dev = torch.device("cpu")
    wide = check_fits(cfg, shape, False, 1000, 400 * 1996, dev, None)
    narrow = check_fits(cfg, shape, False, 1000, 1996, dev, None)
    assert narrow < wide
    check_fits(cfg, shape, False, 1000, 1996, dev, narrow)  # fits exactly
    with pytest.raises(MemoryBudgetError):
        check_fits(cfg, shape, False, 1000, 400 * 1996, dev, narrow)
    # the library picks the band that fits
    clean, noisy = noisy_crop(40, 44)
    need = check_fits(SMALL, (1, 40, 44), False, 36 * 40, 40, dev, None)
    _, r = denoise(noisy, SIGMA, config=SMALL.replace(epochs=1), max_memory=need)
    assert r.config.band_rows == 1


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "colour"])
def test_bands_and_chunks_never_change_the_result(colour):
    """Same image, seed and device: the result does not depend on how the estimate is cut
    into bands and chunks (which follows the free memory), beyond float rounding. The pool
    holds a third of the patches, so fresh and poorly explained patches are swept too."""
    if colour:
        clean = data.astronaut()[100:136, 200:240].astype(np.float32) / 255
        noisy = clean + SIGMA * np.random.default_rng(1).standard_normal(clean.shape)
    else:
        clean, noisy = noisy_crop(36, 40)
    cfg = SMALL.replace(epochs=2, train_patches=400, dictionary_size=32, poor_fit_quantile=0.5)
    want, _ = denoise(noisy.astype(np.float32), SIGMA, config=cfg, seed=3)
    for change in (dict(band_rows=1), dict(chunk_size=7), dict(band_rows=5, chunk_size=64)):
        got, r = denoise(noisy.astype(np.float32), SIGMA, config=cfg.replace(**change), seed=3)
        assert all(getattr(r.config, k) == v for k, v in change.items())
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=str(change))


def test_fold_rows_with_per_value_weights_is_the_weighted_average():
    g = torch.Generator().manual_seed(3)
    c, h, w, p = 2, 6, 7, 3
    est = torch.rand(count_patches(h, w, p), c * p * p, generator=g)
    wts = torch.rand(est.shape, generator=g) + 0.1
    num, den = torch.zeros(c, h, w), torch.zeros(c, h, w)
    fold_rows(num, den, est, 0, p, wts)
    # brute force: every patch adds weight·value to the pixels it covers
    want_num, want_den = torch.zeros(c, h, w), torch.zeros(c, h, w)
    cols = w - p + 1
    for n in range(est.shape[0]):
        i, j = divmod(n, cols)
        want_num[:, i : i + p, j : j + p] += (est[n] * wts[n]).reshape(c, p, p)
        want_den[:, i : i + p, j : j + p] += wts[n].reshape(c, p, p)
    torch.testing.assert_close(num / den, want_num / want_den)


def test_variance_merge_denoises():
    clean, noisy = noisy_crop(32, 36)
    out, r = denoise(noisy, SIGMA, config=SMALL.replace(merge="variance"), seed=0)
    assert r.config.merge == "variance"
    assert psnr(clean, out) > psnr(clean, noisy) + 6


# --- colour -----------------------------------------------------------------------------------


def colour_crop(h=24, w=28):
    clean = (data.astronaut()[200 : 200 + h, 220 : 220 + w] / 255.0).astype(np.float32)
    rng = np.random.default_rng(0)
    return clean, (clean + SIGMA * rng.standard_normal(clean.shape)).astype(np.float32)


def test_opponent_transform_is_orthonormal():
    torch.testing.assert_close(OPPONENT @ OPPONENT.T, torch.eye(3))


def test_colour_uses_a_luminance_and_a_chroma_model():
    clean, noisy = colour_crop()
    cfg = SMALL.replace(epochs=3)
    out, r = denoise(noisy, SIGMA, config=cfg, seed=0)
    assert [e["model"] for e in r.log] == ["luminance"] * 3 + ["chroma"] * 3
    assert r.fields.shape == (16, 5, 5, 3) and out.shape == noisy.shape
    assert psnr(clean, out) > psnr(clean, noisy) + 3
    # chroma trains on chroma_pool of the pool; the reported config says what ran
    _, r = denoise(noisy, SIGMA, config=cfg.replace(train_patches=200), seed=0)
    assert r.config.train_patches == 200 and r.config.chroma_pool == 0.25
    _, r = denoise(noisy, SIGMA, config=cfg.replace(color="rgb"), seed=0)
    assert all("model" not in e for e in r.log) and len(r.log) == 3


def test_alpha_passes_through_untouched_and_per_value_masks_use_one_rgb_model():
    clean, noisy = colour_crop()
    rgba = np.concatenate(
        [noisy, np.linspace(0, 1, 24 * 28, dtype=np.float32).reshape(24, 28, 1)], -1
    )
    out, r = denoise(rgba, SIGMA, config=SMALL.replace(epochs=2), seed=0)
    assert np.array_equal(out[..., 3], rgba[..., 3]) and r.fields.shape[-1] == 4
    mask = np.random.default_rng(1).random(clean.shape) < 0.3  # differs between channels
    out, r = inpaint(clean, mask, config=SMALL.replace(epochs=2), seed=0)
    assert all("model" not in e for e in r.log)
    np.testing.assert_allclose(out[~mask], clean[~mask], atol=1e-6)  # kept (float rounding)


def test_gray_images_ignore_the_colour_setting():
    clean, noisy = noisy_crop(20, 24)
    a, _ = denoise(noisy, SIGMA, config=SMALL.replace(epochs=2), seed=0)
    b, _ = denoise(noisy, SIGMA, config=SMALL.replace(epochs=2, color="rgb"), seed=0)
    assert np.array_equal(a, b)


def test_keep_freed_memory_is_applied_once_on_linux():
    """The allocator policy is set once per process (a bool each time, the same one); on
    glibc Linux it is applied."""
    import sys

    first = keep_freed_memory()
    assert keep_freed_memory() is first
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert first
