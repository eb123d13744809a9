"""The second stage: a collaborative Wiener filter with the model's estimate as pilot."""

import numpy as np
import pytest
import torch
from skimage import data

import evodenoise as evo
from evodenoise import memory, refine
from evodenoise.metrics import psnr
from evodenoise.refine import refine_estimate


def _camera(size: int = 64) -> torch.Tensor:
    """A gray crop of scikit-image's camera, (1, size, size), 0–255."""
    img = data.camera()[96 : 96 + size, 96 : 96 + size].astype(np.float32)
    return torch.from_numpy(img)[None]


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return clean + sigma * torch.randn(clean.shape, generator=g)


def _mse(a, b) -> float:
    return float((a - b).square().mean())


def test_a_fair_pilot_is_improved_on():
    clean = _camera()
    noisy = _noisy(clean, 25)
    pilot = _noisy(clean, 8, seed=1)  # a first estimate with errors of its own
    out = refine_estimate(noisy, pilot, [25.0])
    assert _mse(out, clean) < 0.8 * _mse(pilot, clean)
    assert _mse(out, clean) < 0.1 * _mse(noisy, clean)


def test_without_noise_the_input_comes_back():
    clean = _camera(40)
    out = refine_estimate(clean, clean, [1e-3])
    assert torch.allclose(out, clean, atol=1e-2)


def test_planes_are_filtered_each_with_its_own_sigma_and_the_first_plane_s_groups():
    clean = torch.cat([_camera(48), _camera(48).flip(2), 0.5 * _camera(48)])  # (3, 48, 48)
    noisy = torch.cat([_noisy(clean[:1], 20), _noisy(clean[1:], 10, seed=2)])
    pilot = _noisy(clean, 4, seed=3)
    out = refine_estimate(noisy, pilot, [20.0, 10.0, 10.0])
    swapped = refine_estimate(noisy[[0, 2, 1]], pilot[[0, 2, 1]], [20.0, 10.0, 10.0])
    assert torch.equal(out[[0, 2, 1]], swapped)  # planes after the first are independent
    alone = refine_estimate(noisy[:2], pilot[:2], [20.0, 10.0])
    assert torch.allclose(out[:2], alone, atol=1e-4)


@pytest.mark.parametrize("shape", [(5, 30), (8, 8), (9, 13), (13, 9), (30, 200)])
def test_any_shape_comes_back_whole_and_finite(shape):
    clean = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)) * 255
    out = refine_estimate(_noisy(clean, 10), clean, [10.0])
    assert out.shape == clean.shape and bool(torch.isfinite(out).all())
    if min(shape) < refine.BLOCK:
        assert torch.equal(out, clean)  # smaller than a block: the pilot


@pytest.mark.parametrize("sigma, group", [(25.0, refine.GROUP), (50.0, refine.GROUP_NOISY)])
def test_more_blocks_per_group_at_high_noise(monkeypatch, sigma, group):
    seen = []
    match = refine._match
    monkeypatch.setattr(refine, "_match", lambda *a: seen.append(a[3]) or match(*a))
    clean = _camera(48)
    refine_estimate(_noisy(clean, sigma), clean, [sigma], scales=1)
    assert set(seen) == {group}
    seen.clear()  # the half-size scale filters noise of σ/2
    refine_estimate(_noisy(clean, sigma), clean, [sigma], scales=2)
    assert seen[0] == group and seen[-1] == refine.GROUP


def test_halving_keeps_the_level_and_halves_white_noise():
    flat = torch.full((2, 40, 30), 100.0)
    assert torch.allclose(refine._halve(flat), torch.full((2, 20, 15), 100.0), atol=1e-3)
    noise = _noisy(torch.zeros(1, 256, 256), 20.0)
    assert abs(float(refine._halve(noise).std()) - 10.0) < 0.2


def test_the_low_frequencies_of_an_image_halved_give_it_back():
    image = _noisy(_camera(64), 10.0)
    f = 0.5
    back = refine._take_low(image, refine._halve(image), f)
    assert torch.allclose(back, image, atol=1e-3)


