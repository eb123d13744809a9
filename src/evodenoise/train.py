"""Training by evolutionary truncated-posterior EM: the epoch loop.

Per epoch: shuffle the patches; for each E-step batch evolve its states (E-step,
``evolution.py``), then for each mini-batch in it one Adam step on the decoder maximising
Σ_n logsumexp_{s∈K_n} log p(y_n, s) (the truncated free energy, K fixed; ``mstep.py``). π and
σ² are updated in closed form at the end of the epoch from the posterior statistics gathered
by that epoch's E-steps (``mstep.PosteriorStats``).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import Config
from .device import EngineWarning
from .evolution import draw_noise, estep, estep_part
from .model import Constants, Model, as_rows
from .mstep import PosteriorStats, add_estep_sums, learning_rate, make_adam, mstep
from .parallel import map_rows, n_parts
from .plan import use_compile
from .states import init_states, unpack

MIN_SIGMA2 = 1e-12  # a fixed σ² below this (in y's units) is taken as this: no float32 overflow


def _estep(
    model: Model,
    y: torch.Tensor,
    obs: torch.Tensor | None,
    states: torch.Tensor,
    noise: torch.Tensor | None,
    consts,
    w: torch.Tensor,
    acc: torch.Tensor,
    cfg: Config,
    split: bool,
):
    """E-step of one (padded) E-batch: new states (B, S, W), unpacked (B, S, H), and their
    log-joints less a constant per point (B, S, 1); adds the batch's weighted posterior sums
    (w (B, 1), 0 for padding rows) to ``acc`` (see :func:`mstep.add_estep_sums`). ``split``:
    the rows split over the run's CPU threads (``parallel.py``; not compiled), each thread
    unpacking its own part too. The sums are added once, over the whole batch."""

    def part(r: slice):
        e = estep_part(r, model, y, obs, states, noise, consts, cfg)
        return e.states, e.score, unpack(e.states, cfg.n_latents, e.score.dtype)

    if split and n_parts(y.shape[0]) > 1:
        new, lj, bits = (torch.cat(t) for t in zip(*map_rows(part, y.shape[0])))
    else:
        e = estep(model, y, obs, states, noise, consts, cfg)
        new, lj = e.states, e.score
        bits = unpack(new, cfg.n_latents, lj.dtype)
    add_estep_sums(acc, lj, bits, w)
    return new, bits, lj.unsqueeze(2)


def _engine(cfg: Config, device: torch.device, steps: int = 0):
    """The E-step and M-step functions of a run: eager (the E-step's rows split over the run's
    CPU threads, ``parallel.py``), or compiled whole (``fullgraph=True, dynamic=False``) when
    ``cfg.compile`` says so. On CUDA the compiled E-batch (E-step, write-back, Adam steps) is
    then captured as one CUDA graph (:func:`_replay`)."""
    est: Callable = functools.partial(_estep, cfg=cfg, split=True)
    mst: Callable = mstep
    if use_compile(cfg, device, steps):
        est = functools.partial(_estep, cfg=cfg, split=False)
        # Every run (config, shapes) compiles its own graphs of the same two functions: allow
        # many runs per process (fullgraph turns the default limit of 8 into an error).
        dyn = torch._dynamo.config
        limit = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
        setattr(dyn, limit, max(getattr(dyn, limit), 256))
        est = torch.compile(est, fullgraph=True, dynamic=False)
        mst = torch.compile(mst, fullgraph=True, dynamic=False)
    return est, mst


@dataclass
class Fit:
    """A trained model with each patch's state set K (packed, best first), and the config it was
    trained with."""

    model: Model
    states: torch.Tensor  # (N, S, W) int64
    config: Config  # as trained: ``compile`` "on" only if the compiled path ran to the end
    log: list[dict] = field(default_factory=list)


@dataclass
class _Run:
    """What a training run keeps between epochs (see :func:`fit`). The tensors keep their
    addresses for the whole run, so that a chunk of E-batches can be captured once as a CUDA
    graph and replayed. Per-row tables cover an epoch's E-batches one after another
    (E-batches · e_batch rows); ``pos``, the rows of the current E-batch, lives on the device."""

    model: Model
    opt: torch.optim.Optimizer
    params: list
    schedule: torch.Tensor  # (epochs · steps + per_e,) every Adam step's learning rate
    lr_pos: torch.Tensor  # (rows,) row j·e_batch + m (m < per_e): the epoch's step j·per_e + m
    lr: torch.Tensor  # (rows,) this epoch's learning rates at those rows
    buf: torch.Tensor  # (N + 1, S, W) states; row N takes the padding rows' writes
    weight: torch.Tensor  # (rows, 1) 1 for real rows, 0 for padding
    share: torch.Tensor  # (rows, 1) weight / Σ weight of the row's mini-batch
    wn: torch.Tensor  # (rows, 1, 1) share · 2/(2σ²) of this epoch (the M-step's weights)
    read: torch.Tensor  # (rows,) patch read by each row (padding: patch 0)
    write: torch.Tensor  # (rows,) buffer row written (padding: N)
    consts: Constants  # Model.constants() of this epoch
    sums: torch.Tensor  # (1, H + 2) this epoch's E-step sums (see _estep)
    d_sum: torch.Tensor  # Σ_n D_n over the trained patches
    noise: torch.Tensor | None  # (K, ...) random numbers of the next K E-batches (draw_noise)
    pos: torch.Tensor  # (e_batch,) the rows of the current E-batch
    estep: Callable
    mstep: Callable
    cfg: Config
    n_train: int
    steps: int
    compiled: bool  # the E-step and M-step run through torch.compile
    capture: bool  # CUDA: replay each chunk of K E-batches as one CUDA graph
    graphs: dict = field(default_factory=dict)


def _make_run(
    model: Model,
    y: torch.Tensor,
    obs: torch.Tensor | None,
    cfg: Config,
    gen: torch.Generator,
    n_train: int,
    steps: int,
    e_batch: int,
) -> _Run:
    n, device = y.shape[0], y.device
    params = list(model.decoder.parameters())
    buf = init_states(n + 1, cfg.n_states, cfg.n_latents, gen, device)  # row n: padding's
    # Static shapes: every E-batch has e_batch rows and every mini-batch batch_size rows; the
    # padding rows (read patch 0, written to the spare row n) weigh 0. Mini-batches made only
    # of padding (in the last E-batch) are skipped: no Adam step, as before.
    e_batch = min(e_batch, steps * cfg.batch_size)
    per_e = e_batch // cfg.batch_size
    rows = math.ceil(steps / per_e) * e_batch
    r = torch.arange(rows, device=device)
    weight = (r < n_train).float()[:, None]
    mini = weight.view(-1, cfg.batch_size)  # per mini-batch
    share = (mini / mini.sum(1, keepdim=True).clamp(min=1)).view(rows, 1)
    lr_pos = torch.where(r % e_batch < per_e, r // e_batch * per_e + r % e_batch, 0)
    t = torch.arange(cfg.epochs * steps, dtype=torch.float64) / steps  # every Adam step's epoch
    spare = torch.full((per_e,), cfg.lr_min, dtype=torch.float64)  # never used
    schedule = torch.cat([learning_rate(t, cfg), spare]).to(device, torch.float32)
    k = math.ceil(8 / per_e)  # E-batches per chunk (per CUDA graph): >= 8 Adam steps
    noise = draw_noise(cfg, e_batch, device, gen)
    d_sum = (  # observed values (weight above 0)
        torch.tensor(float(n * y.shape[1]), device=device) if obs is None else (obs > 0).sum()
    ).to(y.dtype)
    lr = torch.full((rows,), cfg.lr_min, device=device)
    estep, mstep_fn = _engine(cfg, device, steps)
    return _Run(
        model=model,
        opt=make_adam(params, lr[0]),
        params=params,
        schedule=schedule,
        lr_pos=lr_pos,
        lr=lr,
        buf=buf,
        weight=weight,
        share=share,
        wn=torch.zeros_like(share)[..., None],
        read=torch.zeros(rows, dtype=torch.long, device=device),
        write=torch.full((rows,), n, dtype=torch.long, device=device),
        consts=Constants(*(c.clone() for c in model.constants())),
        sums=torch.zeros(1, cfg.n_latents + 2, device=device),
        d_sum=d_sum,
        noise=None if noise is None else noise.expand(k, *noise.shape).clone(),
        pos=torch.zeros(e_batch, dtype=torch.long, device=device),
        estep=estep,
        mstep=mstep_fn,
        cfg=cfg,
        n_train=n_train,
        steps=steps,
        compiled=use_compile(cfg, device, steps),
        capture=device.type == "cuda" and use_compile(cfg, device, steps),
    )


def _train_epoch(
    run: _Run, y: torch.Tensor, obs: torch.Tensor | None, epoch: int, gen: torch.Generator
) -> PosteriorStats:
    """One epoch of E-steps and Adam steps on y (N, 1, D), obs (N, 1, D) or None; its posterior
    sums for the closed-form M-step.

    No host-device sync and the same shapes in every step: E-batches of e_batch rows, padded
    (weight 0) at the end, mini-batches of batch_size rows; mini-batches of padding only are
    skipped (a count known on the host). The random numbers of K E-batches are drawn at once.
    """
    cfg, device = run.cfg, y.device
    e_batch = run.pos.shape[0]
    n_eb = run.read.shape[0] // e_batch
    per_e = e_batch // cfg.batch_size  # mini-batches per E-batch
    perm = torch.randperm(y.shape[0], generator=gen, device=device)[: run.n_train]
    run.read[: run.n_train] = perm  # each real row reads and writes its patch
    run.write[: run.n_train] = perm
    with torch.no_grad():
        for c, v in zip(run.consts, run.model.constants()):  # π, σ² change only between epochs
            c.copy_(v)
        torch.mul(run.share[..., None], 2 * run.consts.inv2s2, out=run.wn)
        torch.index_select(run.schedule, 0, run.lr_pos + epoch * run.steps, out=run.lr)
    run.sums.zero_()
    run.pos.copy_(torch.arange(e_batch, device=device))
    n_seen = 0
    k = 1 if run.noise is None else run.noise.shape[0]
    for j0 in range(0, n_eb, k):
        if run.noise is not None:
            draw_noise(cfg, e_batch, device, gen, out=run.noise)
        # Adam steps of each E-batch of the chunk
        n_m = tuple(min(per_e, run.steps - j * per_e) for j in range(j0, min(j0 + k, n_eb)))
        _run_chunk(run, y, obs, n_m)
        n_seen += min(k * e_batch, run.n_train - j0 * e_batch)
    return PosteriorStats(run.sums, run.consts, n_seen, run.d_sum)


def _run_chunk(run: _Run, y: torch.Tensor, obs: torch.Tensor | None, n_m: tuple[int, ...]):
    """:func:`_chunk` as the run's engine says: compiled, captured (CUDA) or eager. If compiling
    or capturing fails (no C++ compiler or Triton, an unsupported GPU, a driver quirk: the
    failure comes before the chunk changes any state), the run goes on eagerly with one
    :class:`EngineWarning`."""
    if not run.compiled:
        return _chunk(run, y, obs, n_m)
    try:
        return _replay(run, y, obs, n_m) if run.capture else _chunk(run, y, obs, n_m)
    except Exception as e:  # noqa: BLE001 (whatever the compiler raises)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        warnings.warn(
            EngineWarning(
                f"compiling the training step failed ({type(e).__name__}: {first}); "
                f"training goes on uncompiled"
            ),
            stacklevel=2,
        )
        run.estep, run.mstep = _engine(run.cfg.replace(compile="off"), y.device)
        run.compiled = run.capture = False
        return _chunk(run, y, obs, n_m)


@torch.no_grad()
def _chunk(run: _Run, y: torch.Tensor, obs: torch.Tensor | None, n_m: tuple[int, ...]) -> None:
    """E-batches run.pos … + len(n_m) − 1, each: its E-step, write-back and posterior sums,
    then its n_m[i] Adam steps. Rows come from the device's ``pos`` (no host value), so a
    chunk can be captured."""
    model, bs = run.model, run.cfg.batch_size
    e_batch = run.pos.shape[0]
    k = run.cfg.grad_states or run.cfg.n_states
    group = run.opt.param_groups[0]

    def part(t, m):  # mini-batch m of an E-batch's rows (all of them: no call)
        return t if e_batch == bs else t[m * bs : (m + 1) * bs]

    noises = (None,) * len(n_m) if run.noise is None else run.noise.unbind(0)
    for noise, steps in zip(noises, n_m):
        pos = run.pos
        idx, w, wn, lr = run.read[pos], run.weight[pos], run.wn[pos], run.lr[pos]
        yb = y[idx]
        ob = None if obs is None else obs[idx]
        new, bits, lj = run.estep(model, yb, ob, run.buf[idx], noise, run.consts, w, run.sums)
        run.buf[run.write[pos]] = new
        if k < bits.shape[1]:
            bits, lj = bits[:, :k], lj[:, :k]
        for m in range(steps):
            # the first mini-batch's log-joints are the E-step's (the decoder is unchanged)
            grads = run.mstep(
                model,
                part(yb, m),
                None if ob is None else part(ob, m),
                part(bits, m),
                part(lj, m) if m == 0 else None,
                part(wn, m),
                run.consts,
            )
            for p, g in zip(run.params, grads):
                p.grad = g  # replaced every step: no zeroing needed
            group["lr"] = lr[m]  # on the device: a captured graph reads its address
            run.opt.step()
        pos += e_batch


def _replay(run: _Run, y: torch.Tensor, obs: torch.Tensor | None, n_m: tuple[int, ...]) -> None:
    """:func:`_chunk` as a CUDA graph: the first chunk of each kind runs eagerly (compiling),
    the second captures, and from then on one launch replays the whole chunk."""
    graph = run.graphs.get(n_m)
    if graph is None:
        if n_m not in run.graphs.setdefault("warm", set()):
            run.graphs["warm"].add(n_m)
            return _chunk(run, y, obs, n_m)
        graph = run.graphs[n_m] = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _chunk(run, y, obs, n_m)
    graph.replay()


def fit(
    y: torch.Tensor,
    obs: torch.Tensor | None,
    cfg: Config,
    gen: torch.Generator,
    *,
    sigma: float | None = None,
    unit: float = 1.0,
    callback: Callable[[dict], None] | None = None,
) -> Fit:
    """Train on centred patches y (N, D) with observation mask obs (N, D) or None.

    ``sigma`` (in y's units): with ``cfg.sigma_mode == "fixed"`` σ stays there (even below
    ``cfg.sigma_floor``, which bounds only a learned σ), with ``"init"`` training starts there;
    None learns σ from the data's variance as a start. ``unit``: one
    unit of y in 0–255 units (y may be standardised); ``cfg.sigma_floor`` is converted with it.
    """
    n, d = y.shape
    floor2 = (cfg.sigma_floor / unit) ** 2
    if sigma is None:
        var = y.var() if obs is None else y[obs > 0].var()
        sigma2 = float(var)
    else:
        sigma2 = float(sigma) ** 2
    learn_sigma = sigma is None or cfg.sigma_mode == "init"
    # The floor keeps a learned σ from collapsing; a σ the user fixed is honoured however small
    # (far below the data's step it only means "change almost nothing"), bounded only where
    # float32 log-joints would overflow.
    sigma2 = max(sigma2, floor2) if learn_sigma else max(sigma2, MIN_SIGMA2)
    model = Model(cfg.n_latents, d, cfg.hidden, cfg.activation, sigma2, gen)
    # E-step batches hold whole mini-batches, so an epoch has exactly ceil(n / batch) steps.
    e_batch = math.ceil(max(cfg.estep_batch, cfg.batch_size) / cfg.batch_size) * cfg.batch_size
    steps = math.ceil(n / cfg.batch_size)
    run = _make_run(model, y, obs, cfg, gen, n, steps, e_batch)
    result = Fit(model, run.buf[:n], cfg)
    for epoch in range(cfg.epochs):
        result.log.append(_epoch(run, y, obs, epoch, gen, floor2 if learn_sigma else None))
        if callback is not None:
            callback(result.log[-1])
    result.config = cfg.replace(compile="on" if run.compiled else "off")  # the path that ran
    return result


def _epoch(run: _Run, y, obs, epoch: int, gen, floor2: float | None) -> dict:
    """One training epoch, then π (and σ², learned: ``floor2`` its floor) in closed form; the
    epoch's log entry."""
    t0 = time.perf_counter()
    model, cfg = run.model, run.cfg
    stats = _train_epoch(run, as_rows(y), None if obs is None else as_rows(obs), epoch, gen)
    with torch.no_grad():
        model.pi.copy_(stats.pi())
        if floor2 is not None:
            model.sigma2.copy_(stats.sigma2(floor2))
    return {
        "epoch": epoch + 1,
        "epochs": cfg.epochs,
        "free_energy": float(stats.f / stats.n),
        "sigma": float(model.sigma2.sqrt()),
        "mean_active": float(model.pi.sum()),
        "lr": float(learning_rate(epoch + 1, cfg)),
        "seconds": time.perf_counter() - t0,
    }
