"""One module per Kafka API; importing this package imports (and so registers) them all."""

import importlib
import pkgutil

from bayou.gateways.kafka.handlers.registry import HANDLERS, Registration, handles

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["HANDLERS", "Registration", "handles"]