def test_the_coarse_scale_removes_what_blocks_cannot_see():
    yy, xx = np.mgrid[0:128, 0:128] / 128  # a smooth image: noise left at scales above a block
    clean = torch.from_numpy((120 + 60 * np.sin(3 * xx) * np.cos(2 * yy)).astype(np.float32))
    noisy = _noisy(clean[None], 25.0)
    one, two = (refine_estimate(noisy, clean[None], [25.0], scales=n) for n in (1, 2))
    assert _mse(two, clean[None]) < 0.7 * _mse(one, clean[None])


def test_one_scale_on_an_image_too_small_to_halve():
    clean = _camera(12)  # below two blocks: no coarser scale
    noisy = _noisy(clean, 10.0)
    assert torch.equal(
        refine_estimate(noisy, clean, [10.0], 1), refine_estimate(noisy, clean, [10.0], 3)
    )


def test_a_pilot_that_is_not_finite_comes_back_as_it_is():
    clean = _camera(32)
    pilot = clean.clone()
    pilot[0, 3, 5] = float("nan")
    assert torch.equal(refine_estimate(_noisy(clean, 10), pilot, [10.0]).isnan(), pilot.isnan())


@pytest.mark.parametrize("refs", [1, 7, 2 * 15])  # a row of 48 - 8 + 1 positions has 15
def test_chunks_of_references_give_the_whole_image_result(monkeypatch, refs):
    clean = _camera(48)
    noisy, pilot = _noisy(clean, 15), _noisy(clean, 5, seed=1)
    whole = refine_estimate(noisy, pilot, [15.0])
    # references per chunk: part of a row where a row does not fit, else whole rows
    monkeypatch.setattr(refine, "CHUNK_BYTES", refs * refine._ref_bytes(1, refine.GROUP))
    assert torch.allclose(refine_estimate(noisy, pilot, [15.0]), whole, atol=1e-3)


@pytest.mark.parametrize("dim", [0, 1])
def test_box_sums_are_the_sums_of_blocks_at_the_starts_asked_for(dim):
    t = torch.rand(30, 41, generator=torch.Generator().manual_seed(0)) * 255
    starts = torch.tensor([0, 3, 9, t.shape[dim] - refine.BLOCK])
    want = torch.stack([t.double().narrow(dim, int(i), refine.BLOCK).sum(dim) for i in starts], dim)
    assert torch.allclose(refine._box_sums(t, starts, dim).double(), want, rtol=1e-6)


def test_matching_many_reference_rows_at_once_gives_the_same_result(monkeypatch):
    clean = _camera(48)
    noisy, pilot = _noisy(clean, 15), _noisy(clean, 5, seed=1)
    whole = refine_estimate(noisy, pilot, [15.0])
    monkeypatch.setattr(refine, "MATCH_ROWS", 1)
    monkeypatch.setattr(refine, "CHUNK_BYTES", 1)  # one row matched and filtered at a time
    assert torch.allclose(refine_estimate(noisy, pilot, [15.0]), whole, atol=1e-4)


def test_the_memory_plan_counts_its_working_set():
    cfg = evo.get_preset("fast").replace(
        patch_size=4, chunk_size=256, refine_mix=0.0, refine_coarse_mix=0.0, refine_joint=False
    )
    shape = (3, 3000, 40_000)  # matching a few rows of references is over the chunk size
    args = (shape, False, 1024, 1024, torch.device("cpu"), None)
    on = memory.check_fits(cfg, *args)
    off = memory.check_fits(cfg.replace(second_stage="off"), *args)
    assert on - off == refine.working_bytes(3, 40_000) - memory._working_set(cfg, 48)
    assert refine.working_bytes(3, 40_000) > refine.CHUNK_BYTES


@pytest.mark.parametrize("width", [40_000, 100_000])
@pytest.mark.parametrize("step", [1, refine.STEP])
def test_the_working_set_covers_both_reference_grids(width, step):
    need = refine.working_bytes(3, width, step=step)
    for grid in (step, step + 1):  # the Wiener filter's and step 0's
        assert need >= refine._match_bytes(width, grid)
    assert need >= refine._ref_bytes(3, refine.GROUP_NOISY) and need >= refine.CHUNK_BYTES
    assert need > refine.working_bytes(3, width, step=step + 1)  # a denser grid needs more
    assert len(refine._grid(100, refine.STEP + 1, torch.device("cpu"))) == 26  # 0, 4, …, 96, 99


