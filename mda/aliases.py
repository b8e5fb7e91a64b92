"""Alias graph checks: a cycle is a configuration error found at load time, not a loop at delivery."""

from __future__ import annotations

from collections.abc import Mapping


class AliasCycleError(ValueError):
    """An alias chain that leads back to itself; ``cycle`` lists the addresses in order."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("alias cycle: " + " -> ".join(cycle))


def check_alias_cycles(aliases: Mapping[str, tuple[str, ...]], *, fold: bool = True) -> None:
    """Raise ``AliasCycleError`` naming the first cycle found (depth-first over alias targets).

    Keys and targets are compared case-insensitively unless ``fold`` is false, as the resolver does.
    """

    def norm(address: str) -> str:
        return address.lower() if fold else address

    graph = {norm(source): [norm(t) for t in targets] for source, targets in aliases.items()}
    done: set[str] = set()
    for start in graph:
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        on_path = {start}
        while stack:
            node, index = stack[-1]
            targets = graph.get(node, [])
            if index >= len(targets):
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
                continue
            stack[-1] = (node, index + 1)
            target = targets[index]
            if target in on_path:
                raise AliasCycleError([*path[path.index(target) :], target])
            if target in graph and target not in done:
                stack.append((target, 0))
                path.append(target)
                on_path.add(target)
