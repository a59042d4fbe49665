"""float32 on CUDA: IEEE or TF32 tensor cores, set per case and recorded per row.

By default cuDNN runs float32 convolutions (and RNNs) on TF32 tensor cores while cuBLAS keeps
float32 matmuls IEEE, so two float32 layers would be timed at two precisions, and a
convolution's FLOP/s held against the IEEE float32 peak could read above 1. The harness
makes the choice explicit (``measure.tf32``): false (the default) forces IEEE float32
everywhere, true allows TF32 everywhere, and the peak follows the choice
(:func:`harness.measure.peak_rates.peak`). Each CUDA row records the settings its calls ran
under (:func:`precision_columns`).

``backends`` is ``torch.backends`` or a stand-in (tests); torch >= 2.9 has the
``fp32_precision`` attributes, older versions only the ``allow_tf32`` flags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

#: The columns :func:`precision_columns` fills (declared in harness.schema).
PRECISION_COLUMNS = ("tf32_matmul", "tf32_conv", "tf32_rnn", "float32_matmul_precision")


def _new_api(backends: Any) -> bool:
    return hasattr(backends.cuda.matmul, "fp32_precision")


def _first_set(*values: str) -> str | None:
    return next((v for v in values if v and v != "none"), None)


def precision_columns(backends: Any = None) -> dict[str, object]:
    """Whether float32 matmuls, cuDNN convolutions and cuDNN RNNs may use TF32 now, and
    torch's float32 matmul precision ("highest" = IEEE; None where torch will not say)."""
    b = torch.backends if backends is None else backends
    try:
        matmul_precision: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:  # torch >= 2.9 refuses to answer once backends differ: see tf32_*
        matmul_precision = None
    if _new_api(b):
        root = getattr(b, "fp32_precision", "none")
        cudnn = getattr(b.cudnn, "fp32_precision", "none")
        matmul = _first_set(b.cuda.matmul.fp32_precision, root)
        conv = _first_set(b.cudnn.conv.fp32_precision, cudnn, root)
        rnn = _first_set(b.cudnn.rnn.fp32_precision, cudnn, root)
        return {
            "tf32_matmul": (matmul == "tf32") if matmul else matmul_precision not in (
                "highest", None),
            "tf32_conv": (conv or "tf32") == "tf32",  # cuDNN's default is TF32
            "tf32_rnn": (rnn or "tf32") == "tf32",
            "float32_matmul_precision": matmul_precision,
        }
    return {
        "tf32_matmul": bool(b.cuda.matmul.allow_tf32),
        "tf32_conv": bool(b.cudnn.allow_tf32),
        "tf32_rnn": bool(b.cudnn.allow_tf32),
        "float32_matmul_precision": matmul_precision,
    }


@contextlib.contextmanager
def float32_mode(tf32: bool, backends: Any = None) -> Iterator[None]:
    """TF32 allowed (``tf32``) or IEEE forced for matmuls, convolutions and RNNs, restored
    afterwards (an inline run must not change its host process for good)."""
    b = torch.backends if backends is None else backends
    mode = "tf32" if tf32 else "ieee"
    if _new_api(b):
        knobs = (b.cuda.matmul, b.cudnn.conv, b.cudnn.rnn)
        before = [k.fp32_precision for k in knobs]
        for knob in knobs:
            knob.fp32_precision = mode
        try:
            yield
        finally:
            for knob, value in zip(knobs, before, strict=True):
                knob.fp32_precision = value
        return
    old = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = old
