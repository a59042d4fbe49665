"""Measured structural metrics: maximum path length and sequential operations.

Both are *measured* on real modules built by the registry (the layer's reference variant),
so they can be set beside the analytic values of the cost models (docs/metrics.md, "Maximum
path length" and "Sequential operations").

Maximum path length (Vaswani et al. 2017, sec. 4)
    Parallel layers: the single-layer dependency matrix ``D`` (``D[t, s]``: output t depends
    on input s) is measured from the Jacobian's sparsity on a small float64 instance with
    random weights (generic weights make accidental zeros measure-zero). A stack of L layers
    has dependency ``D_{L-1} @ ... @ D_0`` (boolean product); the path length is the least
    L >= 1 at which every output depends on every input (causal cases: every input s <= t),
    ``math.inf`` when that never happens. Identical layers use repeated squaring; layers whose
    structure changes with depth (dilation k**depth) are measured depth by depth until two
    consecutive depths have the same matrix, after which the stack is taken as identical.

    Recurrent layers (modules with ``initial_state`` / ``step``): the position-level graph
    has nodes x_s and h_t, an edge x_t -> h_t when step t's outputs depend on x_t and
    h_{t-1} -> h_t when they depend on the incoming state, both measured per step with
    fresh leaves. Shortest paths are computed in the graph's time order; the path length
    is the longest shortest path (n for a correct RNN). The whole unrolled forward's
    Jacobian sparsity is checked against the graph's reachability (this checks the loop).

Sequential operations
    The longest path (in nodes) through the autograd ``grad_fn`` DAG of the reference
    variant's output, at several n; ``seq_ops`` extrapolates it from n0 and n0 + 1
    (n for a recurrent layer whose depth is linear in n, 1 for a depth constant in n).

Public API
    ``measure_path_length`` and ``measure_seq_ops`` (a registered layer's case, measured on a
    small d and batch 1, cached per structural case), ``dependency_matrix``,
    ``stack_path_length``, ``recurrent_path_length``, ``graph_depth`` / ``autograd_depth``.

Cost: a dependency matrix takes n probes, each one forward (and backward) pass of the
layer, so O(n^3) for dense attention (about 5-10 s at n = 512 on 2 busy cores, 8x that at
1024) and O(n^2) for windowed layers and recurrences (about 1 s at n = 512).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from harness.registry import LayerEntry, get
from harness.spec import LayerCase

#: Probe passes of the parallel layers hold at most this many (probe, n, n) elements: see
#: ``default_chunk``.
_PROBE_BUDGET = 2**20

#: A probe pass quicker than this doubles the next pass's probes (windowed layers are cheap
#: per probe, so the memory-safe default chunk would leave them overhead-bound).
_FAST_PASS_S = 0.02


# --------------------------------------------------------------------------- dependency


def _prepared(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy in ``dtype`` and eval mode (no dropout / DropConnect), leaving ``module`` as is."""
    return copy.deepcopy(module).to(dtype).eval()


