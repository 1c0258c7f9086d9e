"""Attribute docstrings as pydantic field descriptions, from one parse of a module's source.

The docstring under a model's field documents it: the admin API's OpenAPI document and
docs/reference show it as the field's description. pydantic's ``use_attribute_docstrings``
does the same by reading and parsing the source of every class as the class is made; for the
admin API's hundred models that was a fifth of the admin code's import (about 55 ms of CPU
that a starting daemon spent beside its first claims). Here each module is parsed once.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys

from pydantic import BaseModel


def attribute_docstrings(module_name: str) -> dict[str, dict[str, str]]:
    """class name -> {attribute: its docstring}, for the classes at the top of a module."""
    try:
        source = inspect.getsource(sys.modules[module_name])
    except OSError:
        # an install without sources (bytecode only, a zipapp): no descriptions, as pydantic's
        # use_attribute_docstrings gives there, rather than no admin endpoint
        return {}
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        attributes = found.setdefault(node.name, {})
        for statement, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                attributes[statement.target.id] = inspect.cleandoc(following.value.value)
    return found


_module_docstrings = functools.cache(attribute_docstrings)


def describe_own_fields(model: type[BaseModel]) -> None:
    """Give the fields the model declares itself their docstrings as descriptions, where a
    field has none, as ``use_attribute_docstrings`` does (an inherited field keeps the copy of
    its base's, described when the base was made).

    For a model whose validator is not built yet (``defer_build``): called from
    ``__pydantic_init_subclass__``, before anything can build it, so nothing is rebuilt."""
    own = _module_docstrings(model.__module__).get(model.__name__, {})
    for name, info in model.model_fields.items():
        if info.description is None and name in own:
            info.description = own[name]
