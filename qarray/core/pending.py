"""Pending streaming work, folded as a tree so that one more batch costs the same at any length.

Streaming statistics on a lazy library (Dask) do not compute a batch when it comes:
they combine its lazy result with what came before. Chaining every batch onto one
running result makes each new combination merge the whole graph so far, so the
``n``-th update costs ``O(n)`` and a stream is quadratic. :class:`PendingFold` holds the
pending results as the levels of a tree of fan-in :data:`FAN_IN` instead: a batch joins
the lowest level, and a full level is combined into one node of the level above. A
combination only touches the ``FAN_IN`` nodes it joins, so an update costs a constant
amortised amount, at most ``FAN_IN`` nodes are held per level, and there are
``log(n) / log(FAN_IN)`` levels.

The order of the values is kept (oldest first), so a combination that is associative
but not commutative (for the sign of a zero, say) gives the chained result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, Tuple

__all__ = ["FAN_IN", "PendingFold"]

FAN_IN = 16
"""The number of nodes one combination joins (and the most a level holds)."""

Combine = Callable[[Sequence[Any]], Any]


@dataclass(frozen=True)
class PendingFold:
    """An immutable tree of pending values, combined in order with an associative ``combine``.

    ``levels[0]`` holds single values, ``levels[i]`` combinations of ``FAN_IN**i`` values;
    higher levels are older, and each level lists its nodes oldest first. Copies of
    statistics may share one: every change returns a new fold.

    Example:
        >>> def join(parts):
        ...     return "(" + "".join(parts) + ")"
        >>> fold = PendingFold.of("a")
        >>> for value in "bcdefghijklmnopqrs":
        ...     fold = fold.add(value, join)
        >>> fold.held, fold.result(join)
        (4, '((abcdefghijklmnop)qrs)')
    """

    levels: Tuple[Tuple[Any, ...], ...]

    @classmethod
    def of(cls, value: Any) -> PendingFold:
        """A fold holding ``value`` alone."""
        return cls(((value,),))

    @property
    def held(self) -> int:
        """The number of nodes held: at most ``FAN_IN - 1`` per level (and one at the top)."""
        return sum(len(level) for level in self.levels)

    @property
    def newest(self) -> Any:
        """The most recently added value (or the combination that holds it)."""
        for level in self.levels:
            if level:
                return level[-1]
        raise AssertionError("a PendingFold is never empty")

    def add(self, value: Any, combine: Combine, *, at_once: bool = False) -> PendingFold:
        """Return the fold with ``value`` added after the others.

        ``at_once`` combines everything into one node now (for eager values, where a
        combination costs the same whatever came before and holding nodes only costs memory).
        """
        if at_once:
            return PendingFold.of(combine((self.result(combine), value)))
        levels = list(self.levels)
        carry, height = value, 0
        while True:
            if height == len(levels):
                levels.append(())
            level = levels[height] + (carry,)
            if len(level) < FAN_IN:
                levels[height] = level
                return PendingFold(tuple(levels))
            levels[height] = ()
            carry, height = combine(level), height + 1

    def result(self, combine: Combine) -> Any:
        """All the values combined, oldest first (a lone value is returned as it is)."""
        nodes = [node for level in reversed(self.levels) for node in level]
        return nodes[0] if len(nodes) == 1 else combine(nodes)
