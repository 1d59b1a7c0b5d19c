"""Retraining-free recovery: refit each pruned block's output maps, then the readout, by ridge least squares on
the proxy set.

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

Last, the readout (`adapter.readout_maps`): matching the residual stream on the kept channels is not what the
head needs once the residual width is cut (the removed channels' share of the logits, the final norm's
statistics over fewer channels), so the head is refit to the original's logits on the pruned model's final
features. A head tied to the input embedding (GPT-2's LM head) stays as it is; the final LayerNorm's scale γ
and shift β are refit through it instead, on logits centred over the vocabulary (the softmax ignores a
constant per position): with n the normalised features and H_c the head's weight centred over its rows,

    min_{γ, β} Σ_rows ‖H_c (γ ⊙ n + β) − C(y_o − b)‖² + λ ‖γ − γ_0‖²

whose normal equations need only n's first and second moments and H_cᵀ(y_o − b) per row.

Normal equations are accumulated in float64 over the proxy batches, so memory does not grow with the proxy
size beyond the cached residual streams (two per batch), and solved with a Cholesky factorisation. Only
parameter values change: the result is still a stock model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .adapters import ModelAdapter, NormRefit, RefitMap
from .scoring.proxy_pass import eval_mode, prepare_inputs

RIDGE = 1e-3
"""Default λ relative to the mean diagonal of XᵀX (weight features only)."""


CHUNK = 1 << 22
"""Float64 target entries converted at once (32 MiB): a batch's logits over a 50k vocabulary go in slices."""


