"""The shape of one layer instance: what a cost model and a module builder are functions of."""

from __future__ import annotations

from dataclasses import dataclass

from harness import schema


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

    One field per size and flag of :mod:`harness.schema` (``schema.LAYER_AXES``, checked by
    a test); the schema says what each means and which are optional.

    Parameters that do not apply to a layer (``heads`` for an RNN) are ``None``.
    ``window`` is the number of positions a restricted attention sees (r in Vaswani et al.);
    ``block`` asks LightConv/DynamicConv for the full Wu et al. block
    (Linear d->2d, GLU, convolution, Linear d->d) instead of the bare convolution.
    ``compile`` is how the case runs, not its shape: builders and cost models ignore it.
    """

    seq_len: int  # n
    d_model: int  # d
    heads: int | None = None  # h / H
    kernel: int | None = None  # k
    window: int | None = None  # r
    max_relative: int | None = None  # K: relative attention's clip distance (None: n - 1)
    src_len: int | None = None  # m: cross attention's source positions
    height: int | None = None  # 2D local attention: image rows (n = height x width)
    width: int | None = None  # image columns (None: height)
    query_height: int | None = None  # 2D query block rows
    query_width: int | None = None  # 2D query block columns
    flange_height: int | None = None  # rows the 2D memory block adds above (and below)
    flange_width: int | None = None  # columns the 2D memory block adds left and right
    causal: bool = False
    block: bool = False
    batch: int = 1
    compile: bool = False  # the timed call runs under torch.compile (builders ignore it)

    def __post_init__(self) -> None:
        for axis in schema.AXES:
            if axis.kind == "size":
                _positive_int(axis.name, getattr(self, axis.name), optional=axis.optional)
            elif axis.kind == "flag" and not isinstance(getattr(self, axis.name), bool):
                raise TypeError(f"{axis.name} must be a bool, got {getattr(self, axis.name)!r}")

    @property
    def n(self) -> int:
        return self.seq_len

    @property
    def d(self) -> int:
        return self.d_model

    # The optional sizes as ints, for the layers that require them (the registry checks a
    # case against ``LayerEntry.required`` before any builder or cost model sees it).
    @property
    def h(self) -> int:
        return self._given("heads", self.heads)

    @property
    def k(self) -> int:
        return self._given("kernel", self.kernel)

    @property
    def r(self) -> int:
        return self._given("window", self.window)

    @property
    def m(self) -> int:
        return self._given("src_len", self.src_len)

    @staticmethod
    def _given(name: str, value: int | None) -> int:
        if value is None:
            raise ValueError(f"this layer needs {name} (got None)")
        return value
