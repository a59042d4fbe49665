"""The layer zoo. Importing this package registers every shipped layer."""

from harness.layers import (  # noqa: F401  (imported for registration)
    attention,
    conv,
    dynamicconv,
    lightconv,
    recurrent,
)