def default_chunk(n: int) -> int:
    """Probes per pass for a parallel layer of length n.

    Keeps a (chunk, n, n) float64 tensor (an attention score matrix per head) under 8 MiB:
    small tensors are recycled by the C allocator, big ones are page-faulted in afresh on
    every allocation, which costs more than the arithmetic at these sizes.
    """
    return max(1, min(n, _PROBE_BUDGET // (n * n)))


def dependency_matrix(
    module: nn.Module,
    n: int,
    d: int,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    atol: float = 0.0,
    chunk: int | None = None,
    mode: str = "auto",
) -> Tensor:
    """``D`` (n, n) bool: ``D[t, s]`` is True when output position t depends on input s.

    Measured by probing with the batch as the probe axis; every batch element carries the
    same random input. ``mode="forward"`` (forward-mode AD): element b gets a random tangent
    on input position s_b only, so its output tangent is J[:, :, s_b, :] v - nonzero at t
    exactly where the Jacobian block J[t, :, s_b, :] is (up to a measure-zero accident of the
    random v): column s_b. ``mode="reverse"``: a random cotangent on output t_b gives row t_b.
    A dependency is a derivative with magnitude > ``atol``.

    ``mode="auto"`` picks the cheaper mode; both are exact, so only the time differs.
    Recurrent modules (``initial_state`` / ``step``) use forward mode: the backward of an
    unrolled loop's ``x[:, t]`` writes a dense (B, n, d) gradient per step, O(n^2) per probe.
    Other modules time one pass of each mode and go on with the faster (reverse is ~2x
    faster through softmax attention, forward is ~100x faster through an unfold whose
    dilation exceeds n); the two passes must agree where they overlap. Ops without forward
    AD (CPU SDPA) fall back to reverse mode.

    Assumes batch elements are independent (true of every layer of the zoo; the tests check
    it). Runs on a copy in ``dtype`` and eval mode, on one thread (the ops are tiny).
    """
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    recurrent = is_recurrent(module)
    if chunk is None and recurrent and mode != "reverse":
        chunk = n  # a probe costs O(n d) memory: one pass
    prober = _Prober(module, n, d, dtype=dtype, seed=seed, atol=atol, chunk=chunk)
    if mode == "reverse":
        return prober.probe(torch.arange(n), forward=False)
    if mode == "forward" or recurrent:
        return prober.columns(torch.arange(n), fallback=mode == "auto").T.contiguous()
    return prober.fastest()


@contextmanager
def _single_thread() -> Iterator[None]:
    """Tiny ops run faster on one thread, and much faster when other processes share cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Prober:
    """One module (an eval-mode copy in ``dtype``), one random input, probed ``chunk`` at a time."""

    def __init__(
        self, module: nn.Module, n: int, d: int, *, dtype: torch.dtype, seed: int,
        atol: float, chunk: int | None = None,
    ) -> None:
        self.grow = chunk is None  # the default chunk doubles while passes stay quick
        chunk = default_chunk(n) if chunk is None else chunk
        if n < 1 or d < 1 or chunk < 1:
            raise ValueError(f"n, d and chunk must be positive, got {n}, {d}, {chunk}")
        self.net = _prepared(module, dtype)
        self.gen = torch.Generator().manual_seed(seed)
        self.x0 = torch.randn(1, n, d, generator=self.gen, dtype=dtype)  # (1, n, d)
        self.n, self.d, self.dtype, self.atol, self.chunk = n, d, dtype, atol, chunk

    def columns(self, positions: Tensor, *, fallback: bool) -> Tensor:
        """Forward-mode columns; with ``fallback``, reverse-mode rows (transposed) when an
        op has no forward-AD formula."""
        try:
            return self.probe(positions, forward=True)
        except (RuntimeError, NotImplementedError):
            if not fallback:
                raise
        rows = self.probe(torch.arange(self.n), forward=False)  # (n, n)
        return rows.T[positions]

    def fastest(self) -> Tensor:
        """(n, n) matrix by whichever mode ran its first pass faster (see dependency_matrix)."""
        head, tail = torch.arange(self.n)[: self.chunk], torch.arange(self.n)[self.chunk :]
        start = time.perf_counter()
        rows = self.probe(head, forward=False)  # (c, n)
        reverse_s = time.perf_counter() - start
        try:
            start = time.perf_counter()
            cols = self.probe(head, forward=True)  # (c, n)
            forward_s = time.perf_counter() - start
        except (RuntimeError, NotImplementedError):  # no forward-AD formula for some op
            return torch.cat([rows, self.probe(tail, forward=False)])
        if not torch.equal(rows[:, head], cols[:, head].T):
            raise RuntimeError("forward- and reverse-mode probes disagree on D[head, head]")
        if forward_s < reverse_s:
            return torch.cat([cols, self.probe(tail, forward=True)]).T.contiguous()
        return torch.cat([rows, self.probe(tail, forward=False)])

    def probe(self, positions: Tensor, *, forward: bool) -> Tensor:
        """(len(positions), n) bool: per probed position, the positions it reaches
        (forward: outputs reached from an input; reverse: inputs read by an output)."""
        found = torch.zeros(len(positions), self.n, dtype=torch.bool)
        size, start = self.chunk, 0
        with _single_thread():
            while start < len(positions):
                pos = positions[start : start + size]
                began = time.perf_counter()
                g = self._derivative(pos, forward)  # (c, n, d)
                if not torch.isfinite(g).all():
                    raise RuntimeError("non-finite derivative while probing dependencies")
                found[start : start + len(pos)] = g.abs().amax(dim=-1) > self.atol
                start += len(pos)
                if self.grow and time.perf_counter() - began < _FAST_PASS_S:
                    size *= 2  # a quick pass is a small one: batch more probes
        return found

    def _derivative(self, pos: Tensor, forward: bool) -> Tensor:
        c, n, d = len(pos), self.n, self.d
        probe = torch.zeros(c, n, d, dtype=self.dtype)  # (c, n, d)
        probe[torch.arange(c), pos] = torch.randn(c, d, generator=self.gen, dtype=self.dtype)
        probe *= _probe_scale(self.dtype)
        x = self.x0.expand(c, n, d).clone()  # (c, n, d)
        if forward:  # no backward graph needed: forward AD runs under no_grad
            with torch.no_grad(), fwAD.dual_level(), warnings.catch_warnings():
                # torch's first make_dual loads its jvp decompositions via torch.jit.script
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated")
                y = self.net(fwAD.make_dual(x, probe))
                _check_output(y, c, n, d)
                g = fwAD.unpack_dual(y).tangent  # (c, n, d); None: no dependence at all
        else:
            with torch.enable_grad():
                x.requires_grad_(True)
                y = self.net(x)
                _check_output(y, c, n, d)
                (g,) = torch.autograd.grad(y, x, probe, allow_unused=True)  # (c, n, d)
        return torch.zeros(c, n, d, dtype=self.dtype) if g is None else g


def _probe_scale(dtype: torch.dtype) -> float:
    """A power of two near sqrt(max float) to scale probes by: derivatives that decay
    geometrically along a long recurrence (about 1e-280 after 1024 steps of a tanh RNN in
    float64) then stay above underflow, while the Jacobian entries of a small layer stay far
    below overflow."""
    return 2.0 ** (math.frexp(torch.finfo(dtype).max)[1] // 2)


def _check_output(y: object, c: int, n: int, d: int) -> None:
    if not isinstance(y, Tensor) or y.shape != (c, n, d):
        raise ValueError(f"module must map (B, n, d) -> (B, n, d), got {_shape(y)}")


def _shape(y: object) -> object:
    return tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__


# --------------------------------------------------------------------------- stacks


def bool_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Boolean matrix product (a @ b > 0) via float32 matmul: exact for n < 2**24."""
    return (a.to(torch.float32) @ b.to(torch.float32)) > 0


def coverage_target(n: int, causal: bool) -> Tensor:
    """Pairs (t, s) that must be connected: all, or s <= t for causal layers."""
    full = torch.ones(n, n, dtype=torch.bool)
    return torch.tril(full) if causal else full


def covers(reach: Tensor, target: Tensor) -> bool:
    return bool((reach | ~target).all())


def least_power(
    layer: Tensor, target: Tensor, start: Tensor | None = None, *, max_layers: int | None = None
) -> float:
    """Least L >= 0 with ``layer^L @ start`` covering ``target``; inf if never.

    With self-dependence (a full diagonal) the powers only grow, so repeated squaring plus a
    binary descent finds L in O(log L) products; without it the powers are searched one by
    one until they cycle (inf) or ``max_layers`` (default 4n) is reached (nan: unknown).
    """
    n = layer.shape[0]
    reach = torch.eye(n, dtype=torch.bool) if start is None else start
    if covers(reach, target):
        return 0
    # an output that reads nothing (it stays so for L >= 1), or, from the identity, an input
    # that no output reads
    if (target.any(1) & ~layer.any(1)).any():
        return math.inf
    if start is None and (target.any(0) & ~layer.any(0)).any():
        return math.inf
    with _single_thread():
        if bool(layer.diagonal().all()):
            return _least_power_monotone(layer, target, reach)
        limit = 4 * n if max_layers is None else max_layers
        return _least_power_linear(layer, target, reach, limit)


def _least_power_monotone(layer: Tensor, target: Tensor, reach: Tensor) -> float:
    powers = [layer]  # powers[j] = layer ** (2 ** j)
    while not covers(bool_matmul(powers[-1], reach), target):
        nxt = bool_matmul(powers[-1], powers[-1])
        if torch.equal(nxt, powers[-1]):
            return math.inf  # the closure is reached and still misses a pair
        powers.append(nxt)
    count = 0  # largest count with layer**count @ reach not covering, built bit by bit
    for j in range(len(powers) - 1, -1, -1):
        candidate = bool_matmul(powers[j], reach)
        if not covers(candidate, target):
            reach, count = candidate, count + 2**j
    return count + 1


def _least_power_linear(layer: Tensor, target: Tensor, reach: Tensor, max_layers: int) -> float:
    seen = {reach.numpy().tobytes()}
    for count in range(1, max_layers + 1):
        reach = bool_matmul(layer, reach)
        if covers(reach, target):
            return count
        key = reach.numpy().tobytes()
        if key in seen:
            return math.inf
        seen.add(key)
    return math.nan


def stack_path_length(
    build: Callable[[int], nn.Module],
    n: int,
    d: int,
    *,
    causal: bool,
    max_depth: int = 64,
    seed: int = 0,
) -> float:
    """Least L >= 1 such that a stack of L layers connects every required pair; inf if never.

    ``build(depth)`` makes the layer at index ``depth`` (registry builders take the depth:
    dilated convolutions use dilation k**depth). Depth 0 is measured in full; a few columns
    of depth 1 are compared with it. Equal: the stack is taken as identical layers (repeated
    squaring). Different: depths are measured and multiplied in order until two consecutive
    depths agree, the rest of the stack then being copies of the last one (true of dilation
    k**depth, which sees only itself once k**depth >= n); nan past ``max_depth``.
    """
    target = coverage_target(n, causal)
    first = dependency_matrix(build(0), n, d, seed=seed)
    if covers(first, target):
        return 1.0
    if _same_structure(build(1), first, n, d, seed=seed + 1):
        return float(least_power(first, target))
    prev, reach, layers = first, first, 1
    for depth in range(1, max_depth):
        current = dependency_matrix(build(depth), n, d, seed=seed + depth)
        if torch.equal(current, prev):
            return float(layers + least_power(current, target, reach))
        reach, layers = bool_matmul(current, reach), layers + 1
        if covers(reach, target):
            return float(layers)
        prev = current
    return math.nan


def _same_structure(module: nn.Module, reference: Tensor, n: int, d: int, seed: int) -> bool:
    """Whether ``module`` has ``reference``'s dependencies at a sample of positions: the ends,
    the middle and a few in between (columns by forward mode, else rows by reverse mode)."""
    picks = {0, 1, n // 4, n // 3, n // 2, (2 * n) // 3, (3 * n) // 4, n - 2, n - 1}
    pos = torch.tensor(sorted(picks & set(range(n))))
    prober = _Prober(module, n, d, dtype=torch.float64, seed=seed, atol=0.0)
    try:
        return torch.equal(prober.probe(pos, forward=True), reference.T[pos])
    except (RuntimeError, NotImplementedError):  # no forward-AD formula for some op
        return torch.equal(prober.probe(pos, forward=False), reference[pos])


def compose(matrices: Sequence[Tensor]) -> Tensor:
    """Dependency of a stack: ``matrices[-1] @ ... @ matrices[0]`` (first layer first)."""
    if not matrices:
        raise ValueError("compose needs at least one matrix")
    reach = matrices[0]
    for layer in matrices[1:]:
        reach = bool_matmul(layer, reach)
    return reach


# --------------------------------------------------------------------------- recurrent


def is_recurrent(module: nn.Module) -> bool:
    """True for modules exposing the unrolled interface ``initial_state`` / ``step``."""
    return callable(getattr(module, "initial_state", None)) and callable(
        getattr(module, "step", None)
    )


def _leaves(tree: Any) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    raise TypeError(f"recurrent state must be tensors in tuples/lists, got {type(tree).__name__}")


def _map(tree: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(tree, Tensor):
        return fn(tree)
    return type(tree)(_map(item, fn) for item in tree)


@dataclass(frozen=True)
class StepGraph:
    """Direct edges of a recurrence, measured per step (index t = time step)."""

    from_input: Tensor  # (n,) bool: x_t -> h_t
    from_state: Tensor  # (n,) bool: h_{t-1} -> h_t (entry 0: the initial state, not a node)


def step_graph(
    module: nn.Module, n: int, d: int, *, dtype: torch.dtype = torch.float64, seed: int = 0
) -> StepGraph:
    """Measure each step's direct dependencies with fresh leaves for x_t and the state.

    The states fed in are the ones the recurrence actually reaches on a random input, so
    value-dependent structure (saturation, gating) is seen as it happens.
    """
    if not is_recurrent(module):
        raise TypeError(f"{type(module).__name__} has no initial_state/step interface")
    net: Any = _prepared(module, dtype)  # has initial_state/step (checked above)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, d, generator=gen, dtype=dtype)  # (1, n, d)
    from_input = torch.zeros(n, dtype=torch.bool)
    from_state = torch.zeros(n, dtype=torch.bool)
    state = net.initial_state(x)
    with torch.enable_grad(), _single_thread():
        for t in range(n):
            x_t = x[:, t].clone().requires_grad_(True)  # (1, d)
            state_in = _map(state, lambda s: s.detach().clone().requires_grad_(True))
            h, state_out = net.step(x_t, state_in)
            outputs = [h, *_leaves(state_out)]
            cotangents = [torch.randn(o.shape, generator=gen, dtype=dtype) for o in outputs]
            inputs = [x_t, *_leaves(state_in)]
            grads = torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)
            nonzero = [g is not None and bool((g.abs() > 0).any()) for g in grads]
            from_input[t] = nonzero[0]
            from_state[t] = any(nonzero[1:])
            state = _map(state_out, Tensor.detach)
    return StepGraph(from_input=from_input, from_state=from_state)


def chain_distances(graph: StepGraph) -> Tensor:
    """Hop counts (n_in, n_out) of shortest paths x_s -> ... -> h_t (inf: unreachable).

    Every edge ends at a step node and starts at the same or the previous time, so time order
    is a topological order and one sweep over t computes all shortest paths exactly.
    """
    n = graph.from_input.shape[0]
    dist = torch.full((n, n), math.inf, dtype=torch.float64)  # dist[s, t]
    for t in range(n):
        if t > 0 and graph.from_state[t]:
            dist[:, t] = dist[:, t - 1] + 1
        if graph.from_input[t]:
            dist[t, t] = min(float(dist[t, t]), 1.0)
    return dist


def recurrent_path_length(
    module: nn.Module, n: int, d: int, *, check_forward: bool = True, seed: int = 0
) -> float:
    """Longest shortest path x_s -> h_t over causal pairs (n for a correct RNN); inf if a pair
    s <= t is unreachable. With ``check_forward`` the whole unrolled forward's dependency
    matrix must equal the graph's reachability, else RuntimeError (the loop is not the chain
    the steps describe)."""
    dist = chain_distances(step_graph(module, n, d, seed=seed))
    reachable = torch.isfinite(dist).T  # (t, s)
    if check_forward:
        forward = dependency_matrix(module, n, d, seed=seed, chunk=n)
        if not torch.equal(forward, reachable):
            bad = (forward != reachable).nonzero()[:5].tolist()
            raise RuntimeError(
                f"forward dependencies differ from the step graph at (t, s) pairs {bad}"
            )
    if not covers(reachable, coverage_target(n, causal=True)):
        return math.inf
    return float(dist[torch.isfinite(dist)].max())


# --------------------------------------------------------------------------- graph depth


def autograd_depth(output: Tensor) -> int:
    """Nodes on the longest path from ``output.grad_fn`` to a leaf of the autograd DAG.

    Iterative post-order walk (an unrolled LSTM at n = 4096 has ~10^5 nodes, far past
    Python's recursion limit); 0 when ``output`` has no graph.
    """
    root = output.grad_fn
    if root is None:
        return 0
    depth: dict[Any, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in depth:
            continue
        children = [child for child, _ in node.next_functions if child is not None]
        if expanded:
            depth[node] = 1 + max((depth[c] for c in children), default=0)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in depth)
    return depth[root]


def graph_depth(module: nn.Module, x: Tensor, *extra: Tensor) -> int:
    """Operation-graph depth of ``module(x, *extra)``, with every input made a leaf
    requiring grad (``extra``: a layer's inputs after x, an encoder output)."""
    with torch.enable_grad():
        y = module(*(t.detach().requires_grad_(True) for t in (x, *extra)))
    if not isinstance(y, Tensor):
        raise ValueError(f"module must return a tensor, got {type(y).__name__}")
    return autograd_depth(y)


# --------------------------------------------------------------------------- registry API


def small_d(entry: LayerEntry, case: LayerCase) -> int:
    """A small d_model the layer accepts: 2 * heads (or 4), structure does not depend on d."""
    heads = case.heads if "heads" in entry.params and case.heads else None
    candidates = [2 * heads, 4 * heads, heads] if heads else [4, 2, 8]
    for d in candidates:
        if entry.problem(entry.normalize(replace(case, d_model=d, batch=1))) is None:
            return d
    reason = entry.problem(entry.normalize(replace(case, d_model=candidates[0], batch=1)))
    raise ValueError(f"cannot build a small {entry.name}: {reason}")


def structural_case(layer_name: str, case: LayerCase, d: int | None = None) -> LayerCase:
    """The cache key: the case normalised for the layer, with batch 1 and a small d."""
    entry = get(layer_name)
    d = small_d(entry, case) if d is None else d
    key = entry.normalize(replace(case, d_model=d, batch=1))
    reason = entry.problem(key)
    if reason:
        raise ValueError(f"cannot measure {layer_name}: {reason}")
    return key


def _build(entry: LayerEntry, case: LayerCase, depth: int, seed: int) -> nn.Module:
    """The reference variant with fresh generic random weights (seeded, global RNG untouched).

    Parameters are redrawn ~ N(0, 1/fan) so no zero-initialised weight (a common choice for
    biases or output projections) can hide a dependency.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1009 * depth)
        module = entry.build(case, entry.reference_variant, depth)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 1.0 / math.sqrt(max(1, p.shape[-1] if p.dim() else 1)))
    return module


def measure_path_length(
    layer_name: str, case: LayerCase, *, max_n: int = 1024, d: int | None = None
) -> float:
    """Measured max path length of the layer's reference variant for ``case``.

    Returns ``math.inf`` when no stack connects all required pairs and ``math.nan`` when
    ``case.seq_len > max_n`` (not measured: cost grows like n^3). Raises ValueError when the
    layer cannot be built for the case. Cached per structural case.
    """
    if case.seq_len > max_n:
        return math.nan
    key = structural_case(layer_name, case, d)
    with _single_thread():
        return _path_length_cached(layer_name, key)


@lru_cache(maxsize=1024)
def _path_length_cached(layer_name: str, case: LayerCase, seed: int = 0) -> float:
    entry = get(layer_name)
    n, d = case.seq_len, case.d_model
    module = _build(entry, case, 0, seed)
    if entry.inputs is not None:  # cross attention: paths start at the source positions
        return source_path_length(module, n, d, entry.extra_shapes(case), seed=seed)
    if is_recurrent(module):
        return recurrent_path_length(module, n, d, seed=seed)

    def build(depth: int) -> nn.Module:
        return module if depth == 0 else _build(entry, case, depth, seed)

    return stack_path_length(build, n, d, causal=case.causal, seed=seed)


@dataclass(frozen=True)
class SeqOps:
    """Measured sequential operations: graph depths at n, n0 and n0 + 1, and the derived count.

    ``seq_ops = n0 + (depth - depth_n0) / (depth_n0_next - depth_n0)`` when the depth grows
    from n0 to n0 + 1 (the number of sequential steps if the depth is linear in n: n for a
    recurrence), 1.0 when the depth is the same at n and n0, else nan (growth that is not
    linear from n0; ``note`` says so).
    """

    n: int
    depth: int
    n0: int
    depth_n0: int
    depth_n0_next: int
    seq_ops: float
    note: str = ""


def _at_length(case: LayerCase, n: int) -> LayerCase:
    """The case at sequence length n; an image (2D local attention) at height n // width."""
    if case.height is None:
        return replace(case, seq_len=n)
    width = case.width or case.height
    return replace(case, seq_len=n, height=n // width)


def _first_valid_n0(entry: LayerEntry, case: LayerCase) -> int:
    """The least n0 where the case exists at n0 and the next length (images: the next
    height, so n0 and n0 + width)."""
    step = (case.width or case.height) if case.height is not None else 1
    lowest = max(2, case.kernel or 0, case.window or 0)
    for n0 in range(step * max(1, -(-lowest // step)), (lowest + 64) * step, step):
        if all(entry.problem(_at_length(case, m)) is None for m in (n0, n0 + step)):
            return n0
    raise ValueError(f"no valid small seq_len for {entry.name} near {lowest}")


@lru_cache(maxsize=1024)
def _depth_cached(layer_name: str, case: LayerCase, seed: int = 0) -> int:
    entry = get(layer_name)
    module = _build(entry, case, 0, seed).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, case.seq_len, case.d_model, generator=gen)  # (1, n, d)
    return graph_depth(module, x, *_extra(entry, case, gen))


def measure_seq_ops(
    layer_name: str, case: LayerCase, *, n0: int | None = None, d: int | None = None
) -> SeqOps:
    """Graph depth of the reference variant at ``case.seq_len`` and at n0, n0 + 1, and the
    sequential-operation count derived from them (see :class:`SeqOps`). Raises ValueError
    when the layer cannot be built for the case."""
    key = structural_case(layer_name, case, d)
    entry = get(layer_name)
    n0 = _first_valid_n0(entry, key) if n0 is None else n0
    step = (key.width or key.height) if key.height is not None else 1  # images: a row
    with _single_thread():
        depth = _depth_cached(layer_name, key)
        depth0 = _depth_cached(layer_name, _at_length(key, n0))
        depth1 = _depth_cached(layer_name, _at_length(key, n0 + step))
    note = ""
    if depth1 > depth0:
        seq_ops = n0 + step * (depth - depth0) / (depth1 - depth0)
    elif depth == depth0:
        seq_ops = 1.0
    else:
        seq_ops = math.nan
        note = f"graph depth {depth0} at n={n0} and n={n0 + 1} but {depth} at n={key.seq_len}"
    return SeqOps(key.seq_len, depth, n0, depth0, depth1, seq_ops, note)


def _extra(entry: LayerEntry, case: LayerCase, gen: torch.Generator,
           dtype: torch.dtype = torch.float32) -> tuple[Tensor, ...]:
    return tuple(torch.randn(shape, generator=gen, dtype=dtype)
                 for shape in entry.extra_shapes(case))


class _WithInputs(nn.Module):
    """``module(x, *extra)`` as a module of x alone, the extra inputs held as buffers (so a
    dtype change converts them too)."""

    def __init__(self, module: nn.Module, extra: Sequence[Tensor]) -> None:
        super().__init__()
        self.module = module
        self.count = len(extra)
        for i, t in enumerate(extra):
            self.register_buffer(f"extra_{i}", t)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x, *(getattr(self, f"extra_{i}") for i in range(self.count)))


def source_dependency(module: nn.Module, n: int, d: int, extra: Sequence[Tensor], *,
                      dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    """``S`` (n, m) bool: ``S[t, s]`` is True when output t depends on position s of the
    first extra input (the source, (1, m, d_src)), by reverse mode: a random cotangent on
    output t, the gradient's support over the source positions. Batch-1 inputs."""
    net = _prepared(module, dtype)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, n, d, generator=gen, dtype=dtype)  # (1, n, d)
    rest = [t.to(dtype) for t in extra]
    m = rest[0].shape[1]
    chunk = max(1, min(n, _PROBE_BUDGET // max(1, n * m)))
    found = torch.zeros(n, m, dtype=torch.bool)
    with _single_thread(), torch.enable_grad():
        for start in range(0, n, chunk):
            pos = torch.arange(start, min(n, start + chunk))
            c = len(pos)
            src = rest[0].expand(c, *rest[0].shape[1:]).clone().requires_grad_(True)
            others = [t.expand(c, *t.shape[1:]) for t in rest[1:]]
            y = net(x0.expand(c, n, d), src, *others)
            _check_output(y, c, n, d)
            probe = torch.zeros_like(y)
            probe[torch.arange(c), pos] = torch.randn(c, d, generator=gen, dtype=dtype)
            (g,) = torch.autograd.grad(y, src, probe, allow_unused=True)  # (c, m, d_src)
            if g is not None:
                found[start : start + c] = g.abs().amax(dim=-1) > 0
    return found


def source_path_length(module: nn.Module, n: int, d: int,
                       shapes: Sequence[tuple[int, ...]], *, seed: int = 0) -> float:
    """Max path length from the source positions to the outputs of a stack in which every
    layer reads the same source (a decoder stack): after L layers output t is reached from
    ``R_L = S | D @ R_{L-1}``, ``R_1 = S`` (S: source dependency, D: the layer's own n x n
    dependency with the source fixed); the least L with R_L full, inf if never."""
    gen = torch.Generator().manual_seed(seed)
    extra = [torch.randn((1, *shape[1:]), generator=gen) for shape in shapes]
    reach = source_dependency(module, n, d, extra, seed=seed)
    if bool(reach.all()):
        return 1.0
    own = dependency_matrix(_WithInputs(module, extra), n, d, seed=seed)
    seen = {reach.numpy().tobytes()}
    for layers in range(2, 4 * n + 2):
        reach = reach | bool_matmul(own, reach)
        if bool(reach.all()):
            return float(layers)
        key = reach.numpy().tobytes()
        if key in seen:
            return math.inf
        seen.add(key)
    return math.nan


def clear_cache() -> None:
    """Forget cached measurements (e.g. after re-registering a layer in tests)."""
    _path_length_cached.cache_clear()
    _depth_cached.cache_clear()