@pytest.mark.parametrize("mix", [0.0, 0.5])
def test_a_denser_grid_of_references_averages_more_and_gains(mix):
    clean = _camera(64)
    noisy, pilot = _noisy(clean, 25), _noisy(clean, 8, seed=1)
    dense, sparse = (refine_estimate(noisy, pilot, [25.0], mix=mix, step=s) for s in (1, 3))
    assert _mse(dense, clean) < 0.99 * _mse(sparse, clean)


def test_the_quality_preset_takes_every_reference_and_the_plan_counts_it():
    fast, quality = evo.get_preset("fast"), evo.get_preset("quality")
    assert (fast.refine_step, quality.refine_step) == (refine.STEP, 1)
    args = ((3, 512, 2000), False, 1024, 1024, torch.device("cpu"), None)
    dense = memory.check_fits(fast.replace(patch_size=4, refine_step=1), *args)
    assert dense > memory.check_fits(fast.replace(patch_size=4), *args)


def _tiny(**settings):
    tiny = dict(patch_size=4, n_latents=8, hidden=(16,), n_states=8, n_parents=2, n_children=2,
                epochs=4, min_visits=0, grad_states=4)  # fmt: skip
    return evo.get_preset("fast").replace(**{**tiny, **settings})


def test_denoise_runs_it_by_default_and_it_gains():
    clean = _camera() / 255
    noisy = _noisy(clean, 25 / 255).numpy()[0]
    on, res = evo.denoise(noisy, sigma=25 / 255, config=_tiny(), seed=0)
    off, _ = evo.denoise(noisy, sigma=25 / 255, config=_tiny(second_stage="off"), seed=0)
    assert evo.get_preset("fast").second_stage == "wiener" and res.config.second_stage == "wiener"
    assert psnr(clean.numpy()[0], on) > psnr(clean.numpy()[0], off) + 0.3


def test_inpainting_is_left_alone():
    clean = (_camera(32) / 255).numpy()[0]
    mask = np.random.default_rng(0).random(clean.shape) < 0.3
    cfg = _tiny(epochs=1)
    on, _ = evo.inpaint(clean, mask, config=cfg, seed=0)
    off, _ = evo.inpaint(clean, mask, config=cfg.replace(second_stage="off"), seed=0)
    assert np.array_equal(on, off)


def _plan(x: torch.Tensor, sigma, missing=None, **settings):
    from evodenoise.plan import plan_run

    return plan_run(_tiny(**settings), x, missing, sigma, opponent=False)


def _plan_stage(x: torch.Tensor, sigma, missing=None) -> str:
    return _plan(x, sigma, missing).config.second_stage


def test_the_plan_runs_it_on_noise_of_a_known_sigma_and_kind():
    from evodenoise.plan import CORRELATED_STAGE

    clean = _camera(96)
    white = _noisy(clean, 15)
    blurred = torch.nn.functional.avg_pool2d(_noisy(clean, 30)[None], 3, 1, 1)[0]  # correlated
    assert _plan_stage(white, None) == "wiener"  # σ estimated, the noise measured white
    assert _plan(white, None).stage_sigma == 1.0
    assert _plan_stage(blurred, 15.0) == "wiener"  # σ given: the user vouches for it
    assert _plan(blurred, 15.0).stage_sigma == 1.0
    # σ estimated from correlated noise (camera photos): at a higher σ than the models'
    correlated = _plan(blurred, None)
    assert correlated.correlated and correlated.config.second_stage == "wiener"
    assert correlated.stage_sigma == CORRELATED_STAGE > 1
    assert _plan(blurred, None, noise_level="learned").config.second_stage == "off"
    assert _plan_stage(white, 15.0, missing=torch.zeros_like(white, dtype=torch.bool)) == "off"


