"""The tasks a daemon runs, found by importing the modules listed in ``[tasks] modules``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from taskd.errors import ConfigError, DuplicateTask, UnknownTask
from taskd.sdk.queues import Queue
from taskd.sdk.retry import Retry
from taskd.sdk.task import TaskDefinition


class Registry:
    def __init__(self, definitions: Iterable[TaskDefinition[Any, Any]] = ()) -> None:
        self._tasks: dict[str, TaskDefinition[Any, Any]] = {}
        for definition in definitions:
            self.add(definition)

    def add(self, definition: TaskDefinition[Any, Any]) -> None:
        existing = self._tasks.get(definition.id)
        if existing is not None and existing is not definition:
            raise DuplicateTask(
                f"two tasks have the id {definition.id!r}: "
                f"{_where(existing)} and {_where(definition)}"
            )
        self._tasks[definition.id] = definition

    def get(self, task_id: str) -> TaskDefinition[Any, Any]:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise UnknownTask(f"unknown task {task_id!r}") from None

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __iter__(self) -> Iterator[TaskDefinition[Any, Any]]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def with_defaults(self, retry: Retry | None, max_duration: float | None) -> Registry:
        """These tasks with the project's defaults (``[tasks] retry`` and ``max_duration``)
        where a task did not set its own (see ``TaskDefinition.with_defaults``)."""
        return Registry(d.with_defaults(retry, max_duration) for d in self._tasks.values())

    @property
    def ids(self) -> list[str]:
        return sorted(self._tasks)

    def queues(self) -> list[Queue]:
        """The queues the tasks declare, one each; the limits come from the tasks that declare
        any (a bare name defers to them). Two tasks declaring different limits for one queue
        is an error: which one holds would depend on import order."""
        found: dict[str, Queue] = {}
        for definition in self._tasks.values():
            queue = definition.queue
            known = found.get(queue.name)
            if known is None or (queue.limited and not known.limited):
                found[queue.name] = queue
            elif queue.limited and queue != known:
                raise ConfigError(
                    f"queue {queue.name!r} is declared with different limits: {known} and "
                    f"{queue} (task {definition.id!r}); declare the Queue once and share it"
                )
        return [found[name] for name in sorted(found)]

    @classmethod
    def from_modules(
        cls, modules: Iterable[str], pythonpath: Iterable[os.PathLike[str] | str] = ()
    ) -> Registry:
        """Import each module and register every TaskDefinition at its top level.

        The working directory is put on ``sys.path`` first, so that ``tasks.my_module``
        resolves from the project root as it does for ``python -m``; the ``pythonpath``
        directories (``[tasks] pythonpath``) go before it, in their order.
        """
        for entry in [os.getcwd(), *reversed([os.fspath(p) for p in pythonpath])]:
            if entry not in sys.path:
                sys.path.insert(0, entry)
        registry = cls()
        for name in modules:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                raise ConfigError(
                    f"tasks.modules: cannot import {name!r}: {type(exc).__name__}: {exc}"
                ) from exc
            for value in vars(module).values():
                if isinstance(value, TaskDefinition):
                    registry.add(value)
        return registry


def _where(definition: TaskDefinition[Any, Any]) -> str:
    fn = definition.fn
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
