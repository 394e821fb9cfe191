"""Registries name their entries as "module:attribute" and import them only when used (so torch, openai or vllm
load only for the backend, strategy or benchmark a run asks for). This is the one place that resolves such a name.

Imports nothing of mpa, so any module (the stage contract included) may use it without a cycle.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_ref(ref: str) -> Any:
    """The attribute `ref` ("package.module:attribute") names, importing its module now."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)