def test_the_plan_leaves_noise_that_grows_with_the_signal_to_the_model():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(5, 250, 96).repeat(96, 1)[None]  # (1, 96, 96)
    counts = torch.poisson(ramp / 4, generator=g) * 4  # photon noise, variance 4·mean
    assert _plan_stage(_noisy(ramp, 10), None) == "wiener"
    assert _plan_stage(counts, None) == "off"
    assert _plan_stage(counts, 10.0) == "wiener"  # σ given: the user vouches for it


def test_after_the_anscombe_transform_where_its_sigma_reads_true():
    from evodenoise.plan import STARVED_PHOTONS, plan_run

    white = _noisy(_camera(96), 15)  # as if transformed: white noise of σ 15

    def stage(photons, sigma):
        plan = plan_run(_tiny(), white, None, sigma, opponent=False, photons=photons)
        return plan.config.second_stage

    assert stage(10.0, 15.0) == "wiener"  # the noise reads the transform's σ
    assert stage(10.0, 30.0) == "off"  # it reads half: the level function is off
    assert stage(STARVED_PHOTONS, 30.0) == "wiener"  # scarcest photons: whatever it reads
    assert stage(STARVED_PHOTONS + 0.1, 30.0) == "off"


def test_after_the_anscombe_transform_it_gains_on_photon_counts():
    clean = (_camera(96) / 255).numpy()[0]
    for peak in (2.0, 30.0):  # photons at white
        g = np.random.default_rng(int(peak))
        counts = (g.poisson(clean * peak) / peak).astype(np.float32)
        cfg = _tiny(noise_model="poisson-gaussian")
        on, res = evo.denoise(counts, None, config=cfg, seed=0)
        off, _ = evo.denoise(counts, None, config=cfg.replace(second_stage="off"), seed=0)
        assert res.config.noise_model == "poisson-gaussian"
        assert res.config.second_stage == "wiener"
        assert psnr(clean, on) > psnr(clean, off) + 0.2, peak


def test_on_correlated_noise_it_runs_and_gains():
    clean = data.astronaut()[100:228, 150:278].astype(np.float32) / 255  # (128, 128, 3)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, 130, 130, generator=g) * 30 / 255
    noise = torch.nn.functional.avg_pool2d(noise, 3, 1, 0)[0].permute(1, 2, 0).numpy()
    noisy = (clean + noise).astype(np.float32)  # neighbours' noise correlated, σ unknown
    on, res = evo.denoise(noisy, None, config=_tiny(), seed=0)
    off, _ = evo.denoise(noisy, None, config=_tiny(second_stage="off"), seed=0)
    assert res.config.second_stage == "wiener"
    assert psnr(clean, on) > psnr(clean, off) + 1.0


def test_step_zero_alone_ignores_the_model_s_estimate_and_removes_noise():
    clean = _camera()
    noisy = _noisy(clean, 25)
    good, poor = _noisy(clean, 4, seed=1), _noisy(clean, 40, seed=2)
    alone = refine_estimate(noisy, good, [25.0], mix=1.0)
    assert torch.equal(alone, refine_estimate(noisy, poor, [25.0], mix=1.0))
    assert _mse(alone, clean) < 0.1 * _mse(noisy, clean)


def test_a_pilot_mixed_with_step_zero_beats_the_pilot_alone():
    # a pilot with errors of its own, independent of the noise's: averaging in a second
    # estimate of the input (hard thresholding) gives the Wiener filter a better pilot
    clean = _camera(96)
    noisy = _noisy(clean, 25)
    pilot = _noisy(clean, 12, seed=1)
    alone, mixed = (refine_estimate(noisy, pilot, [25.0], mix=m) for m in (0.0, 0.5))
    assert _mse(mixed, clean) < 0.9 * _mse(alone, clean)


@pytest.mark.parametrize("n, wavelet", [(8, "bior1.5"), (16, "haar"), (8, None), (12, "haar")])
def test_each_transform_is_inverted_and_keeps_white_noise_at_sigma(n, wavelet):
    forward, inverse = refine._transform(n, wavelet, torch.device("cpu"))
    assert torch.allclose(inverse @ forward, torch.eye(n), atol=1e-5)
    assert torch.allclose(forward.square().sum(1), torch.ones(n), atol=1e-6)  # unit rows
    if wavelet != "bior1.5":  # the DCT (also for a group that is not a power of two long)
        assert torch.allclose(inverse, forward.T, atol=1e-6)  #   and Haar are orthonormal
    if n == 12:
        assert torch.equal(forward, refine._dct(12, torch.device("cpu")))


