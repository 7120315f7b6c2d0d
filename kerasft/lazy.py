"""Public names that load their module on first use.

Importing a kerasft package must not import Keras or a framework (so
``KERAS_BACKEND`` still decides the backend, and `load_run` stays numpy
only); packages export their names through `lazy_exports` instead.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for `package`.

    Args:
        package: the package's name (``__name__``).
        table: public name -> the submodule (relative to `package`) that
            defines it.

    Example:

    ```python
    __getattr__ = lazy_exports(__name__, {"grad_cam": "gradcam"})
    ```
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            module = importlib.import_module(f"{package}.{table[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
