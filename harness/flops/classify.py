"""Which ops are FLOP-free under the project's convention, and which may hide multiply-adds.

``flops`` (harness/costs.py) counts only the multiply-adds of matmuls, convolutions and their
fused forms (attention, recurrences). An op that ran without a formula is therefore either

* FLOP-free: elementwise arithmetic and activations (torch tags them ``pointwise``),
  reductions and normalisations (sum, mean, amax, softmax, layer norm), views and aliases,
  copies, padding, concatenation, indexing, factories and random fills, shape queries; or
* *uncounted*: anything else. The default is uncounted, so an op nobody thought about is
  reported rather than silently treated as free.

Names may be given as torch's ``aten.mm`` / ``aten.mm.default`` or TorchScript's
``aten::mm`` (fvcore), in-place (``sigmoid_``) or not.
"""

from __future__ import annotations

import functools
import re

import torch

#: Never FLOP-free, whatever their tags say: names that contract (matmul, conv, attention,
#: recurrence). Checked before the tag rules as a guard.
_CONTRACTING = re.compile(
    r"(mm|mv|dot|conv|rnn|lstm|gru|attention|einsum|linear|matmul|_cell|tensordot|"
    r"trilinear|cdist|kron|multi_head)"
)

#: FLOP-free by name (base names: no namespace, overload or trailing "_").
FLOP_FREE_NAMES: frozenset[str] = frozenset(
    {
        # shape / metadata queries and scalar conversions
        "size", "sym_size", "stride", "sym_stride", "storage_offset", "sym_storage_offset",
        "numel", "sym_numel", "dim", "is_contiguous", "sym_is_contiguous",
        "is_strides_like_format", "is_non_overlapping_and_dense", "layout", "device",
        "Int", "ScalarImplicit", "__and__", "__or__", "__xor__", "__invert__",
        "_local_scalar_dense", "item", "is_same_size",
        "_has_compatible_shallow_copy_type", "resolve_conj", "resolve_neg",
        # copies, dtype/device moves, aliases
        "to", "type_as", "_to_copy", "copy", "clone", "contiguous", "detach", "alias",
        "lift_fresh", "lift_fresh_copy", "_unsafe_view", "view", "reshape", "flatten",
        "unflatten",
        # factories and random fills
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros",
        "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like",
        "new_full", "arange", "scalar_tensor", "tensor", "rand", "rand_like", "randn",
        "randn_like", "randint", "randint_like", "bernoulli", "normal", "uniform", "fill",
        "zero", "linspace", "eye", "tril_indices", "triu_indices",
        # data movement
        "cat", "stack", "hstack", "vstack", "constant_pad_nd", "pad", "reflection_pad1d",
        "replication_pad1d", "im2col", "col2im", "unfold_backward", "index", "index_select",
        "index_put", "index_add", "index_copy", "index_fill", "gather", "scatter",
        "scatter_add", "scatter_reduce", "masked_fill", "masked_scatter", "masked_select",
        "where", "tril", "triu", "roll", "flip", "repeat", "repeat_interleave", "tile",
        "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk", "split",
        "split_with_sizes", "chunk", "unbind", "narrow", "narrow_copy", "slice_scatter",
        "select_scatter", "diagonal_scatter", "as_strided_scatter", "select_backward",
        "slice_backward", "expand_copy", "embedding", "embedding_dense_backward",
        "nonzero", "sort", "topk", "argmax", "argmin", "one_hot",
        # reductions, softmax, normalisation, dropout, activations' backward
        "softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax",
        "_softmax_backward_data", "_log_softmax_backward_data", "logsumexp", "sum", "mean",
        "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean", "norm",
        "linalg_vector_norm", "cumsum", "cumprod", "glu", "glu_backward", "layer_norm",
        "native_layer_norm", "native_layer_norm_backward", "group_norm", "native_group_norm",
        "native_group_norm_backward", "batch_norm", "native_batch_norm",
        "native_batch_norm_backward", "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training", "instance_norm", "rms_norm",
        "_fused_rms_norm", "dropout", "native_dropout", "native_dropout_backward",
        "feature_dropout", "alpha_dropout", "threshold_backward", "gelu_backward",
        "silu_backward", "elu_backward", "hardtanh_backward", "leaky_relu_backward",
        "sigmoid_backward", "tanh_backward", "max_pool1d", "max_pool2d", "avg_pool1d",
        "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    }
)

#: Namespaces whose ops never compute (TorchScript / dispatcher bookkeeping).
_FREE_NAMESPACES = frozenset({"prim"})

_FREE_TAGS = ("pointwise", "reduction", "view_copy", "nondeterministic_seeded", "inplace_view")


def split_name(name: str) -> tuple[str, str]:
    """(namespace, base name) of ``aten.mm.default`` / ``aten::mm`` / ``aten.sigmoid_``.

    The base drops the overload and a trailing in-place underscore (not a leading one).
    """
    text = str(name)
    if "::" in text:
        namespace, _, rest = text.partition("::")
        base = rest.split(".")[0]
    elif "." in text:
        namespace, _, rest = text.partition(".")
        base = rest.split(".")[0]
    else:
        namespace, base = "aten", text
    if base.endswith("_") and not base.endswith("__") and len(base) > 1:
        base = base[:-1]
    return namespace, base


def _takes_tensors(schema: torch.FunctionSchema) -> bool:
    return any("Tensor" in str(a.type) for a in (*schema.arguments, *schema.returns))


@functools.cache
def _aten_tags_say_free(base: str) -> bool:
    """True when a tensor overload of aten.<base> (or aten.<base>_) is tagged pointwise,
    reduction, random fill, or returns a view of its input.

    torch tags overloads unevenly (``add.Tensor`` is pointwise, ``add.Scalar_out`` is not),
    so one tagged tensor overload is enough; contracting names never get here.
    """
    for candidate in (base, base + "_"):
        try:
            packet = getattr(torch.ops.aten, candidate)
        except (AttributeError, RuntimeError):
            continue
        for overload_name in packet.overloads():
            overload = getattr(packet, overload_name)
            if not _takes_tensors(overload._schema):
                continue  # TorchScript's scalar / list overloads (add.int, add.t)
            tags = {str(t).split(".")[-1] for t in overload.tags}
            returns_alias = any(
                r.alias_info is not None and not r.alias_info.is_write
                for r in overload._schema.returns
            )
            if returns_alias or tags.intersection(_FREE_TAGS):
                return True
    return False


@functools.cache
def is_flop_free(name: str) -> bool:
    """Whether an op (by name) does no multiply-adds under the project's FLOP convention."""
    namespace, base = split_name(name)
    if namespace in _FREE_NAMESPACES:
        return True
    if _CONTRACTING.search(base.lower()):
        return False
    if base in FLOP_FREE_NAMES:
        return True
    if namespace == "aten":
        return _aten_tags_say_free(base)
    return False