def test_step_zero_s_wavelet_keeps_edges_better_than_a_dct(monkeypatch):
    # hard thresholds keep a step edge in fewer coefficients of the biorthogonal wavelet
    clean = _camera(96)
    noisy = _noisy(clean, 25)
    wavelet = refine._filter(noisy, None, torch.tensor([25.0]))
    monkeypatch.setattr(refine, "WAVELET0", None)  # the DCT
    dct = refine._filter(noisy, None, torch.tensor([25.0]))
    assert _mse(wavelet, clean) < 0.95 * _mse(dct, clean)


def test_step_zero_runs_only_on_white_gaussian_noise():
    from evodenoise.plan import plan_run

    cfg = evo.get_preset("fast")
    g = torch.Generator().manual_seed(0)
    white = torch.full((1, 64, 64), 128.0) + 10 * torch.randn(1, 64, 64, generator=g)
    assert cfg.refine_mix > 0
    assert plan_run(cfg, white, None, 10.0, opponent=False).config.refine_mix == cfg.refine_mix
    assert plan_run(cfg, white, None, None, opponent=False).config.refine_mix == cfg.refine_mix
    blurred = torch.nn.functional.avg_pool2d(white[None] - 128, 3, 1, 1)[0] * 3 + 128
    assert plan_run(cfg, blurred, None, None, opponent=False).config.refine_mix == 0.0
    transformed = plan_run(cfg, white, None, 1.0, opponent=False, photons=10.0)
    assert transformed.config.refine_mix == 0.0
    assert transformed.config.refine_coarse_mix == 0.0  # nor in the halved scales' pilot,
    camera = plan_run(cfg, blurred, None, None, opponent=False)  # but on correlated noise
    assert camera.config.refine_coarse_mix == cfg.refine_coarse_mix > 0  # it is


