"""Multistep samplers (dpmpp_2m, dpmpp_2m_sde, unipc) against diffusers, whole trajectories, per-frame levels.

The oracle is diffusers' ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` (solver_order 2,
final sigma 0). Two things are fed to it from our side, on purpose:

- its sigma table: diffusers derives it from a float32 cumprod of the betas; we give it the same table
  from our float64 alphas_cumprod (stored in float32 for the float32 runs, as diffusers stores it), so
  the comparison is of the solvers (the tables themselves are checked in test_noise_schedules.py);
- for float64 DPM-Solver++ its update functions are driven directly, because ``step()`` casts the
  sample to float32; the order rule driven here is step()'s (first order at the first and last step).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.core.sampling import sample_loop
from fvdm.core.tensor import append_dims

diffusers = pytest.importorskip("diffusers")

T = 1000
SHAPE = (2, 3, 2, 4, 4)  # (B, F, C, H, W)


@pytest.fixture(scope="module")
def P():
    return load_plugins(entry_points=False)


def schedule(P, prediction):
    return P["noise_schedules"].build({"name": "ddpm", "learn_sigma": False, "prediction": prediction})


ABAR = None  # our float64 alphas_cumprod (the default linear schedule), filled by the fixture


@pytest.fixture(scope="module", autouse=True)
def _abar(P):
    global ABAR
    ABAR = P["noise_schedules"].build({"name": "ddpm", "learn_sigma": False})._cpu["alphas_cumprod"]


def net(x: torch.Tensor, n: torch.Tensor, prediction: str) -> torch.Tensor:
    """A fixed nonlinear 'model', elementwise in x and the frame's step n (B, F): frames stay independent.

    Its data prediction tanh(alpha x + 0.3 sigma sin 3x) is bounded, as a trained model's is, so
    trajectories stay O(1) and absolute tolerances mean what they say; it is returned as epsilon or v.
    """
    abar = append_dims(ABAR[n.long()], x.ndim).to(x.dtype)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x0 = torch.tanh(a * x + 0.3 * s * torch.sin(3.0 * x))
    eps = (x - a * x0) / s
    return eps if prediction == "epsilon" else a * eps - s * x0


def ours(P, name, prediction, dtype, S, x, seed=7, callback=None):
    sch = schedule(P, prediction)
    sampler = P["samplers"].build(name)
    model_fn = lambda x, t: net(x, sch.timestep_input(t), prediction)  # noqa: E731
    return sample_loop(model_fn, x.clone(), S, sampler=sampler, schedule=sch,
                       generator=torch.Generator().manual_seed(seed), callback=callback)


def sigma_table(P, prediction, timesteps, dtype) -> torch.Tensor:
    """diffusers' sigmas sqrt((1 - abar) / abar) at ``timesteps`` then 0, from our float64 alphas_cumprod."""
    abar = schedule(P, prediction).abar(torch.as_tensor(np.asarray(timesteps) / (T - 1))[None])[0].numpy()
    return torch.from_numpy(np.append(np.sqrt((1 - abar) / abar), 0.0)).to(dtype)


def make_scheduler(name, prediction):
    pred = {"epsilon": "epsilon", "v": "v_prediction"}[prediction]
    if name == "unipc":
        return diffusers.UniPCMultistepScheduler(num_train_timesteps=T, beta_schedule="linear", prediction_type=pred,
                                                 solver_order=2)
    algo = "sde-dpmsolver++" if name == "dpmpp_2m_sde" else "dpmsolver++"
    return diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule="linear", prediction_type=pred,
                                                 algorithm_type=algo, solver_order=2, solver_type="midpoint")


def reference(P, name, prediction, timesteps, x, dtype, noises=None, seed=7):
    """diffusers' trajectory on ``x`` over integer ``timesteps`` (then clean); noises: one per step (SDE)."""
    sched = make_scheduler(name, prediction)
    sched.set_timesteps(len(timesteps))
    sched.timesteps = torch.as_tensor(np.asarray(timesteps), dtype=torch.int64)
    sched.sigmas = sigma_table(P, prediction, timesteps, torch.float32 if dtype == torch.float32 else torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = x.clone()
    for i, ts in enumerate(sched.timesteps):
        out = net(x, torch.full(x.shape[:2], float(ts)), prediction)
        if name == "unipc" or dtype == torch.float32:
            kw = {"generator": g} if name == "dpmpp_2m_sde" and noises is None else {}
            if name == "dpmpp_2m_sde" and noises is not None:
                kw = {"variance_noise": noises[i]}
            x = sched.step(out, ts, x, **kw).prev_sample
            continue
        sched._step_index = i  # float64 DPM-Solver++: step()'s dispatch on the update functions
        m = sched.convert_model_output(out, sample=x)
        sched.model_outputs = [sched.model_outputs[-1], m]
        noise = None
        if name == "dpmpp_2m_sde":
            noise = noises[i] if noises is not None else torch.randn(x.shape, generator=g, dtype=x.dtype)
        if i == 0 or i == len(timesteps) - 1:
            x = sched.dpm_solver_first_order_update(m, sample=x, noise=noise)
        else:
            x = sched.multistep_dpm_solver_second_order_update(sched.model_outputs, sample=x, noise=noise)
    return x


SOLVERS = ["dpmpp_2m", "dpmpp_2m_sde", "unipc"]


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_synchronized_trajectory_equals_diffusers(P, name, prediction, steps, dtype, tol):
    sched = make_scheduler(name, prediction)
    sched.set_timesteps(steps)
    timesteps = sched.timesteps.numpy()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=dtype)
    levels = torch.tensor(list(timesteps / (T - 1)) + [0.0])
    S = levels[:, None].expand(-1, SHAPE[1]).contiguous()  # (K+1, F): every frame at one level
    got = ours(P, name, prediction, dtype, S, x)
    want = reference(P, name, prediction, timesteps, x, dtype)
    assert got.dtype == dtype
    assert (got - want).abs().max().item() < tol


