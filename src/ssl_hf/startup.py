"""When `import ssl_hf` loads the public API (`ssl_hf.api`: torch, transformers and every method, ~5 s).

In every process but the `ssl-hf` console script, at once: `import ssl_hf` registers every method with the Auto
classes. The console script answers `--help` and `--version` without it, and its `main` imports `ssl_hf.api` before
running a command. Either way `ssl_hf.<name>` reaches `ssl_hf.api.<name>` through the package's `__getattr__`.
"""

import importlib
import sys
from pathlib import Path


CONSOLE_SCRIPT = Path(sys.argv[0] if sys.argv else "").name == "ssl-hf"


def public_attribute(name: str):
    """`ssl_hf.<name>` for the names of `ssl_hf.api`: the package's `__getattr__` (PEP 562).

    Named otherwise here: a `__getattr__` of this module would also answer the import system's questions about it.
    """
    api = importlib.import_module("ssl_hf.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'ssl_hf' has no attribute '{name}'")


def public_names() -> list[str]:
    """`dir(ssl_hf)`: the package's `__dir__`."""
    return sorted({*importlib.import_module("ssl_hf.api").__all__, "__version__"})


if not CONSOLE_SCRIPT:
    importlib.import_module("ssl_hf.api")
