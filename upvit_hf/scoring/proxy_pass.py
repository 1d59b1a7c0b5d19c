"""The proxy pass: one pass over the proxy set, where scoring's scale lives.

Every KL scorer (channels, blocks, and any later one) hands `ProxyPass.run` a per-batch function and a
dict of named float64 accumulators ("sums") that the function adds into. The pass then, for every
scorer alike:

* runs the network in float32 (float64 when the model is float64) whatever dtype it was loaded in, by
  casting the caller's model for the duration of the pass and casting it back exactly afterwards;
* keeps TF32 off on CUDA unless asked, and gives every global flag back as it found it;
* under `torch.distributed` (accelerate launch / torchrun) scores a disjoint shard of the proxy batches
  on each process (batch i on rank i mod world size) and all-reduces the sums and the sample count;
* saves the sums and the digests of the scored batches every K batches (atomically, one file per rank),
  and continues from such a checkpoint when the same run is started again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from ..adapters import ModelAdapter
from ..atomic import atomic_path

SCORING_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
AUTO = "auto"
CPU_VARIANTS = 16
"""variants_per_pass="auto" on a CPU: memory is rarely the limit there, and more variants per pass stop
paying off once a pass is a few large matrix products."""
MAX_AUTO_VARIANTS = 1024
AUTO_MEMORY_FRACTION = 0.5
"""Share of the free device memory that "auto" plans to fill: one stacked variant is assumed to need what
one plain forward of the batch peaks at; the rest covers the per-batch cache, masks and the allocator."""


def prepare_inputs(batch: Any, adapter: ModelAdapter, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model inputs of a proxy batch (labels and other keys ignored), on the model's device; floating
    inputs in the scoring `dtype`."""
    if not isinstance(batch, Mapping):
        raise ValueError(f"proxy batches must be dicts of model inputs, got {type(batch).__name__}")
    missing = [name for name in adapter.required_inputs if name not in batch]
    if missing:
        raise ValueError(
            f"a proxy batch is missing {', '.join(missing)}; {type(adapter.model).__name__} needs "
            f"{', '.join(adapter.required_inputs)}, the batch has {', '.join(map(str, batch)) or 'no keys'}"
        )
    names = (*adapter.required_inputs, *adapter.optional_inputs)
    device = adapter.model.device
    inputs = {}
    for name in names:
        if batch.get(name) is None:
            continue
        tensor = torch.as_tensor(batch[name])
        cast = dtype if dtype is not None and tensor.is_floating_point() else None
        inputs[name] = tensor.to(device=device, dtype=cast)
    return inputs


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Score in eval mode (no dropout) whatever mode the model came in, and give it back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------- dtype
def scoring_dtype(model: torch.nn.Module, requested: torch.dtype | None = None) -> torch.dtype:
    """float64 for a float64 model, float32 for anything else, unless `requested` explicitly (opt-in)."""
    if requested is not None:
        if requested not in SCORING_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in SCORING_DTYPES)
            raise ValueError(f"dtype must be one of {names}, got {requested!r}")
        return requested
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return torch.float64 if torch.float64 in floating else torch.float32