def per_frame_matrix() -> tuple[torch.Tensor, list[list[int]]]:
    """(rows, F=4) levels and each frame's own timestep sequence: context at 0, a standard 10-step column,
    a late-starting column on another grid, and an irregular column that waits between steps."""
    rng = np.random.default_rng(3)
    seqs = [[],
            [999, 899, 799, 699, 599, 500, 400, 300, 200, 100],
            [999, 857, 714, 571, 428, 285, 142],
            sorted(rng.choice(np.arange(1, 999), 8, replace=False).tolist() + [999], reverse=True)]
    rows = 16
    cols = []
    for j, seq in enumerate(seqs):
        if not seq:
            cols.append([0.0] * (rows + 1))
            continue
        levels = [n / (T - 1) for n in seq] + [0.0]
        start = {1: 0, 2: 5, 3: 1}[j]
        moves = sorted(rng.choice(np.arange(start + 1, rows + 1), len(levels) - 1, replace=False).tolist())
        col, k = [], 0
        for r in range(rows + 1):
            while k + 1 < len(levels) and k < len(moves) and r >= moves[k]:
                k += 1
            col.append(levels[k])
        cols.append(col)
    return torch.tensor(cols, dtype=torch.float32).T.contiguous(), seqs


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_per_frame_levels_equal_diffusers_per_frame(P, name, prediction):
    S, seqs = per_frame_matrix()
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noises, frames = [], []

    def record(info):  # the SDE noise each row drew, and every frame after every row
        frames.append(info["x"].clone())

    if name == "dpmpp_2m_sde":  # the sampler draws one Gaussian of x's shape per step that moves a frame
        g = torch.Generator().manual_seed(7)
        moving_rows = [k for k in range(S.shape[0] - 1) if not torch.equal(S[k], S[k + 1])]
        noises = {k: torch.randn(x.shape, generator=g, dtype=x.dtype) for k in moving_rows}
    got = ours(P, name, prediction, torch.float64, S, x, callback=record)
    for f, seq in enumerate(seqs):
        prev = x[:, f]
        for k in range(S.shape[0] - 1):  # a frame that waits comes back bit-identical
            if S[k, f] == S[k + 1, f]:
                assert torch.equal(frames[k][:, f], prev)
            prev = frames[k][:, f]
        if not seq:
            assert torch.equal(got[:, f], x[:, f])
            continue
        own = [noises[k][:, f:f + 1] for k in range(S.shape[0] - 1) if S[k, f] != S[k + 1, f]] if noises else None
        want = reference(P, name, prediction, seq, x[:, f:f + 1], torch.float64, noises=own)
        assert (got[:, f:f + 1] - want).abs().max().item() < 1e-12, f"frame {f}"


@pytest.mark.parametrize("name", SOLVERS)
def test_state_from_another_trajectory_is_refused(P, name):
    sch = schedule(P, "epsilon")
    sampler = P["samplers"].build(name)
    x = torch.randn(SHAPE)
    state = sampler.init_state(x)
    t0, t1, t2 = (torch.full(SHAPE[:2], v) for v in (1.0, 0.8, 0.6))
    model_fn = lambda x, t: net(x, sch.timestep_input(t), "epsilon")  # noqa: E731
    x1, state = sampler.step(model_fn, x, t0, t1, schedule=sch, state=state)
    with pytest.raises(ValueError, match=r"another level than its last step ended at.*one-step sampler \(ddim\)"):
        sampler.step(model_fn, x1, t0, t2, schedule=sch, state=state)  # frame re-noised to 1.0 behind its back
    with pytest.raises(ValueError, match="must not raise any frame's level"):
        sampler.step(model_fn, x1, t1, t0, schedule=sch, state=state)
    with pytest.raises(ValueError, match=r"init_state\(x\)"):
        sampler.step(model_fn, x1[:1], t1[:1], t2[:1], schedule=sch, state=state)


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_2m_sde", "unipc"])
def test_gaussian_data_recovered_faster_than_ddim(P, name):
    """With the exact denoiser of N(mu, c^2) data (closed form), the solver's std error at 25 steps is under
    a quarter of DDIM's, and at 100 steps the data distribution is recovered (mean and std within 5e-3;
    1e-2 for the SDE, whose fresh noise is a first-order term)."""
    from tests.test_samplers import gaussian_oracle

    sch = schedule(P, "epsilon")
    x = torch.randn(4000, 2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(sampler, steps):
        S = torch.linspace(1, 0, steps + 1)[:, None].expand(-1, 2).contiguous()
        return sample_loop(gaussian_oracle(sch), x, S, sampler=P["samplers"].build(sampler), schedule=sch,
                           generator=torch.Generator().manual_seed(1))

    err = {s: abs(run(s, 25).std().item() - 0.5) for s in (name, "ddim")}
    assert err[name] < 0.25 * err["ddim"], err
    out = run(name, 100)
    tol = 1e-2 if name == "dpmpp_2m_sde" else 5e-3
    assert out.mean().item() == pytest.approx(0.5, abs=tol)
    assert out.std().item() == pytest.approx(0.5, abs=tol)
    assert math.isfinite(out.abs().max().item())
