"""The paper's shallow-network sweeps (v2): shallow-vary-d and shallow-vary-T (torch, CPU).

Model (arXiv 2410.22264 v2, shallow network): ``y = c^T sigmoid(W_t x) + eps`` with
``W_t = A* + U_t* U_t*^T`` (A* Gaussian, not symmetrised), ``c ~ N(0, I)``, ``eps ~ N(0, 0.1^2)``,
N retraining samples per task and n fine-tuning samples of an unseen task.

- LoRA-ML learns ``(A, c)`` and one LoRA adapter ``B_t D_t`` per task on the first layer (up
  factor zero-initialised, as in LoRA); SR learns ``(A, c)`` on the pooled tasks. Full batch,
  AdamW (torch defaults, weight decay 0.01), one step per epoch on the sum of the task losses.
- Fine-tuning: ``(A, c)`` frozen, a fresh rank-r LoRA (r = k, or 3k when T = 2) on the first
  layer, AdamW on the n noisy samples; the plotted quantity is the mean squared error against
  the *clean* labels on those inputs (the paper's "prediction error"), median over trials.

The trials of one setting are computed together as a batch (independent parameters, one summed
loss: AdamW is per-coordinate, so this equals separate runs). Every random draw (ground truth,
data, initial weights) comes from the run's numpy Generator; torch only does arithmetic. Both
methods start from the same initial ``(A, c)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loraml.figures.linear import finetune_rank  # k, or 3k when T = 2, as in the linear sweeps
from loraml.figures.spec import FigureSpec, Run, RunResult
from loraml.theory.rng import RNGLike, as_generator

PAPER = {
    "base": {"d": 10, "T": 3, "N": 1000, "n": 100, "k": 1},
    "noise_std": 0.1,
    "trials": 10,
    "epochs": 40000,
    "epochs_ft": 15000,
    "lr": 1e-3,
    "points": 200,
}
SWEEPS = {"d": [5, 10, 20], "T": [2, 3, 5, 10]}
QUICK = {"trials": 4, "epochs": 10000, "epochs_ft": 3000}


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """torch.nn.Linear's default initialisation, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def shallow_run(
    rng: RNGLike,
    *,
    d: int,
    T: int,
    N: int,
    n: int,
    k: int,
    noise_std: float,
    trials: int,
    epochs: int,
    epochs_ft: int,
    lr: float,
    points: int,
) -> RunResult:
    """All trials of one setting (module docstring); curves kept at ``points`` epochs."""
    rng = as_generator(rng)
    import torch

    torch.set_num_threads(1)
    B = trials

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    # Ground truth and data.
    A_star = rng.standard_normal((B, d, d))
    U_star = rng.standard_normal((B, T + 1, d, k))
    c_star = rng.standard_normal((B, d))
    W_star = A_star[:, None] + U_star @ np.swapaxes(U_star, -1, -2)  # (B, T+1, d, d)

    def labels(X: np.ndarray, W: np.ndarray) -> np.ndarray:  # X (B, m, d), W (B, d, d)
        return (1.0 / (1.0 + np.exp(-X @ np.swapaxes(W, -1, -2)))) @ c_star[..., None]

    # Drawn as numpy arrays, then made tensors (the same names): Any for the type checker.
    X: Any = rng.standard_normal((B, T, N, d))
    y_clean = np.stack([labels(X[:, t], W_star[:, t])[..., 0] for t in range(T)], axis=1)
    y: Any = y_clean + noise_std * rng.standard_normal(y_clean.shape)
    Xf: Any = rng.standard_normal((B, n, d))
    yf_clean: Any = labels(Xf, W_star[:, T])[..., 0]
    yf: Any = yf_clean + noise_std * rng.standard_normal(yf_clean.shape)
    X, y, Xf, yf, yf_clean = map(tensor, (X, y, Xf, yf, yf_clean))

    # Shared initial weights; per-task adapters (down random, up zero).
    A0, c0 = _uniform(rng, (B, d, d), d), _uniform(rng, (B, d), d)
    D0 = _uniform(rng, (B, T, k, d), d)
    r = finetune_rank(T, k)
    Df0 = _uniform(rng, (B, r, d), d)

    def predict(X: torch.Tensor, A: torch.Tensor, c: torch.Tensor, adapter=None) -> torch.Tensor:
        # X (B, T, m, d), A (B, d, d), c (B, d), adapter (Down (B, T, r, d), Up (B, T, d, r)):
        # c^T sigmoid((A + Up_t Down_t) x) for every row x of every task, shape (B, T, m).
        B_, T_, m, _ = X.shape
        if adapter is None:  # one weight for all tasks: one product per trial
            Z = torch.bmm(X.reshape(B_, T_ * m, d), A.transpose(1, 2).contiguous())
        else:
            Dn, Up = adapter
            WT = A.transpose(1, 2).unsqueeze(1) + Dn.transpose(-1, -2) @ Up.transpose(-1, -2)
            Z = torch.bmm(X.reshape(B_ * T_, m, d), WT.contiguous().reshape(B_ * T_, d, d))
        H = torch.sigmoid(Z).reshape(B_, T_, m, d)
        return (H * c[:, None, None, :]).sum(-1)

    grid = np.unique(np.linspace(0, epochs_ft - 1, points).round().astype(int))
    out: RunResult = {"epochs": grid}
    Xf, yf, yf_clean = Xf[:, None], yf[:, None], yf_clean[:, None]  # one task
    for name, multi in (("lora", True), ("sr", False)):
        A = tensor(A0).requires_grad_()
        c = tensor(c0).requires_grad_()
        params = [A, c]
        adapter = None
        if multi:
            adapter = (tensor(D0).requires_grad_(), torch.zeros(B, T, d, k, requires_grad=True))
            params += list(adapter)
        opt = torch.optim.AdamW(params, lr=lr)
        for _ in range(epochs):
            loss = ((predict(X, A, c, adapter) - y) ** 2).mean(-1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        A_hat, c_hat = A.detach(), c.detach()
        out[f"{name}_base_error"] = np.linalg.norm(A_hat.numpy() - A_star, axis=(1, 2))

        fresh = (tensor(Df0[:, None]).requires_grad_(), torch.zeros(B, 1, d, r, requires_grad=True))
        opt = torch.optim.AdamW(list(fresh), lr=lr)
        curve = np.empty((B, epochs_ft))
        for e in range(epochs_ft):
            pred = predict(Xf, A_hat, c_hat, fresh)
            with torch.no_grad():
                curve[:, e] = ((pred - yf_clean) ** 2).mean(-1)[:, 0].numpy()
            loss = ((pred - yf) ** 2).mean(-1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[f"{name}_curve"] = curve[:, grid]
    return out


def _runs(param: str):
    def runs(s: dict[str, Any]) -> list[Run]:
        keys = ("noise_std", "trials", "epochs", "epochs_ft", "lr", "points")
        out = []
        for i, v in enumerate(s["values"]):
            kw = {**s["base"], param: v, **{key: s[key] for key in keys}}
            # About 40 linear runs' worth per trial, task and 10 dimensions at 10000 epochs.
            cost = 40 * s["trials"] * kw["T"] * kw["d"] / 10 * s["epochs"] / 1e4
            out.append(Run(shallow_run, kw, (i,), cost))
        return out

    return runs


def _assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    data: RunResult = {"values": np.array(s["values"]), "epochs": results[0]["epochs"]}
    for key in ("lora_curve", "sr_curve", "lora_base_error", "sr_base_error"):
        data[key] = np.stack([res[key] for res in results])
    return data


def _draw(param: str):
    def draw(data: RunResult, s: dict[str, Any]):
        from loraml.figures import plot

        values = data["values"]
        fig, axes = plot.figure(ncols=len(values), width=2.6 * len(values), height=3.4)
        axes = np.atleast_1d(axes)
        x = data["epochs"] + 1
        for ax, i, v in zip(axes, range(len(values)), values, strict=True):
            for m, (key, name) in enumerate((("lora", "LoRA-ML"), ("sr", "SR"))):
                st = plot.style(m)
                plot.median_band(
                    ax, x, data[f"{key}_curve"][i], color=st["color"], marker=st["marker"],
                    linestyle=plot.METHOD_STYLE[name], filled=m == 0, label=name,
                )  # fmt: skip
            ax.set_yscale("log")
            ax.set_title(f"{param} = {int(v)}")
            ax.set_xlabel("fine-tuning epoch")
        lims = np.array([ax.get_ylim() for ax in axes])
        for ax in axes:  # one y range for all panels, so the panels compare by eye
            ax.set_ylim(lims[:, 0].min(), lims[:, 1].max())
        axes[0].set_ylabel("clean-label MSE")
        axes[0].legend(loc="upper right")
        other = ", ".join(f"{k}={v}" for k, v in s["base"].items() if k != param)
        fig.suptitle(
            f"shallow-vary-{param}: {other}, {s['epochs']} retraining / {s['epochs_ft']} "
            f"fine-tuning epochs (AdamW lr {s['lr']:g})\n"
            f"{plot.band_note(s['trials'], 'trials')}",
            fontsize=9,
        )
        return fig

    return draw


def _spec(param: str) -> FigureSpec:
    full = {**PAPER, "param": param, "values": SWEEPS[param]}
    return FigureSpec(
        name=f"shallow-vary-{param}",
        summary=f"shallow network, sweep over {param} in {SWEEPS[param]}: fine-tuning error",
        full=full,
        quick={**full, **QUICK},
        runs=_runs(param),
        assemble=_assemble,
        draw=_draw(param),
        seed=20250101 + list(SWEEPS).index(param),
        version="2",
        needs=("torch",),
    )


FIGURES = [_spec(p) for p in SWEEPS]
