"""What several test modules share.

pytest loads this file before any test module, and tests/ is on ``sys.path`` (it has no
``__init__.py``), so a test module takes what it needs with ``from conftest import ...``.
torch is imported only by the helpers that use it. Elsewhere: the pynvml stand-in in
``fakes.py``, the layer tests' independent path-length probe in ``probes.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from harness.spec import LayerCase

#: The repository root: suites, scripts, docs, and the PYTHONPATH of child processes.
REPO = Path(__file__).resolve().parents[1]

def write_suite(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    """A suite file from an indented YAML literal (dedented), in ``tmp_path``."""
    import textwrap

    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


#: A time note as the sweep writes it for a case disturbed in every round.
CONTENDED = "contended: threads waited for a CPU in 64% of samples in all 3 rounds"


def build_double(name: str, variant: str, case: LayerCase, seed: int = 0) -> torch.nn.Module:
    """A registered layer's variant, its weights drawn from ``seed``, in float64 and eval mode."""
    import torch

    from harness import registry

    torch.manual_seed(seed)
    return registry.get(name).build(case, variant).double().eval()


def random_input(case: LayerCase, seed: int = 1) -> torch.Tensor:
    """A (B, n, d) float64 input for ``case`` from its own generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(case.batch, case.n, case.d, generator=gen, dtype=torch.float64)


def count_flops(module: torch.nn.Module, x: torch.Tensor, train: bool = False) -> int:
    """torch.utils.flop_counter's count of ``module(x)`` - with ``train``, of the forward and
    the backward, gradients flowing into the input too. torch's own formulas, plus only the
    project's ops torch cannot know (``harness::*``, e.g. DynamicConv's shift path)."""
    from torch.utils.flop_counter import FlopCounterMode

    from harness.flops.torch_counter import torch_formulas

    own = {op: f for op, f in torch_formulas().items()
           if str(getattr(op, "_qualified_op_name", "")).startswith("harness::")}
    x = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False, custom_mapping=own) as counter:
        y = module(x)
        if train:
            y.sum().backward()
    return counter.get_total_flops()


def drawn_px(spec: dict) -> tuple[float, float]:
    """(width, height) in CSS pixels of a Vega-Lite spec as Vega draws it (its one-page PDF,
    one point per CSS pixel): a spec Vega cannot draw raises."""
    import io

    from pypdf import PdfReader

    from harness.report import vega

    box = PdfReader(io.BytesIO(vega.pdf(spec))).pages[0].mediabox
    return float(box.width), float(box.height)
