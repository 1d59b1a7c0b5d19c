"""Retraining-free recovery: refit each pruned block's output maps by ridge least squares on the proxy set.

After surgery the pruned model and the unpruned one are walked branch by branch (attention half, FFN half,
…), each on its *own* running residual stream ("sequential calibration": the pruned branch sees the inputs
the pruned model really produces, so errors of earlier branches are not compounded). For every branch whose
map into the residual stream (attention output projection, second FFN projection: `adapter.refit_maps`) lost
inputs or outputs, the map is refit so that, on the pruned model's own inputs, it reproduces what the original
branch wrote into the residual stream, restricted to the kept residual channels:

    min_{W, b} Σ_rows ‖W x_p + b − (W_o x_o + b_o)[kept]‖² + λ ‖W − W_0‖²

x_p the captured input of the pruned map (kept FFN activations, or the kept merged heads' attention context),
x_o that of the original map, W_0 the weight surgery left. The bias is unpenalised (bias compensation); a map
without bias is fit without one. The ridge pulls toward W_0, not toward zero, so the fitted map never has a
larger error on the proxy set than W_0 (the objective at W_0 is its error alone). λ = `ridge` · mean(diag XᵀX)
over the weight features (scale-free; `RIDGE` = 1e-3 by default).

Normal equations (XᵀX, XᵀY with X augmented by a ones column) are accumulated in float64 over the proxy
batches, so memory does not grow with the proxy size beyond the cached residual streams (two per batch), and
solved with a Cholesky factorisation. Only parameter values change: the result is still a stock model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .adapters import ModelAdapter, RefitMap
from .scoring.proxy_pass import eval_mode, prepare_inputs

RIDGE = 1e-3
"""Default λ relative to the mean diagonal of XᵀX (weight features only)."""


@dataclass
class NormalEquations:
    """Σ w·x̃x̃ᵀ, Σ w·x̃yᵀ and Σ w·‖y‖² over weighted rows, in float64; x̃ = [x, 1] when fitting a bias."""

    inputs: int
    outputs: int
    with_bias: bool
    gram: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    target_energy: float = field(init=False, default=0.0)
    rows: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        size = self.inputs + int(self.with_bias)
        self.gram = torch.zeros(size, size, dtype=torch.float64)
        self.cross = torch.zeros(size, self.outputs, dtype=torch.float64)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.inputs).to(torch.float64)
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1) if self.with_bias else x

    def add(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Accumulate rows `x` [..., inputs] → `y` [..., outputs] (row weights [...], e.g. 0 at padding)."""
        x, y = self._augment(x), y.reshape(-1, self.outputs).to(torch.float64)
        w = torch.ones(len(x), dtype=torch.float64, device=x.device) if weights is None \
            else weights.reshape(-1).to(device=x.device, dtype=torch.float64)
        xw = x * w[:, None]
        self.gram += (xw.T @ x).cpu()
        self.cross += (xw.T @ y).cpu()
        self.target_energy += float((w * (y * y).sum(1)).sum())
        self.rows += float(w.sum())

    def coefficients(self, matrix: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """[out, in] weight (+ bias) as the [in(+1), out] coefficients the equations are written in."""
        coef = matrix.detach().to(device="cpu", dtype=torch.float64).T
        if self.with_bias:
            coef = torch.cat([coef, bias.detach().to(device="cpu", dtype=torch.float64)[None]], 0)
        return coef

    def error(self, coef: torch.Tensor) -> float:
        """Σ w·‖x̃ᵀC − y‖² of coefficients C, from the accumulated sums."""
        return float(self.target_energy - 2 * (coef * self.cross).sum() + (coef * (self.gram @ coef)).sum())

    def solve(self, prior: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
        """argmin_C Σ w‖x̃ᵀC − y‖² + λ‖C_w − prior_w‖² (weight rows only), λ = ridge · mean diag of XᵀX."""
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        diag = self.gram.diagonal()[: self.inputs]
        lam = ridge * (float(diag.mean()) if float(diag.mean()) > 0 else 1.0)
        penalty = torch.zeros(len(self.gram), dtype=torch.float64)
        penalty[: self.inputs] = lam
        lhs = self.gram + torch.diag(penalty)
        rhs = self.cross + penalty[:, None] * prior
        factor, info = torch.linalg.cholesky_ex(lhs)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, factor)
        return torch.linalg.lstsq(lhs, rhs).solution  # numerically singular (e.g. no rows): least-norm answer


@dataclass(frozen=True)
class MapFit:
    """One refit map: its branch in the pruned model and its squared error on the proxy set before/after."""

    branch: int
    error_before: float
    error_after: float
    target_energy: float

    def as_dict(self) -> dict[str, float]:
        return {"branch": self.branch, "relative_error_before": self.error_before / max(self.target_energy, 1e-300),
                "relative_error_after": self.error_after / max(self.target_energy, 1e-300)}


@dataclass
class ReconstructionReport:
    """What `reconstruct` did: the proxy samples, ridge, every refit map's errors, and the wall time."""

    proxy_size: int
    ridge: float
    fits: list[MapFit]
    seconds: float

    def record(self) -> dict[str, Any]:
        """The summary kept in the pruning record."""
        return {"method": "ridge least squares, sequential", "proxy_size": self.proxy_size, "ridge": self.ridge,
                "refit_maps": len(self.fits)}


@contextmanager
def _capture(module: torch.nn.Module, store: dict[str, torch.Tensor], output: bool) -> Iterator[None]:
    """Store the input (and, if `output`, the output) of every call of `module` in `store`."""
    with ExitStack() as stack:
        handle = module.register_forward_pre_hook(lambda _, args: store.__setitem__("input", args[0]))
        stack.callback(handle.remove)
        if output:
            handle = module.register_forward_hook(lambda _, args, out: store.__setitem__("output", out))
            stack.callback(handle.remove)
        yield


def _row_weights(adapter: ModelAdapter, inputs: Mapping[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor | None:
    """Per-position weights of the regression rows (0 at padding), or None where every position counts."""
    weights = adapter.token_weights(inputs)
    if weights is None:
        weights = inputs.get("attention_mask")
    return None if weights is None or weights.numel() != hidden.shape[:-1].numel() else weights


@dataclass
class _Stream:
    """One proxy batch's running residual streams in both models."""

    original: torch.Tensor
    original_context: dict[str, Any]
    pruned: torch.Tensor
    pruned_context: dict[str, Any]
    weights: torch.Tensor | None


def reconstruct(
    original: ModelAdapter,
    pruned: ModelAdapter,
    proxy: Iterable[Mapping[str, Any]],
    residual: torch.Tensor,
    refit: Sequence[bool],
    *,
    sources: Sequence[int] | None = None,
    ridge: float = RIDGE,
    show_progress: bool = True,
) -> ReconstructionReport:
    """Refit, in place in `pruned.model`, the map of every branch k with `refit[k]` (see the module docstring).

    `residual`: the original residual channels the pruned model kept (indices into the original width).
    `sources[k]`: the original branch that pruned branch k came from (default: the same index; after depth
    pruning the later branches shift). Both models run in eval mode and are given back in their modes.
    """
    from transformers.utils.logging import tqdm

    branches_o, branches_p = original.branches(), pruned.branches()
    sources = list(range(len(branches_p))) if sources is None else list(sources)
    if len(refit) != len(branches_p) or len(sources) != len(branches_p):
        raise ValueError(f"refit and sources need one entry per pruned branch ({len(branches_p)})")
    if sources != sorted(sources) or (sources and not 0 <= sources[0] <= sources[-1] < len(branches_o)):
        raise ValueError(f"sources must be increasing original branch indices below {len(branches_o)}")
    residual = residual.to(original.model.device)
    start = time.perf_counter()
    fits: list[MapFit] = []
    with torch.no_grad(), eval_mode(original.model), eval_mode(pruned.model):
        streams, samples = [], 0
        for batch in proxy:
            inputs_o, inputs_p = prepare_inputs(batch, original), prepare_inputs(batch, pruned)
            hidden_o, context_o = original.embed(inputs_o)
            hidden_p, context_p = pruned.embed(inputs_p)
            streams.append(_Stream(hidden_o, context_o, hidden_p, context_p, _row_weights(pruned, inputs_p, hidden_p)))
            samples += len(hidden_p)
        if not streams:
            raise ValueError("the reconstruction proxy set is empty: pass at least one batch of model inputs")

        position = 0  # next original branch to run
        for k in tqdm(range(len(branches_p)), desc="reconstruct", unit="branch", disable=not show_progress):
            source = sources[k]
            for stream in streams:  # original branches removed between the previous source and this one
                for skipped in range(position, source):
                    stream.original = branches_o[skipped](stream.original, stream.original_context)
            position = source + 1
            if not refit[k]:
                for stream in streams:
                    stream.original = branches_o[source](stream.original, stream.original_context)
                    stream.pruned = branches_p[k](stream.pruned, stream.pruned_context)
                continue
            map_o: RefitMap = original.refit_maps(source // 2)[source % 2]
            map_p: RefitMap = pruned.refit_maps(k // 2)[k % 2]
            matrix, bias = map_p.matrix(), map_p.bias
            equations = NormalEquations(matrix.shape[1], matrix.shape[0], bias is not None)
            for stream in streams:
                seen_o: dict[str, torch.Tensor] = {}
                seen_p: dict[str, torch.Tensor] = {}
                with _capture(map_o.module, seen_o, output=True):
                    stream.original = branches_o[source](stream.original, stream.original_context)
                with _capture(map_p.module, seen_p, output=False):
                    branches_p[k](stream.pruned, stream.pruned_context)
                equations.add(seen_p["input"], seen_o["output"].index_select(-1, residual), stream.weights)
            prior = equations.coefficients(matrix, bias)
            coef = equations.solve(prior, ridge)
            fits.append(MapFit(k, equations.error(prior), equations.error(coef), equations.target_energy))
            map_p.assign(coef[: equations.inputs].T, coef[-1] if bias is not None else None)
            for stream in streams:
                stream.pruned = branches_p[k](stream.pruned, stream.pruned_context)
    return ReconstructionReport(samples, ridge, fits, time.perf_counter() - start)
