"""The case schema: every sweep axis and every results column, declared once.

An :class:`Axis` is a parameter a case is swept over (``seq_len``, ``heads``, ``causal``,
``dtype``, ...); a :class:`Column` is one column of a results row, with its Parquet dtype,
unit and meaning. The axes are also the parameter columns. Everything that lists axes or
columns is derived from here: the suite model's ``sweep`` keys (``harness.suite.model``),
the planner's crossing and labels (``harness.suite.plan``), the result columns and their
Parquet dtypes (``harness.results``), the pytest plugin's parametrization
(``harness.bench.plugin``), ``harness compare``'s case identity (``harness.bench.loaders``),
the report's facets and the column table of ``docs/metrics.md`` (:func:`markdown_table`; a
test keeps the two equal).

Adding an axis is one :data:`AXES` entry (plus its place in :data:`PLAN_ORDER`, and in
:data:`SIZE_PRIORITY` for a size), then the code that uses it: the layers that take it
(``LayerEntry.params``) and their builders and cost models, which read it from ``LayerCase``.
Adding a column is one :data:`COLUMNS` entry plus the code that sets it; a row refuses a
column declared nowhere.

Torch-free (the report path imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["size", "flag", "setting"]
Dtype = Literal["Int64", "float", "bool", "str"]
Group = Literal["identity", "param", "time", "memory", "flops", "structure", "derived", "env",
                "telemetry", "theory"]

_DTYPE_OF: dict[type, Dtype] = {int: "Int64", bool: "bool", str: "str"}


@dataclass(frozen=True)
class Axis:
    """A parameter cases are swept over; also a results column (group ``param``)."""

    name: str  # the suite key and the results column
    type: type  # int (a size), bool (a flag) or str (a setting)
    unit: str
    meaning: str
    #: size: a positive integer swept in the suite's ``sweep`` (batch also at the top level);
    #: flag: a boolean; an optional one is a layer's (a suite and per-layer key), one every
    #: layer takes is how a case runs (a ``sweep`` key: compile); a list crosses it;
    #: setting: a suite-level choice (a scalar or a list) that is not part of the layer's shape
    kind: Kind
    #: only some layers take it (``LayerEntry.params``): None / False for the others
    optional: bool = False
    #: the suite's ``sweep`` must give it
    required: bool = False
    symbol: str = ""  # a size's letter in labels and reports (n, d, h, ...)
    label: str = ""  # a size's words on a figure axis
    #: part of a case's identity across machines (``harness compare``); False for how a case
    #: was measured (dtype, device), which compare keeps beside the identity
    identity: bool = True
    #: fit_exponents fits metrics along it by default
    fitted: bool = False
    choices: tuple[str, ...] = ()  # a setting's allowed values (empty: checked elsewhere)
    #: declared after the first results files were written: an older file lacks the column
    #: and its cases had the axis's absent value (None for an optional axis, else False)
    added: bool = False

    def column(self) -> Column:
        return Column(self.name, _DTYPE_OF[self.type], self.unit, self.meaning, "param")


@dataclass(frozen=True)
class Column:
    """One results column. Missing values are None (NaN, pd.NA once read back)."""

    name: str
    dtype: Dtype  # in the merged Parquet file: nullable Int64, float64, nullable boolean, str
    unit: str  # "" for none (text, flags, ratios named as such in the meaning)
    meaning: str
    group: Group
    #: read off the clock or derived from it: ``time_unreliable`` applies to it
    timed: bool = False
    #: copied into a suite benchmark's ``extra_info`` by the pytest plugin
    info: bool = False


#: Every axis, in results-column order.
AXES: tuple[Axis, ...] = (
    Axis("seq_len", int, "positions", "sequence length n: positions per sequence", "size",
         required=True, symbol="n", label="sequence length n", fitted=True),
    Axis("d_model", int, "features", "model width d: features per position", "size",
         required=True, symbol="d", label="model width d", fitted=True),
    Axis("heads", int, "heads", "attention heads h (LightConv/DynamicConv: weight-sharing "
         "heads H); d_model must be divisible by it", "size", optional=True, symbol="h",
         label="heads h", fitted=True),
    Axis("kernel", int, "positions", "convolution kernel width k", "size", optional=True,
         symbol="k", label="kernel width k", fitted=True),
    Axis("window", int, "positions", "positions a restricted attention sees, r", "size",
         optional=True, symbol="r", label="window r"),
    Axis("max_relative", int, "positions", "relative attention's clip distance K (Shaw et "
         "al.'s k): distances beyond K share the table's end rows; unset: n - 1, no clip",
         "size", optional=True, symbol="K", label="relative clip K", added=True),
    Axis("src_len", int, "positions", "source length m of cross attention: positions of the "
         "encoder output the queries attend to", "size", optional=True, symbol="m",
         label="source length m", fitted=True, added=True),
    Axis("height", int, "rows", "image rows of 2D local attention (seq_len = height x width, "
         "raster order)", "size", optional=True, symbol="H", label="image height", added=True),
    Axis("width", int, "columns", "image columns of 2D local attention (default: height)",
         "size", optional=True, symbol="W", label="image width", added=True),
    Axis("query_height", int, "rows", "rows of a 2D local attention query block", "size",
         optional=True, symbol="qh", label="query-block rows", added=True),
    Axis("query_width", int, "columns", "columns of a 2D local attention query block", "size",
         optional=True, symbol="qw", label="query-block columns", added=True),
    Axis("flange_height", int, "rows", "rows a 2D local attention memory block adds above the "
         "query block (and below it when not causal)", "size", optional=True, symbol="fh",
         label="memory flange rows", added=True),
    Axis("flange_width", int, "columns", "columns a 2D local attention memory block adds left "
         "and right of the query block", "size", optional=True, symbol="fw",
         label="memory flange columns", added=True),
    Axis("causal", bool, "", "each output depends only on earlier and equal positions",
         "flag", optional=True),
    Axis("block", bool, "", "LightConv/DynamicConv as the full Wu et al. block (Linear "
         "d->2d, GLU, convolution, Linear d->d) instead of the bare convolution", "flag",
         optional=True),
    Axis("batch", int, "sequences", "sequences per call", "size", symbol="b",
         label="batch size"),
    Axis("dtype", str, "", "floating-point type of weights and inputs", "setting",
         identity=False, choices=("float32", "float16", "bfloat16", "float64")),
    Axis("device", str, "", "where the case ran: cpu, cuda or cuda:N ('auto' resolved)",
         "setting", identity=False),
    Axis("mode", str, "", "forward (under inference_mode), train (forward + backward) or "
         "decode (one new token per sequence after seq_len positions held in the layer's "
         "state)", "setting", choices=("forward", "train", "decode")),
    Axis("compile", bool, "", "the timed call runs under torch.compile (default inductor "
         "backend); FLOPs and structure are the eager module's", "flag", added=True),
)

#: The planner's crossing order, outermost first (after layer and variant): a sweep over n
#: runs as one stretch, smallest n first as written.
PLAN_ORDER = ("device", "dtype", "mode", "compile", "causal", "block", "batch", "d_model",
              "heads", "kernel", "window", "max_relative", "query_height", "query_width",
              "flange_height", "flange_width", "src_len", "height", "width", "seq_len")

#: Sizes from the most to the least telling about the asymptote: which fit a table prefers
#: among equals (the largest d first, then n, ...) and the order of a figure's facets.
SIZE_PRIORITY = ("d_model", "seq_len", "heads", "kernel", "window", "max_relative", "src_len",
                 "height", "width", "query_height", "query_width", "flange_height",
                 "flange_width", "batch")


_col = Column  # short, for the table below
#: Every results column, in file order.
COLUMNS: tuple[Column, ...] = (
    _col("schema_version", "Int64", "", "version of this column layout (harness.results)",
         "identity"),
    _col("case_index", "Int64", "", "position of the case in its plan", "identity"),
    _col("case_id", "str", "", "stable hash of the case's parameters (same parameters, same id)",
         "identity"),
    _col("label", "str", "", "readable name, unique in its plan, e.g. lstm-n512-d256", "identity"),
    _col("status", "str", "", "ok, oom, timeout, error or skipped", "identity"),
    _col("message", "str", "", "why a case is not ok (empty when it is)", "identity"),
    _col("layer", "str", "", "registered layer name", "param"),
    _col("variant", "str", "", "implementation of the layer (same function, same weights)",
         "param"),
    *(a.column() for a in AXES),
    _col("seed", "Int64", "", "seed of the weights and inputs", "param"),
    # time
    _col("time_ms_median", "float", "ms", "median time per call", "time", timed=True),
    _col("time_ms_iqr", "float", "ms", "interquartile range of the time per call", "time",
         timed=True),
    _col("time_ms_min", "float", "ms", "fastest sample per call", "time", timed=True),
    _col("time_ms_mean", "float", "ms", "mean time per call", "time", timed=True),
    _col("time_cv", "float", "", "coefficient of variation of the samples (ratio)", "time",
         timed=True),
    _col("time_samples", "Int64", "samples", "samples the statistics come from", "time"),
    _col("time_calls_per_sample", "Int64", "calls", "calls timed together as one sample", "time"),
    _col("time_unreliable", "bool", "", "contention, throttling, spread or a recompile "
         "detected (see time_note)", "time"),
    _col("time_note", "str", "", "why the time is unreliable, and failed later rounds", "time"),
    _col("time_timer", "str", "", "the clock: perf_counter, process_time or cuda_event", "time"),
    _col("time_l2_flushed", "bool", "", "L2 cache flushed before each sample (CUDA)", "time"),
    _col("tf32_matmul", "bool", "", "float32 matmuls could use TF32 tensor cores (CUDA; "
         "measure.tf32)", "time"),
    _col("tf32_conv", "bool", "", "float32 cuDNN convolutions could use TF32 (CUDA)", "time"),
    _col("tf32_rnn", "bool", "", "float32 cuDNN RNNs could use TF32 (CUDA)", "time"),
    _col("float32_matmul_precision", "str", "", "torch.get_float32_matmul_precision() "
         "(CUDA; missing where torch will not say)", "time"),
    _col("time_rounds", "Int64", "rounds", "timing rounds of the case, retries included", "time"),
    _col("time_rounds_clean", "Int64", "rounds", "rounds not disturbed by other processes "
         "(missing without a run-queue counter)", "time"),
    _col("time_disturbed_frac", "float", "", "share of all samples whose threads waited for a "
         "CPU", "time"),
    _col("time_sampled_s", "float", "s", "sampled time, all rounds", "time"),
    _col("time_wall_s", "float", "s", "what timing the case cost, warm-ups and rebuilds included",
         "time"),
    _col("wall_s", "float", "s", "what measuring the case cost, from its build to its structure",
         "time"),
    _col("started_s", "float", "s", "when the measuring process began the case (its first round), "
         "seconds since the Unix epoch on that node's clock", "time"),
    _col("ended_s", "float", "s", "when it finished that, same clock", "time"),
    _col("compile_s", "float", "s", "compile: the first compiled call of the case (tracing and "
         "code generation), never in the samples; later rounds compile again, uncounted",
         "time", info=True),
    _col("compile_graphs", "Int64", "graphs", "compile: graphs torch.compile compiled in that "
         "first call (0: dynamo captured nothing and the layer ran eager, as nn.LSTM does; a "
         "graph break makes several)", "time", info=True),
    _col("compile_recompiles", "Int64", "compilations", "compile: compilations after the first "
         "call, in warm-ups and samples of every round (above 0 marks the time unreliable)",
         "time", info=True),
    # memory
    _col("peak_mem_bytes", "Int64", "bytes", "peak allocated during one call above what was "
         "allocated before it", "memory", info=True),
    _col("mem_baseline_bytes", "Int64", "bytes", "allocated before the call (CUDA)", "memory"),
    _col("mem_method", "str", "", "how peak_mem_bytes was measured", "memory", info=True),
    _col("param_count", "Int64", "parameters", "trainable parameters", "memory", info=True),
    _col("param_bytes", "Int64", "bytes", "parameters in the case's dtype", "memory", info=True),
    _col("act_mem_analytic_bytes", "Int64", "bytes", "cost model's intermediates alive at once",
         "memory", info=True),
    _col("state_bytes", "Int64", "bytes", "decode: what the layer's state holds for the seq_len "
         "positions, measured from its tensors (live part, not spare capacity)", "memory",
         info=True),
    _col("state_bytes_analytic", "Int64", "bytes", "decode: state bytes by the step cost model",
         "memory", info=True),
    # FLOPs
    _col("flops_analytic", "Int64", "FLOPs", "matmul/conv FLOPs of the timed call by the cost "
         "model (2 per multiply-add)", "flops", info=True),
    _col("flops_useful_analytic", "Int64", "FLOPs", "what the math needs of flops_analytic",
         "flops", info=True),
    _col("flops_other_analytic", "Int64", "FLOPs", "forward elementwise FLOPs, 1 per operation",
         "flops"),
    _col("flops_fvcore", "Int64", "FLOPs", "fvcore's count, times 2 (forward only)", "flops",
         info=True),
    _col("flops_torch", "Int64", "FLOPs", "torch.utils.flop_counter's count of the timed call",
         "flops", info=True),
    _col("flops_forward_analytic", "Int64", "FLOPs", "flops_analytic of the forward pass",
         "flops"),
    _col("flops_uncounted", "str", "", "ops a counter could not count, comma-separated", "flops",
         info=True),
    _col("flops_note", "str", "", "caveats of the counts", "flops", info=True),
    # structure
    _col("path_length_analytic", "float", "layers", "maximum path length by the cost model (inf: "
         "some pair never connected)", "structure", info=True),
    _col("path_length_measured", "float", "layers", "maximum path length from the dependency "
         "graph", "structure", info=True),
    _col("seq_ops_analytic", "Int64", "operations", "sequential operations by the cost model",
         "structure", info=True),
    _col("seq_ops_measured", "float", "operations", "sequential operations from the autograd "
         "graph depth", "structure", info=True),
    _col("graph_depth", "Int64", "nodes", "longest path through the reference variant's "
         "autograd graph", "structure"),
    _col("structure_note", "str", "", "why structure was not measured", "structure", info=True),
    # derived
    _col("flops_per_s", "float", "FLOP/s", "flops_analytic / median time", "derived",
         timed=True),
    _col("tokens_per_s", "float", "tokens/s", "batch * seq_len / median time (decode: batch / "
         "median time, one new token per sequence)", "derived",
         timed=True),
    _col("arithmetic_intensity", "float", "FLOPs/byte", "flops_analytic / analytic traffic",
         "derived"),
    # environment: one record per run and device
    _col("env_device", "str", "", "the torch device", "env"),
    _col("env_device_name", "str", "", "CPU model or GPU name", "env", info=True),
    _col("env_cuda_version", "str", "", "CUDA version torch was built with", "env"),
    _col("env_cudnn_version", "Int64", "", "cuDNN version (CUDA)", "env"),
    _col("env_cpu_model", "str", "", "CPU model", "env"),
    _col("env_cpu_count", "Int64", "CPUs", "logical CPUs of the machine", "env"),
    _col("env_torch_threads", "Int64", "threads", "torch intra-op threads of the cases", "env",
         info=True),
    _col("env_torch_interop_threads", "Int64", "threads", "torch inter-op threads", "env"),
    _col("env_malloc", "str", "", "heap policy of the measuring processes "
         "(harness.measure.heap)", "env"),
    _col("env_torch_version", "str", "", "torch version", "env", info=True),
    _col("env_python_version", "str", "", "Python version", "env"),
    _col("env_numpy_version", "str", "", "numpy version", "env"),
    _col("env_git_commit", "str", "", "commit of the harness's checkout", "env", info=True),
    _col("env_git_dirty", "bool", "", "uncommitted changes in that checkout", "env"),
    _col("env_harness_version", "str", "", "harness version", "env", info=True),
    _col("env_hostname", "str", "", "machine name", "env"),
    _col("env_cuda_visible_devices", "str", "", "CUDA_VISIBLE_DEVICES of the measuring process "
         "(with Ray: the GPU the case held)", "env"),
    _col("env_platform", "str", "", "operating system", "env"),
    _col("env_time_utc", "str", "", "when the environment was recorded (ISO 8601)", "env"),
    _col("env_driver_version", "str", "", "NVIDIA driver version (NVML)", "env"),
    _col("env_cuda_driver_version", "Int64", "", "CUDA version of the driver (NVML)", "env"),
    _col("env_gpu_sm_clock_mhz", "Int64", "MHz", "SM clock at the start of the run", "env"),
    _col("env_gpu_sm_clock_max_mhz", "Int64", "MHz", "maximum SM clock", "env"),
    _col("env_gpu_mem_clock_mhz", "Int64", "MHz", "memory clock at the start of the run", "env"),
    _col("env_gpu_mem_clock_max_mhz", "Int64", "MHz", "maximum memory clock", "env"),
    _col("env_gpu_temperature_c", "Int64", "°C", "GPU temperature at the start of the run", "env"),
    _col("env_gpu_power_limit_w", "float", "W", "GPU power limit", "env"),
    _col("env_peak_flops", "float", "FLOP/s", "device peak (datasheet or probe)", "env"),
    _col("env_peak_bytes_per_s", "float", "bytes/s", "device memory bandwidth (datasheet or "
         "probe)", "env"),
    _col("env_peak_source", "str", "", "where the peaks come from", "env"),
    # per-case telemetry: read just before and just after the first round's timed calls
    _col("env_loadavg_before", "float", "", "1-minute load average before the first round",
         "telemetry"),
    _col("env_loadavg_after", "float", "", "1-minute load average after it", "telemetry"),
    _col("env_cpu_mhz_before", "float", "MHz", "mean clock of the process's CPUs before it",
         "telemetry"),
    _col("env_cpu_mhz_after", "float", "MHz", "mean clock of the process's CPUs after it",
         "telemetry"),
    _col("cpu_others_busy", "float", "CPUs", "CPUs other processes kept busy during it",
         "telemetry"),
    _col("gpu_sm_clock_mhz_before", "Int64", "MHz", "SM clock before it", "telemetry"),
    _col("gpu_sm_clock_mhz_after", "Int64", "MHz", "SM clock after it", "telemetry"),
    _col("gpu_mem_clock_mhz_before", "Int64", "MHz", "memory clock before it", "telemetry"),
    _col("gpu_mem_clock_mhz_after", "Int64", "MHz", "memory clock after it", "telemetry"),
    _col("gpu_temperature_c_before", "Int64", "°C", "GPU temperature before it", "telemetry"),
    _col("gpu_temperature_c_after", "Int64", "°C", "GPU temperature after it", "telemetry"),
    _col("gpu_power_w_before", "float", "W", "board power before it", "telemetry"),
    _col("gpu_power_w_after", "float", "W", "board power after it", "telemetry"),
    _col("gpu_throttle_reasons", "str", "", "clocks-event reasons active at either reading, "
         "comma-separated", "telemetry"),
    _col("gpu_other_processes", "Int64", "processes", "other compute processes on the GPU",
         "telemetry"),
    _col("gpu_energy_j", "float", "J", "change of the board's energy counter during it",
         "telemetry"),
    _col("energy_j_per_call", "float", "J", "gpu_energy_j over its calls (an upper bound)",
         "telemetry"),
    _col("env_fingerprint", "str", "", "hash of the environment a resumed run must match", "env"),
    # the layer's theory, written with every row so that reports need no layer code
    # (harness.theory.THEORY_COLUMNS; a test keeps the two equal)
    _col("family", "str", "", "layer family (recurrent, convolution, self-attention, ...)",
         "theory"),
    _col("theory_complexity", "str", "", "FLOPs per layer as the paper writes it", "theory"),
    _col("theory_terms", "str", "", "FLOP monomials of this case, e.g. 'k n d + n d^2'",
         "theory"),
    _col("theory_seq_ops", "str", "", "sequential operations, e.g. O(1)", "theory"),
    _col("theory_path_length", "str", "", "maximum path length as written, e.g. O(n/k)",
         "theory"),
    _col("theory_path_class", "str", "", "its growth in n alone: O(1), O(log n) or O(n)",
         "theory"),
    _col("layer_label", "str", "", "the layer's name on plots", "theory"),
    _col("layer_colour", "str", "", "the layer's colour on plots (hex)", "theory"),
    _col("layer_rank", "Int64", "", "the layer's place in Table-1 order", "theory"),
)


def axis(name: str) -> Axis:
    """The axis called ``name`` (KeyError if there is none)."""
    return _AXIS_BY_NAME[name]


def axis_names(kind: Kind | None = None, *, optional: bool | None = None) -> tuple[str, ...]:
    """Axis names in column order, of one kind and/or only the optional (or other) ones."""
    return tuple(a.name for a in AXES
                 if (kind is None or a.kind == kind)
                 and (optional is None or a.optional == optional))


def column(name: str) -> Column:
    """The column called ``name`` (KeyError if there is none)."""
    return _COLUMN_BY_NAME[name]


def column_names(*groups: Group) -> tuple[str, ...]:
    """Column names in file order, of the given groups (all columns without groups)."""
    return tuple(c.name for c in COLUMNS if not groups or c.group in groups)


#: The parameter columns of a case: layer, variant, every axis, seed.
CASE_COLUMNS = column_names("param")
#: The sizes and flags: the fields of ``harness.spec.LayerCase`` (settings are the plan's).
LAYER_AXES = tuple(a.name for a in AXES if a.kind != "setting")
#: Axes added after results files were first written, with the value every row of an older
#: file had: reading such a file fills the column in (harness.results.fill_added_axes), and
#: a case at that value keeps the case_id it always had (harness.suite.plan).
ADDED_AXES: dict[str, object] = {a.name: None if a.optional else False for a in AXES if a.added}
#: What names a case across files and machines (``harness compare``).
IDENTITY = ("layer", "variant", *(a.name for a in AXES if a.identity))
#: The sizes every suite sweeps (n and d): Table 1's axes, the report's main ones.
MAIN_AXES = tuple(a.name for a in AXES if a.required)


def markdown_table() -> str:
    """The column table at the end of ``docs/metrics.md`` (a test keeps them equal)."""
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.dtype} | {c.unit or '–'} | {c.meaning} |" for c in COLUMNS]
    return "\n".join(lines) + "\n"


def _check() -> None:
    """Rules the declarations above must keep (a broken one fails at import)."""
    names = [c.name for c in COLUMNS]
    dupes = sorted({n for n in names if names.count(n) > 1})
    problems = [f"columns declared twice: {dupes}"] if dupes else []
    for a in AXES:
        expected = {"size": int, "flag": bool, "setting": str}[a.kind]
        if a.type is not expected:
            problems.append(f"axis {a.name}: a {a.kind} is a {expected.__name__}")
        if a.kind == "size" and not a.symbol:
            problems.append(f"axis {a.name}: a size needs a symbol and a label")
        if a.required and (a.kind != "size" or a.optional):
            problems.append(f"axis {a.name}: only a size every layer takes can be required")
        if a.optional and a.kind == "setting":
            problems.append(f"axis {a.name}: a setting applies to every layer")
    if sorted(PLAN_ORDER) != sorted(a.name for a in AXES):
        problems.append("PLAN_ORDER must name every axis once")
    if sorted(SIZE_PRIORITY) != sorted(axis_names("size")):
        problems.append("SIZE_PRIORITY must name every size once")
    problems += [f"column {c.name}: '|' in its meaning breaks the docs table"
                 for c in COLUMNS if "|" in c.meaning]
    if problems:
        raise AssertionError("harness.schema: " + "; ".join(problems))


_AXIS_BY_NAME = {a.name: a for a in AXES}
_COLUMN_BY_NAME = {c.name: c for c in COLUMNS}
_check()

if __name__ == "__main__":  # python -m harness.schema: the table for docs/metrics.md
    print(markdown_table(), end="")
