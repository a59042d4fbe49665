"""The layer zoo: every module here that defines ``LAYERS`` is a built-in layer module.

The registry imports them on first use (harness.registry); adding a layer is a new module
with its builders, cost model, theory and ``LAYERS``, plus its test module.
"""