def test_training_is_shorter_only_where_step_zero_shares_the_pilot():
    from evodenoise.plan import plan_run
    from evodenoise.presets import resolve_config

    fast = evo.get_preset("fast")
    short = fast.mixed_pilot_epochs
    assert 0 < short < fast.epochs
    white = _noisy(torch.full((1, 64, 64), 128.0), 10)  # (too small for raised epochs)
    for sigma in (10.0, None):  # white Gaussian noise, given or estimated: the mixed pilot
        cfg = plan_run(fast, white, None, sigma, opponent=False).config
        assert (cfg.epochs, cfg.min_visits) == (short, fast.min_visits * short // fast.epochs)
    blurred = torch.nn.functional.avg_pool2d(white[None] - 128, 3, 1, 1)[0] * 3 + 128
    camera = plan_run(fast, blurred, None, None, opponent=False).config  # correlated noise:
    assert camera.refine_coarse_mix > 0 and camera.epochs == fast.epochs  # step 0 at half scale
    transformed = plan_run(fast, white, None, 1.0, opponent=False, photons=10.0)
    assert transformed.config.epochs == fast.epochs  # the model's estimate alone: trained fully
    off = plan_run(fast.replace(second_stage="off"), white, None, 10.0, opponent=False)
    assert off.config.epochs == fast.epochs
    missing = torch.zeros_like(white, dtype=torch.bool)
    missing[:, ::3] = True
    assert plan_run(fast, white, missing, None, opponent=False).config.epochs == fast.epochs
    for told in (resolve_config("fast", epochs=12), fast.replace(epochs=12)):
        # an epoch count asked for is the one that runs
        assert plan_run(told, white, None, 10.0, opponent=False).config.epochs == 12
    quick = evo.get_preset("quick")
    assert plan_run(quick, white, None, 1.0, opponent=False, photons=10.0).config.epochs == 4


def test_the_search_is_narrower_after_the_anscombe_transform():
    from evodenoise.plan import TRANSFORMED_SEARCH, plan_run

    cfg = evo.get_preset("fast")
    white = _noisy(torch.full((1, 64, 64), 128.0), 10)
    assert plan_run(cfg, white, None, 10.0, opponent=False).config.refine_search == refine.SEARCH
    transformed = plan_run(cfg, white, None, 1.0, opponent=False, photons=10.0)
    assert transformed.config.refine_search == TRANSFORMED_SEARCH < refine.SEARCH


@pytest.mark.parametrize("search", [3, 12, refine.SEARCH])
def test_blocks_are_matched_within_the_search_and_the_nearest_first(monkeypatch, search):
    matched = []
    match = refine._match
    monkeypatch.setattr(refine, "_match", lambda *a: matched.append((a[1:3], match(*a))) or
                        matched[-1][1])  # fmt: skip
    clean = _camera(48)
    refine_estimate(_noisy(clean, 25), clean, [25.0], scales=1, search=search)
    for (ri, rj), top in matched:
        ref = (ri[:, None] * 48 + rj[None]).flatten()  # (R,) each reference's top-left pixel
        dy, dx = top // 48 - (ref // 48)[:, None], top % 48 - (ref % 48)[:, None]  # (R, k)
        assert int(dy.abs().max()) <= search and int(dx.abs().max()) <= search
        assert torch.equal(top[:, 0], ref)  # each reference first in its own group
    assert max(int(t.shape[1]) for _, t in matched) == min(refine.GROUP, (search + 1) ** 2)


def test_the_mixed_pilot_is_counted_in_the_memory_estimate():
    cfg = evo.get_preset("fast").replace(patch_size=4)
    args = ((3, 512, 512), False, 1000, 1000, torch.device("cpu"), None)
    image = 3 * 512 * 512 * memory.FLOAT
    cfg = cfg.replace(refine_joint=False)
    without = memory.check_fits(cfg.replace(refine_mix=0.0, refine_coarse_mix=0.0), *args)
    same = memory.check_fits(cfg.replace(refine_coarse_mix=cfg.refine_mix), *args)
    assert same - without == image  # the mixed pilot
    assert cfg.refine_coarse_mix != cfg.refine_mix  # and the halved scales' own, two quarters
    assert memory.check_fits(cfg, *args) - without == 1.5 * image
    joint = cfg.replace(refine_mix=0.0, refine_coarse_mix=0.0, refine_joint=True)
    assert memory.check_fits(joint, *args) - without == image  # step 0, a pilot of its own
    both = memory.check_fits(cfg.replace(refine_joint=True), *args)  # and the mixed pilot
    assert both - without == 2.5 * image


@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_a_flat_plane_comes_back_flat_whatever_the_pilot(mix):
    # every block of a flat plane is as near as any other: each reference must still be in
    # its own group, or pixels would be left out of every group
    flat = torch.full((1, 16, 16), 7.0)
    out = refine_estimate(flat, flat, [1e-3], mix=mix)
    assert torch.allclose(out, flat)


def _watch_filter(monkeypatch):
    """(noisy, model estimate, σ, step 0's estimate, the pilots each call of ``_filter`` gets
    from now on) on a camera crop at σ = 25."""
    clean = _camera(64)
    noisy, model = _noisy(clean, 25), _noisy(clean, 6, seed=1)
    s = torch.tensor([25.0])
    step0 = refine._filter(noisy, None, s)
    seen: list = []
    real = refine._filter
    monkeypatch.setattr(refine, "_filter", lambda x, p, *a: seen.append(p) or real(x, p, *a))
    return noisy, model, s, step0, seen


def test_the_halved_scales_take_their_own_share_of_step_zero(monkeypatch):
    noisy, model, s, step0, seen = _watch_filter(monkeypatch)
    out = refine_estimate(noisy, model, s, scales=2, mix=0.5, coarse_mix=0.75)
    (fine,), (coarse,) = seen[1], seen[2]  # step 0 first (no pilot), then the two scales
    assert seen[0] is None
    assert torch.allclose(fine, model.lerp(step0, 0.5), atol=1e-3)
    assert torch.allclose(coarse, refine._halve(model.lerp(step0, 0.75)), atol=1e-3)
    same = refine_estimate(noisy, model, s, scales=2, mix=0.5, coarse_mix=0.5)
    assert torch.equal(same, refine_estimate(noisy, model, s, scales=2, mix=0.5))
    assert not torch.equal(out, same)
    seen.clear()  # the half scale's share alone (camera noise): the image's scale keeps the model
    refine_estimate(noisy, model, s, scales=2, mix=0.0, coarse_mix=0.75)
    assert seen[0] is None and torch.equal(seen[1][0], model)
    assert torch.allclose(seen[2][0], refine._halve(model.lerp(step0, 0.75)), atol=1e-3)


def test_joint_filters_with_each_pilot_at_every_scale(monkeypatch):
    noisy, model, s, step0, seen = _watch_filter(monkeypatch)
    refine_estimate(noisy, model, s, scales=2, joint=True)
    assert seen[0] is None and len(seen) == 3  # step 0, then both pilots at each scale
    assert torch.equal(seen[1][0], model) and torch.allclose(seen[1][1], step0)
    assert torch.allclose(seen[2][0], refine._halve(model), atol=1e-3)
    assert torch.allclose(seen[2][1], refine._halve(step0), atol=1e-3)
    seen.clear()  # with a mixed pilot and the halved scales' own share: those and step 0
    refine_estimate(noisy, model, s, scales=2, mix=0.5, coarse_mix=0.75, joint=True)
    assert torch.allclose(seen[1][0], model.lerp(step0, 0.5), atol=1e-3)
    assert torch.allclose(seen[1][1], step0)
    assert torch.allclose(seen[2][0], refine._halve(model.lerp(step0, 0.75)), atol=1e-3)
    assert torch.allclose(seen[2][1], refine._halve(step0), atol=1e-3)


def test_joint_beats_either_pilot_where_they_are_about_as_good():
    # a pilot whose error is about as large as step 0's but independent of it: aggregating
    # both pilots' groups must gain over each alone
    clean = _camera(96)
    noisy, pilot = _noisy(clean, 25), _noisy(clean, 14, seed=1)
    step0 = refine._filter(noisy, None, torch.tensor([25.0]))
    alone = _mse(refine_estimate(noisy, pilot, [25.0]), clean)
    other = _mse(refine_estimate(noisy, step0, [25.0]), clean)
    joint = _mse(refine_estimate(noisy, pilot, [25.0], joint=True), clean)
    assert max(alone, other) < 1.2 * min(alone, other)  # (the premise)
    assert joint < 0.95 * min(alone, other)


@pytest.mark.parametrize("mix", [0.0, 0.5])
def test_joint_keeps_a_flat_plane_flat_and_any_shape_whole(mix):
    flat = torch.full((1, 16, 16), 7.0)
    assert torch.allclose(refine_estimate(flat, flat, [1e-3], mix=mix, joint=True), flat)
    x = _noisy(torch.full((2, 9, 23), 100.0), 10)
    out = refine_estimate(x, x, [10.0, 10.0], mix=mix, joint=True)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


def test_the_plan_keeps_two_pilots_after_the_anscombe_transform_only():
    from evodenoise.plan import plan_run

    cfg = evo.get_preset("fast")
    assert cfg.refine_joint and evo.get_preset("quality").refine_joint
    g = torch.Generator().manual_seed(0)
    white = torch.full((1, 64, 64), 128.0) + 10 * torch.randn(1, 64, 64, generator=g)
    blurred = torch.nn.functional.avg_pool2d(white[None] - 128, 3, 1, 1)[0] * 3 + 128
    for plane, sigma in ((white, 10.0), (white, None), (blurred, None), (blurred, 10.0)):
        planned = plan_run(cfg, plane, None, sigma, opponent=False).config
        assert planned.second_stage == "wiener" and not planned.refine_joint
    transformed = plan_run(cfg, white, None, 1.0, opponent=False, photons=10.0).config
    assert transformed.second_stage == "wiener" and transformed.refine_joint
    assert transformed.refine_mix == 0.0 and transformed.epochs == cfg.epochs  # (16 epochs)
    off = cfg.replace(refine_joint=False)  # a preset without it: one pilot there too
    assert not plan_run(off, white, None, 1.0, opponent=False, photons=10.0).config.refine_joint