def _widens(source: torch.dtype, target: torch.dtype) -> bool:
    """True when every `source` value is exactly representable in `target` (so casting back is exact)."""
    order = {torch.float16: 1, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
    return source == target or order.get(source, 99) < order.get(target, 0)


@contextmanager
def cast_temporarily(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Run `model` in `dtype` for the duration, then give every floating parameter and buffer back its
    own dtype and exact values (the same tensor objects, so optimizers and ties are unaffected).

    Chosen over a float32 copy for memory: a bf16 model scored in float32 holds the float32 weights only,
    not both. Widening casts are undone by casting back (exact); for a narrowing opt-in (a float32 model
    scored in bf16) the original storage is kept aside and put back.
    """
    changed: list[tuple[torch.Tensor, torch.dtype, torch.Tensor | None]] = []
    try:
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if tensor.is_floating_point() and tensor.dtype != dtype:
                    kept = None if _widens(tensor.dtype, dtype) else tensor.data
                    changed.append((tensor, tensor.dtype, kept))
                    tensor.data = tensor.data.to(dtype)
        yield
    finally:
        with torch.no_grad():
            for tensor, original, kept in changed:
                tensor.data = kept if kept is not None else tensor.data.to(original)


# ---------------------------------------------------------------------------------------------- device
def check_single_device(model: torch.nn.Module) -> torch.device:
    """The one device the whole model lives on; ValueError for a model spread by `device_map` or offloaded.

    Exact scoring stacks variants of every branch's input and masks activations through hooks, which
    assumes one device; to go beyond one device, use data parallelism (one full copy per process)."""
    mapped = {str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()}
    devices = {str(p.device) for p in model.parameters()} | {str(b.device) for b in model.buffers()}
    if len(mapped) > 1 or len(devices) > 1 or mapped & {"disk", "meta"} or "meta" in devices:
        where = ", ".join(sorted(mapped | devices))
        raise ValueError(
            f"the model is spread over several devices ({where}); exact scoring needs the whole model on one "
            "device: load it without device_map (or with device_map={'': 0}) and scale out with data "
            "parallelism instead (accelerate launch --num_processes N -m upvit_hf.cli score ...)"
        )
    return next(model.parameters()).device


@contextmanager
def exact_float32_matmul(device: torch.device, allow_tf32: bool) -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions (unless `allow_tf32`), restored afterwards.

    Only the new `fp32_precision` API is touched: it can be set and restored whichever API the caller used,
    while reading or writing the legacy flags after the new ones were set raises in torch >= 2.9."""
    if allow_tf32 or device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def auto_variants(adapter: ModelAdapter, inputs: dict[str, torch.Tensor]) -> int:
    """variants_per_pass from free device memory: what one plain forward of this batch peaks at, times the
    variants, fits in AUTO_MEMORY_FRACTION of the free memory. On a CPU: CPU_VARIANTS."""
    device = adapter.model.device
    if device.type != "cuda":
        return CPU_VARIANTS
    torch.cuda.synchronize(device)
    free, _ = torch.cuda.mem_get_info(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    hidden, context = adapter.embed(inputs)
    for branch in adapter.branches():
        hidden = branch(hidden, context)
    adapter.readout(hidden, context)
    del hidden, context
    torch.cuda.synchronize(device)
    per_variant = max(1, torch.cuda.max_memory_allocated(device) - before)
    return max(1, min(MAX_AUTO_VARIANTS, int(AUTO_MEMORY_FRACTION * free // per_variant)))


# ---------------------------------------------------------------------------------------------- sharding
def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def refuse_sharded_loader(proxy: Any) -> None:
    """The pass shards the proxy set itself: a loader that accelerate already sharded would lose batches."""
    from accelerate.data_loader import DataLoaderDispatcher, DataLoaderShard

    if isinstance(proxy, (DataLoaderShard, DataLoaderDispatcher)):
        raise ValueError("pass the whole proxy set (the same on every process), not accelerator.prepare(loader): "
                         "scoring gives each process its own shard of it")


def all_reduce_sums(sums: Mapping[str, torch.Tensor], samples: int) -> int:
    """Sum `sums` (in place) and `samples` over all processes, as one float64 all-reduce."""
    rank, size = world()
    if size == 1:
        return samples
    flat = torch.cat([*(t.detach().reshape(-1).double().cpu() for t in sums.values()),
                      torch.tensor([float(samples)], dtype=torch.float64)])
    if torch.distributed.get_backend() == "nccl":
        flat = flat.cuda()
    torch.distributed.all_reduce(flat)
    flat = flat.cpu()
    offset = 0
    for tensor in sums.values():
        tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()
    return int(round(flat[-1].item()))


# ---------------------------------------------------------------------------------------------- checkpoints
def batch_digest(inputs: Mapping[str, torch.Tensor]) -> str:
    """A content hash of the model inputs of one proxy batch (to recognise it on resume)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in inputs.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 4096) -> str:
    """A cheap identity of the weights: names, shapes, dtypes and an evenly strided sample of every tensor
    (enough to tell two checkpoints or fine-tunes apart without hashing gigabytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples_per_tensor)].cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Checkpoint:
    """Running sums, sample count and the digests of the batches done, for one rank of one scoring run.

    `key` names everything the sums depend on (model, method, widths, accumulator shapes, dtype, world
    size); a file written under another key is refused, never silently mixed in."""

    def __init__(self, path: str | os.PathLike, every: int, key: dict[str, Any]):
        rank, size = world()
        path = Path(path).expanduser()
        self.path = path if size == 1 else path.with_name(f"{path.name}.rank{rank}-of-{size}")
        self.every, self.key = every, key
        self.done: dict[int, str] = {}
        self.samples = 0
        self.since_save = 0

    def restore(self, sums: Mapping[str, torch.Tensor]) -> None:
        """Load a matching checkpoint into `sums` (in place); nothing to do when there is none yet."""
        if not self.path.exists():
            return
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: say which
            raise ValueError(f"checkpoint {str(self.path)!r} cannot be read ({type(err).__name__}); "
                             "delete it to start over") from err
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            old = saved.get("key", {}) if isinstance(saved, dict) else {}
            differ = sorted(k for k in self.key if old.get(k) != self.key[k]) or ["format"]
            raise ValueError(
                f"checkpoint {str(self.path)!r} belongs to a different scoring run (it differs in "
                f"{', '.join(differ)}); pass another checkpoint path or delete it to start over"
            )
        for name, tensor in sums.items():
            tensor.copy_(saved["sums"][name])
        self.done = {int(k): v for k, v in saved["done"].items()}
        self.samples = int(saved["samples"])

    def check(self, index: int, digest: str) -> bool:
        """True when batch `index` is already in the sums; ValueError when the checkpoint saw another one."""
        if index not in self.done:
            return False
        if self.done[index] != digest:
            raise ValueError(
                f"proxy batch {index} differs from the batch checkpoint {str(self.path)!r} scored: resume with "
                "the same proxy set in the same order, or pass another checkpoint path"
            )
        return True

    def record(self, index: int, digest: str, samples: int, sums: Mapping[str, torch.Tensor]) -> None:
        self.done[index] = digest
        self.samples += samples
        self.since_save += 1
        if self.since_save >= self.every:
            self.save(sums)

    def save(self, sums: Mapping[str, torch.Tensor]) -> None:
        payload = {
            "key": self.key, "samples": self.samples, "done": dict(self.done),
            "sums": {name: tensor.detach().cpu().clone() for name, tensor in sums.items()},
        }
        with atomic_path(self.path, overwrite=True) as tmp:  # our own file: restore() read and checked it
            torch.save(payload, tmp)
        self.since_save = 0


# ---------------------------------------------------------------------------------------------- the pass
class ProxyPass:
    """One pass over a proxy set as every KL scorer makes it (see the module docstring).

    `variants_per_pass` is an int or "auto" (resolved on the first batch: `self.variants_per_pass`).
    `dtype` overrides the float32/float64 policy (an explicit opt-in, e.g. torch.bfloat16).
    `checkpoint` (a path) with `checkpoint_every` (batches) makes the pass resumable.
    """

    def __init__(self, adapter: ModelAdapter, variants_per_pass: int | str = 16, show_progress: bool = True, *,
                 dtype: torch.dtype | None = None, checkpoint: str | os.PathLike | None = None,
                 checkpoint_every: int = 10, allow_tf32: bool = False):
        if variants_per_pass != AUTO and (isinstance(variants_per_pass, bool) or not isinstance(variants_per_pass, int)
                                          or variants_per_pass < 1):
            raise ValueError(f"variants_per_pass must be >= 1 or 'auto', got {variants_per_pass!r}")
        adapter.check_scorable()
        self.device = check_single_device(adapter.model)
        self.dtype = scoring_dtype(adapter.model, dtype)
        self.adapter, self.show_progress = adapter, show_progress
        self.variants_per_pass = variants_per_pass
        self.checkpoint_path, self.checkpoint_every, self.allow_tf32 = checkpoint, checkpoint_every, allow_tf32
        if checkpoint is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                       or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be a positive number of batches, got {checkpoint_every!r}")

    def run(self, proxy: Iterable[Mapping[str, Any]], per_batch: int, unit: str, desc: str,
            score_batch: Callable[[dict[str, torch.Tensor], Any], int],
            sums: Mapping[str, torch.Tensor] | None = None, method: str | None = None, grad: bool = False) -> int:
        """Call `score_batch(inputs, bar)` on every batch of this process's shard; returns the number of
        samples scored (over all processes).

        `sums` are the float64 accumulators `score_batch` adds into: they are all-reduced across processes
        at the end and checkpointed. Without them every process scores every batch (correct, not faster)
        and no checkpoint can be kept. `method` names the scorer in the checkpoint's key. `grad=True` runs
        `score_batch` with autograd on (scorers that differentiate) instead of in inference mode.
        """
        from transformers.utils.logging import tqdm

        rank, size = world()
        if size > 1:
            refuse_sharded_loader(proxy)
        if sums is None:
            if self.checkpoint_path is not None:
                raise ValueError("this scorer does not expose its sums to the proxy pass: it cannot checkpoint")
            rank, size = 0, 1
        model = self.adapter.model
        count = len(proxy) if hasattr(proxy, "__len__") else None
        total = per_batch * len(range(rank, count, size)) if count is not None else None
        with ExitStack() as stack:
            stack.enter_context(cast_temporarily(model, self.dtype))
            stack.enter_context(exact_float32_matmul(self.device, self.allow_tf32))
            stack.enter_context(eval_mode(model))
            checkpoint = None
            if self.checkpoint_path is not None:
                key = {"method": method or desc, "model": model_fingerprint(model),
                       "widths": self.adapter.widths.as_dict(), "dtype": str(self.dtype),
                       "sums": {name: list(t.shape) for name, t in sums.items()}, "world_size": size}
                checkpoint = Checkpoint(self.checkpoint_path, self.checkpoint_every, key)
                checkpoint.restore(sums)
            stack.enter_context(torch.enable_grad() if grad else torch.inference_mode())
            bar = stack.enter_context(tqdm(total=total, unit=unit, desc=desc,
                                           disable=not self.show_progress or rank != 0))
            samples = checkpoint.samples if checkpoint is not None else 0
            for index, batch in enumerate(proxy):
                if index % size != rank:
                    continue
                inputs = prepare_inputs(batch, self.adapter, self.dtype)
                digest = batch_digest(inputs) if checkpoint is not None else ""
                if checkpoint is not None and checkpoint.check(index, digest):
                    bar.update(per_batch)
                    continue
                if self.variants_per_pass == AUTO:
                    self.variants_per_pass = auto_variants(self.adapter, inputs)
                scored = score_batch(inputs, bar)
                samples += scored
                if checkpoint is not None:
                    checkpoint.record(index, digest, scored, sums)
            if checkpoint is not None:
                checkpoint.save(sums)
        if sums is not None:
            samples = all_reduce_sums(sums, samples)
        if samples == 0:
            raise ValueError("the proxy set is empty: pass at least one batch of model inputs")
        return samples
