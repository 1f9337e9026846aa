"""`ssl`, loaded when something first uses it rather than when trio is imported.

`import trio` imports `ssl` for `trio.SSLStream`, and `ssl` loads OpenSSL
(`_ssl`, libssl, libcrypto): a good share of an idle half's memory, for TLS that
this tool never speaks. `defer_ssl` puts a stand-in module under the name
`ssl` before trio is imported; trio only names `ssl` inside functions and
annotations, so importing it leaves OpenSSL unloaded. The first attribute
anyone reads from the stand-in imports the real module and copies it in, so
code that does use `ssl` gets the real thing, a moment later.

`importlib.util.LazyLoader` cannot do this on Python 3.11: the import system
reads the module's `__spec__`, and on its lazy modules any attribute loads.
"""

import importlib.util
import sys
import types
from typing import Any

__all__ = ["defer_ssl"]

NAME = "ssl"


class _DeferredModule(types.ModuleType):
    """A module that imports its real self on the first attribute it lacks."""

    def __getattr__(self, attribute: str) -> Any:
        # Reached only for what the stand-in's __dict__ lacks: before the load,
        # anything but the import system's own entries; after it, nothing real.
        if sys.modules.get(NAME) is self:
            del sys.modules[NAME]
            try:
                real = importlib.import_module(NAME)
            except BaseException:
                sys.modules[NAME] = self  # leave things as they were for the next try
                raise
            self.__dict__.update(real.__dict__)
        try:
            return self.__dict__[attribute]
        except KeyError:
            raise AttributeError(f"module {NAME!r} has no attribute {attribute!r}") from None


def defer_ssl() -> None:
    """Put the stand-in in place, unless `ssl` is imported already (or cannot be)."""
    if NAME in sys.modules or (spec := importlib.util.find_spec(NAME)) is None:
        return
    stand_in = _DeferredModule(NAME)
    stand_in.__spec__ = spec
    sys.modules[NAME] = stand_in
