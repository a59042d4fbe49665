"""The three FLOP sources side by side for one registered layer instance."""

from __future__ import annotations

from typing import Any

import torch

from harness.flops.fvcore_counter import count_fvcore
from harness.flops.torch_counter import count_torch
from harness.layers.inputs import extra_inputs
from harness.registry import LayerEntry, get
from harness.spec import LayerCase

#: A Python loop over time (an unrolled RNN) costs ~8 ms per step on meta, whose kernels are
#: Python, and its arithmetic on CPU (~1 GFLOP/s for small per-step matmuls, 2 busy cores).
#: Measured, GRU d=512 n=1024: B=1 meta 11.5 s / CPU 3.1 s; B=8 meta 6.0 s / CPU 35 s.
#: Below this many forward FLOPs per step the CPU is the faster place to count.
NATIVE_FLOPS_PER_STEP = 8_000_000

#: Why ``train_flops_fvcore`` is always None.
FVCORE_TRAIN_NOTE = "fvcore traces the forward pass only: it has no backward count"


def count_layer(entry: LayerEntry | str, case: LayerCase, variant: str | None = None, *,
                train: bool = False, device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Analytic, fvcore and FlopCounterMode FLOPs (2 per multiply-add) for one layer instance.

    The module is built on CPU (cheap: parameters only) and both counters run it on the meta
    device where they can (see :func:`count_torch`, :func:`count_fvcore`), except the
    unfused reference of a sequential layer (an unrolled RNN) with little work per step,
    which counts faster on CPU (:data:`NATIVE_FLOPS_PER_STEP`). The counts do not depend on
    the device (tests prove meta == CPU); only the time does.
    Forward counts run in eval mode; with ``train=True`` the torch counter also counts
    forward + backward in training mode, beside the analytic ``train_flops``. fvcore has no
    training count.
    Keys follow the results dataframe's column names.
    """
    entry = get(entry) if isinstance(entry, str) else entry
    variant = entry.default_variant if variant is None else variant
    case = entry.normalize(case)
    cost = entry.cost_of(case, variant)
    module = entry.build(case, variant)
    if (device == "auto" and cost.seq_ops > 1 and variant == entry.reference_variant
            and cost.flops < cost.seq_ops * NATIVE_FLOPS_PER_STEP):
        device = "native"  # a Python loop over time with little arithmetic per step
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(case.batch, case.seq_len, case.d_model, generator=generator)  # (B, n, d)
    inputs = (x, *extra_inputs(entry, case, generator=generator))  # x, then an encoder output
    module.eval()
    torch_fwd = count_torch(module, inputs, device=device)
    fvcore_fwd = count_fvcore(module, inputs, device=device)
    row: dict[str, Any] = {
        "layer": entry.name,
        "variant": variant,
        "flops_analytic": cost.flops,
        "flops_useful": cost.flops_useful,
        "flops_fvcore": fvcore_fwd.total,
        "flops_torch": torch_fwd.total,
        "uncounted_fvcore": fvcore_fwd.uncounted,
        "uncounted_torch": torch_fwd.uncounted,
        "device_fvcore": fvcore_fwd.device,
        "device_torch": torch_fwd.device,
        "note": "; ".join(n for n in (fvcore_fwd.note, torch_fwd.note) if n),
    }
    if train:
        module.train()
        torch_train = count_torch(module, inputs, train=True, device=device)
        row.update(
            train_flops_analytic=cost.train_flops,
            train_flops_torch=torch_train.total,
            train_flops_fvcore=None,
            train_flops_fvcore_note=FVCORE_TRAIN_NOTE,
            uncounted_torch_train=torch_train.uncounted,
        )
    return row


def count_step(entry: LayerEntry | str, case: LayerCase, variant: str | None = None, *,
               device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Analytic, fvcore and FlopCounterMode FLOPs of one decode step (``mode: decode``):
    B new tokens at position n = case.seq_len of a state holding n positions
    (harness.layers.decoding.DecodeStep). Keys as :func:`count_layer`'s forward keys."""
    from harness.layers.decoding import DecodeStep, require_decoder

    entry = get(entry) if isinstance(entry, str) else entry
    variant = entry.default_variant if variant is None else variant
    case = entry.normalize(case)
    step = entry.step_cost_of(case, variant)
    module = entry.build(case, variant, decode=True)
    require_decoder(module)
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(case.batch, 1, case.d_model, generator=generator)  # (B, 1, d)
    sources = extra_inputs(entry, case, generator=generator)  # cross attention: the source
    with torch.no_grad():
        state = module.decode_init(case.batch, case.seq_len + 1, x_t,  # type: ignore[operator]
                                   *sources)
    wrapped = DecodeStep(module, state, case.seq_len)
    torch_step = count_torch(wrapped, x_t, device=device)
    fvcore_step = count_fvcore(wrapped, x_t, device=device)
    return {
        "layer": entry.name,
        "variant": variant,
        "flops_analytic": step.flops if step is not None else None,
        "flops_useful": step.flops if step is not None else None,
        "flops_fvcore": fvcore_step.total,
        "flops_torch": torch_step.total,
        "uncounted_fvcore": fvcore_step.uncounted,
        "uncounted_torch": torch_step.uncounted,
        "device_fvcore": fvcore_step.device,
        "device_torch": torch_step.device,
        "note": "; ".join(n for n in (fvcore_step.note, torch_step.note) if n),
    }
