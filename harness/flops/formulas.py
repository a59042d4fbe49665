"""FLOP formulas (2 per multiply-add) from argument shapes, shared by both counters.

Each is worked out from the op's own arguments; the notes say what the kernel executes.

Recurrences. A recurrent layer applies each of its weight matrices (``W_ih`` of shape
(g*h, d_in), ``W_hh`` (g*h, h_out) and, for an LSTM with projections, ``W_hr`` (h_out, h);
g = 1, 4, 3 gates for RNN, LSTM, GRU) once to every token of its input, per direction::

    forward = 2 * T * sum(W.numel() for every 2-D weight),  T = tokens = B * n

which is 2*g*B*n*(d_in*h + h*h) for one plain layer. Biases are elementwise (not counted).
Backward runs, per weight, one product for the weight's gradient and one for the gradient
of the weight's input, so a kernel that computes every gradient costs 2x forward (oneDNN's
``mkldnn_rnn_layer_backward``, cuDNN's backward-data + backward-weights). The step-by-step
decomposition (nn.GRU / nn.RNN on CPU, every RNN on the meta device) skips the gradient of
the initial state when it does not require grad: one ``W_hh`` product per layer and
direction fewer (2*B*g*h*h_out).

Attention. q k^T and p v: ``2*B*h*L*S*(E + Ev)`` (the FlashAttention convention,
4*B*h*n^2*d_head; softmax and projections are not in the op). Causal masks are not
discounted, as torch's formulas for the CUDA kernels do. The fused backward recomputes
q k^T and runs four more products: ``2*B*h*L*S*(3E + 2Ev)`` = 2.5x forward.

Convolution backward. Each forward multiply-add x[i]*w[j] -> y[o] has exactly one partner
in the input gradient and one in the weight gradient, so each requested gradient costs
the forward count. (torch 2.13's own formula ignores ``groups`` in the weight gradient and
counts a depthwise conv's weight gradient ``groups`` times too high.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Shape = Sequence[int]

#: Gates per cell, by the mode numbers cuDNN and oneDNN use: 0 RNN_RELU, 1 RNN_TANH, 2 LSTM, 3 GRU.
GATES_BY_MODE: dict[int, int] = {0: 1, 1: 1, 2: 4, 3: 3}


def numel(shape: Shape) -> int:
    return math.prod(int(s) for s in shape)


def tokens(input_shape: Shape) -> int:
    """Rows a recurrence processes: B*n for (n, B, d) / (B, n, d), or the packed length."""
    return numel(input_shape[:-1])


def matrix_elements(weight_shapes: Sequence[Shape]) -> int:
    """Sum of the sizes of the 2-D weights (biases, 1-D, are elementwise)."""
    return sum(numel(s) for s in weight_shapes if len(s) == 2)


def rnn_forward_flops(input_shape: Shape, weight_shapes: Sequence[Shape]) -> int:
    """Every 2-D weight applied once to every token: 2 * T * sum(numel(W))."""
    return 2 * tokens(input_shape) * matrix_elements(weight_shapes)


def rnn_decomposed_backward_flops(
    input_shape: Shape,
    batch: int,
    weight_shapes: Sequence[Shape],
    num_layers: int,
    directions: int,
    *,
    input_grad: bool,
    hx_grad: bool,
    weight_grad: Sequence[bool],
) -> int:
    """Backward of the step-by-step recurrence, counting only the gradients autograd needs.

    Per layer and direction, with weights ``[W_ih, W_hh, (b_ih, b_hh), (W_hr)]``:
    weight gradients ``2*T*numel(W)`` for each weight that requires grad; the gradient of
    W_ih's input when that input requires grad; W_hh's input gradient at steps 1..n-1 when
    the layer's states require grad, plus step 0 only when the initial state does; W_hr's
    input gradient at every step when the states require grad.
    """
    t = tokens(input_shape)
    steps = t // batch if batch else 0
    groups = num_layers * directions
    if groups <= 0 or len(weight_shapes) % groups:
        raise ValueError(f"{len(weight_shapes)} RNN weights do not split into {groups} groups")
    per = len(weight_shapes) // groups
    has_proj = per in (3, 5)
    total = 0
    layer_input_grad = input_grad
    for layer in range(num_layers):
        first = layer * directions * per
        layer_weight_grad = any(weight_grad[first : first + directions * per])
        states_grad = layer_input_grad or layer_weight_grad or hx_grad
        for direction in range(directions):
            base = first + direction * per
            shapes = weight_shapes[base : base + per]
            grads = weight_grad[base : base + per]
            for shape, needs in zip(shapes, grads, strict=True):
                if needs and len(shape) == 2:
                    total += 2 * t * numel(shape)
            w_ih, w_hh = numel(shapes[0]), numel(shapes[1])
            if layer_input_grad:
                total += 2 * t * w_ih
            if states_grad:
                total += 2 * batch * max(steps - 1, 0) * w_hh
                if has_proj:
                    total += 2 * t * numel(shapes[-1])
            if hx_grad:
                total += 2 * batch * w_hh
        layer_input_grad = states_grad
    return total


def sdpa_forward_flops(q: Shape, k: Shape, v: Shape) -> int:
    """q k^T and p v for q (..., L, E), k (..., S, E), v (..., S, Ev); batch dims from q."""
    batch = numel(q[:-2])
    length, e = int(q[-2]), int(q[-1])
    keys, ev = int(k[-2]), int(v[-1])
    return 2 * batch * length * keys * (e + ev)


def sdpa_backward_flops(q: Shape, k: Shape, v: Shape) -> int:
    """Fused backward: recompute q k^T (E), dP = dO v^T (Ev), dV = P^T dO (Ev),
    dQ = dS k (E), dK = dS^T q (E)."""
    batch = numel(q[:-2])
    length, e = int(q[-2]), int(q[-1])
    keys, ev = int(k[-2]), int(v[-1])
    return 2 * batch * length * keys * (3 * e + 2 * ev)


def conv_forward_flops(x: Shape, w: Shape, out: Shape, transposed: bool) -> int:
    """2 * batch * (C_out * C_in/groups * prod(kernel)) * prod(spatial positions computed).

    The weight shape already carries C_in/groups; a transposed conv visits input positions.
    """
    positions = numel((x if transposed else out)[2:])
    return 2 * int(x[0]) * numel(w) * positions


def conv_backward_flops(
    grad_out: Shape, x: Shape, w: Shape, transposed: bool, output_mask: Sequence[bool]
) -> int:
    """Input gradient and weight gradient each cost one forward (bias gradient is a sum)."""
    forward = conv_forward_flops(x, w, grad_out, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def matmul_flops(a: Shape, b: Shape) -> int:
    """torch.matmul semantics: 1-D operands promoted, batch dims broadcast."""
    a_batch, m, k = ([], 1, int(a[0])) if len(a) == 1 else (list(a[:-2]), int(a[-2]), int(a[-1]))
    b_batch, n = ([], 1) if len(b) == 1 else (list(b[:-2]), int(b[-1]))
    batch_dims = max(len(a_batch), len(b_batch))
    a_batch = [1] * (batch_dims - len(a_batch)) + a_batch
    b_batch = [1] * (batch_dims - len(b_batch)) + b_batch
    batch = math.prod(max(int(x), int(y)) for x, y in zip(a_batch, b_batch, strict=True))
    return 2 * batch * m * k * n
