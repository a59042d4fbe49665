"""The shape of one layer instance: what a cost model and a module builder are functions of."""

from __future__ import annotations

from dataclasses import dataclass


def _positive_int(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")


@dataclass(frozen=True)
class LayerCase:
    """Sizes of one layer instance, independent of device, dtype and timing.

    Parameters that do not apply to a layer (``heads`` for an RNN) are ``None``.
    ``window`` is the number of positions a restricted attention sees (r in Vaswani et al.);
    ``block`` asks LightConv/DynamicConv for the full Wu et al. block
    (Linear d->2d, GLU, convolution, Linear d->d) instead of the bare convolution.
    """

    seq_len: int  # n
    d_model: int  # d
    heads: int | None = None  # h / H
    kernel: int | None = None  # k
    window: int | None = None  # r
    causal: bool = False
    block: bool = False
    batch: int = 1

    def __post_init__(self) -> None:
        _positive_int("seq_len", self.seq_len)
        _positive_int("d_model", self.d_model)
        _positive_int("batch", self.batch)
        for name in ("heads", "kernel", "window"):
            _positive_int(name, getattr(self, name), optional=True)
        for name in ("causal", "block"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def n(self) -> int:
        return self.seq_len

    @property
    def d(self) -> int:
        return self.d_model

    def require(self, *names: str) -> None:
        """Raise ValueError naming every required parameter that is missing."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"this layer needs {', '.join(missing)} (got None)")
