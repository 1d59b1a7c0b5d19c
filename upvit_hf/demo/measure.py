"""Size and speed of one architecture: parameters, forward FLOPs per sample, measured CPU throughput.

Throughput is the best of a few repeats: on a shared machine the fastest repeat is the least disturbed one,
so it is the better estimate of what the architecture can do. Weights do not change any of these numbers,
so every model of one architecture shares one measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from ..evaluation import count_flops, count_parameters, describe_inputs, dummy_inputs, measure_throughput


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int  # forward FLOPs per sample (image or sequence), 2 per multiply-add
    flops_input: str
    throughput: float
    throughput_unit: str
    throughput_batch: int

    def to_dict(self) -> dict[str, int | float | str]:
        return asdict(self)


def measure_cost(model: nn.Module, *, batch_size: int, seq_len: int | None = None, repeats: int = 3,
                 iterations: int = 10) -> Cost:
    """Costs on random inputs of the model's shape: images of the config's size, or `seq_len` tokens."""
    one = dummy_inputs(model, 1, seq_len=seq_len or 1)
    batch = dummy_inputs(model, batch_size, seq_len=seq_len or 1)
    items = batch_size * (seq_len if seq_len is not None else 1)
    unit = "tokens/s" if seq_len is not None else "images/s"
    best = max(
        measure_throughput(model, batch, items_per_batch=items, unit=unit, warmup=2, iterations=iterations)
        .items_per_second
        for _ in range(repeats)
    )
    return Cost(count_parameters(model), count_flops(model, one), describe_inputs(one), best, unit, batch_size)
