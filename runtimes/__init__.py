"""Engines: one module per backend behind the :class:`~edgemed.runtimes.base.Engine` protocol.

Backend packages are imported only when an engine of that kind is created, so a missing
optional backend never breaks ``import edgemed``.
"""

from .base import Engine, TensorInfo
from .registry import available_backends, create_engine

__all__ = ["Engine", "TensorInfo", "available_backends", "create_engine"]
