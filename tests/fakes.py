"""Stand-ins shared by the tests: a pynvml module whose answers each test chooses."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping


class NVMLError(Exception):
    """What the stand-in raises for an unsupported query (pynvml's NVMLError family)."""


def fake_nvml(answers: Mapping[str, object], *, unsupported: tuple[str, ...] = (),
              init_fails: bool = False) -> types.ModuleType:
    """A pynvml stand-in: ``answers`` maps each NVML function name to its value, or to a
    function of the call's arguments; ``nvmlInit``/``nvmlShutdown`` always exist. A name in
    ``unsupported`` raises :class:`NVMLError`, as a driver that lacks the query does; every
    call is recorded in ``module.calls``."""
    m = types.ModuleType("pynvml")
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.NVMLError = NVMLError
    m.calls = []  # type: ignore[attr-defined]

    def make(name: str, value: object) -> Callable[..., object]:
        def call(*args: object) -> object:
            m.calls.append(name)  # type: ignore[attr-defined]
            if name in unsupported or (name == "nvmlInit" and init_fails):
                raise NVMLError(name)
            return value(*args) if callable(value) else value

        return call

    for name, value in {"nvmlInit": None, "nvmlShutdown": None, **answers}.items():
        setattr(m, name, make(name, value))
    return m