@dataclass
class LeastSquares:
    """Normal equations G = Σ w·aaᵀ, c = Σ w·a yᵀ and Σ w·‖y‖² of a linear least-squares problem in float64,
    solved with a ridge toward a prior on the first `penalized` coefficient rows."""

    size: int
    outputs: int
    penalized: int
    gram: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    target_energy: float = field(init=False, default=0.0)
    rows: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.size, self.size, dtype=torch.float64)
        self.cross = torch.zeros(self.size, self.outputs, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Accumulate rows `x` [..., in] → `y` [..., out] with row weights [...] (e.g. 0 at padding; ignored
        unless there is one per row, as for per-token weights of a head that sees one pooled row per sample)."""
        x = x.reshape(-1, x.shape[-1])
        y = y.reshape(len(x), -1)
        w = weights.reshape(-1) if weights is not None and weights.numel() == len(x) else torch.ones(len(x))
        w = w.to(device=x.device, dtype=torch.float64)
        step = max(1, CHUNK // y.shape[1])
        for start in range(0, len(x), step):
            rows = slice(start, start + step)
            self._accumulate(x[rows].to(torch.float64), y[rows].to(torch.float64), w[rows])
            self.rows += float(w[rows].sum())

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        raise NotImplementedError

    def error(self, coef: torch.Tensor) -> float:
        """Σ w·‖aᵀC − y‖² of coefficients C, from the accumulated sums."""
        return float(self.target_energy - 2 * (coef * self.cross).sum() + (coef * (self.gram @ coef)).sum())

    def solve(self, prior: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
        """argmin_C Σ w‖aᵀC − y‖² + λ‖C_p − prior_p‖² (penalized rows p), λ = ridge · their mean diag of G."""
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        diag = self.gram.diagonal()[: self.penalized]
        lam = ridge * (float(diag.mean()) if float(diag.mean()) > 0 else 1.0)
        penalty = torch.zeros(len(self.gram), dtype=torch.float64)
        penalty[: self.penalized] = lam
        lhs = self.gram + torch.diag(penalty)
        rhs = self.cross + penalty[:, None] * prior
        factor, info = torch.linalg.cholesky_ex(lhs)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, factor)
        return torch.linalg.lstsq(lhs, rhs).solution  # numerically singular (e.g. no rows): least-norm answer


class NormalEquations(LeastSquares):
    """A linear map's refit: rows x̃ = [x, 1] (the 1 when fitting a bias) → y, coefficients [W; b]ᵀ."""

    def __init__(self, inputs: int, outputs: int, with_bias: bool):
        self.inputs, self.with_bias = inputs, with_bias
        super().__init__(inputs + int(with_bias), outputs, penalized=inputs)

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        if self.with_bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)
        xw = x * w[:, None]
        self.gram += (xw.T @ x).cpu()
        self.cross += (xw.T @ y).cpu()
        self.target_energy += float((w * (y * y).sum(1)).sum())

    def coefficients(self, matrix: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """[out, in] weight (+ bias) as the [in(+1), out] coefficients the equations are written in."""
        coef = matrix.detach().to(device="cpu", dtype=torch.float64).T
        if self.with_bias:
            coef = torch.cat([coef, bias.detach().to(device="cpu", dtype=torch.float64)[None]], 0)
        return coef


class ScaleShiftEquations(LeastSquares):
    """A LayerNorm's scale γ and shift β refit through a frozen linear head (weight [V, m], bias [V]) on logits
    centred over the V outputs; coefficients [γ; β] as one column. Rows are the norm's inputs → the logits."""

    def __init__(self, norm: torch.nn.LayerNorm, head_weight: torch.Tensor, head_bias: torch.Tensor | None):
        self.norm = norm
        head = head_weight.detach().to(torch.float64)
        self.centred = head - head.mean(0)  # C·H
        self.head_bias = None if head_bias is None else head_bias.detach().to(torch.float64)
        self.gain = (self.centred.T @ self.centred).cpu()  # A = HᵀCH
        self.width = head.shape[1]
        super().__init__(2 * self.width, 1, penalized=self.width)

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        """Rows: the norm's inputs x [rows, m] → the head's outputs y [rows, V]."""
        n = F.layer_norm(x, self.norm.normalized_shape, eps=self.norm.eps)
        residual = y if self.head_bias is None else y - self.head_bias.to(y.device)
        u = residual @ self.centred.to(y.device)  # H_cᵀ C(y − b) per row
        nw = n * w[:, None]
        moments, total = (nw.T @ n).cpu(), nw.sum(0).cpu()
        a, m = self.gain, self.width
        self.gram[:m, :m] += a * moments  # Σ diag(n) A diag(n)
        self.gram[:m, m:] += total[:, None] * a  # Σ diag(n) A
        self.gram[m:, :m] += a * total[None, :]
        self.gram[m:, m:] += float(w.sum()) * a
        self.cross[:, 0] += torch.cat([(nw * u).sum(0), (u * w[:, None]).sum(0)]).cpu()
        centred = residual - residual.mean(1, keepdim=True)
        self.target_energy += float((w * (centred * centred).sum(1)).sum())


def _equations(fit: RefitMap | NormRefit) -> tuple[LeastSquares, torch.Tensor]:
    """The equations of one map's refit and the coefficients it has now (the ridge's prior)."""
    if isinstance(fit, NormRefit):
        equations = ScaleShiftEquations(fit.norm, fit.head.weight, getattr(fit.head, "bias", None))
        prior = torch.cat([fit.norm.weight, fit.norm.bias]).detach().to(device="cpu", dtype=torch.float64)
        return equations, prior[:, None]
    matrix, bias = fit.matrix(), fit.bias
    equations = NormalEquations(matrix.shape[1], matrix.shape[0], bias is not None)
    return equations, equations.coefficients(matrix, bias)


@torch.no_grad()
def _assign(fit: RefitMap | NormRefit, coef: torch.Tensor) -> None:
    if isinstance(fit, NormRefit):
        width = len(fit.norm.weight)
        fit.norm.weight.copy_(coef[:width, 0].to(fit.norm.weight))
        fit.norm.bias.copy_(coef[width:, 0].to(fit.norm.bias))
        return
    inputs = fit.matrix().shape[1]
    fit.assign(coef[:inputs].T, coef[-1] if fit.bias is not None else None)


@dataclass(frozen=True)
class MapFit:
    """One refit map: which one ("branch K" of the pruned model, or "readout K") and its squared error on the
    proxy set before/after."""

    name: str
    error_before: float
    error_after: float
    target_energy: float

    def as_dict(self) -> dict[str, str | float]:
        return {"map": self.name, "relative_error_before": self.error_before / max(self.target_energy, 1e-300),
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


def _row_weights(adapter: ModelAdapter, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Per-position weights of the regression rows (0 at padding), or None where every position counts
    (`LeastSquares.add` uses them where a map sees one row per position)."""
    weights = adapter.token_weights(inputs)
    return inputs.get("attention_mask") if weights is None else weights


@dataclass
class _Stream:
    """One proxy batch's running residual streams in both models."""

    original: torch.Tensor
    original_context: dict[str, Any]
    pruned: torch.Tensor
    pruned_context: dict[str, Any]
    weights: torch.Tensor | None


def _observe(fit_o: RefitMap | NormRefit, run_o: Callable[[], Any], fit_p: RefitMap | NormRefit,
             run_p: Callable[[], Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Run both models' pieces once: (the pruned fit's input, the original's target output, run_o's result)."""
    seen_o: dict[str, torch.Tensor] = {}
    seen_p: dict[str, torch.Tensor] = {}
    with _capture(fit_o.writes, seen_o, output=True):
        result = run_o()
    with _capture(fit_p.reads, seen_p, output=False):
        run_p()
    return seen_p["input"], seen_o["output"], result


def _solve(name: str, fit: RefitMap | NormRefit, equations: LeastSquares, prior: torch.Tensor,
           ridge: float) -> MapFit:
    coef = equations.solve(prior, ridge)
    _assign(fit, coef)
    return MapFit(name, equations.error(prior), equations.error(coef), equations.target_energy)


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
    """Refit, in place in `pruned.model`, the map of every branch k with `refit[k]`, then, if a branch was refit
    or removed, the readout (see the module docstring).

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
            streams.append(_Stream(hidden_o, context_o, hidden_p, context_p, _row_weights(pruned, inputs_p)))
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
            equations, prior = _equations(map_p)
            for stream in streams:
                x, y, stream.original = _observe(
                    map_o, lambda: branches_o[source](stream.original, stream.original_context),
                    map_p, lambda: branches_p[k](stream.pruned, stream.pruned_context))
                equations.add(x, y.index_select(-1, residual), stream.weights)
            fits.append(_solve(f"branch {k}", map_p, equations, prior, ridge))
            for stream in streams:
                stream.pruned = branches_p[k](stream.pruned, stream.pruned_context)

        for stream in streams:  # original branches after the last kept one
            for skipped in range(position, len(branches_o)):
                stream.original = branches_o[skipped](stream.original, stream.original_context)
        changed = any(refit) or sources != list(range(len(branches_o)))  # a branch refit, or one removed
        readouts = list(zip(original.readout_maps(), pruned.readout_maps())) if changed else []
        for index, (fit_o, fit_p) in enumerate(readouts):
            equations, prior = _equations(fit_p)
            for stream in streams:
                x, y, _ = _observe(fit_o, lambda: original.readout(stream.original, stream.original_context),
                                   fit_p, lambda: pruned.readout(stream.pruned, stream.pruned_context))
                equations.add(x, y, stream.weights)
            fits.append(_solve(f"readout {index}", fit_p, equations, prior, ridge))
    return ReconstructionReport(samples, ridge, fits, time.perf_counter() - start)
