"""Selection strategies of the Parity Identifier: which pseudo-QAs identify keeps for leveling.

A strategy is one module defining `STRATEGY = Strategy(decide[, finalize])` (see `mpa.strategies.base`) and one
line in REGISTRY below; `identify.strategy` in a config accepts exactly the registry's names. Modules are imported
when first used, so a strategy living outside mpa can be registered by its import path too.
"""

from __future__ import annotations

from mpa.lazy import import_ref
from mpa.strategies.base import Decision, Selection, Strategy

REGISTRY: dict[str, str] = {
    "parity": "mpa.strategies.parity:STRATEGY",
    "all": "mpa.strategies.all_qas:STRATEGY",
    "random": "mpa.strategies.random_sample:STRATEGY",
    "teacher_consistent": "mpa.strategies.teacher_consistent:STRATEGY",
    "student_fails": "mpa.strategies.student_fails:STRATEGY",
    "graded": "mpa.strategies.graded:STRATEGY",
}


def check_name(name: str) -> str:
    """`name` if it is registered; otherwise a ValueError listing the valid names (the config's check)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(sorted(REGISTRY))}")
    return name


def load_strategy(name: str) -> Strategy:
    """The strategy registered as `name` (imported now); an unknown name raises ValueError."""
    strategy = import_ref(REGISTRY[check_name(name)])
    if not isinstance(strategy, Strategy):
        raise TypeError(f"{REGISTRY[name]} is a {type(strategy).__name__}, not a mpa.strategies.Strategy")
    return strategy


__all__ = ["REGISTRY", "Decision", "Selection", "Strategy", "check_name", "load_strategy"]
