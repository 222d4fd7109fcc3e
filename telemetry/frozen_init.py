"""A faster ``__init__`` for frozen, slotted dataclasses built by the thousand per request.

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__``
(its own ``__setattr__`` raises), a call per field: about 5 us for the 37 fields of a
:class:`~telemetry.records.SpanRecord`, more than the rest of mapping a span. Python
allows assigning an object's ``__class__`` between two classes of the same layout
(same base, same ``__slots__`` in the same order: the language reference's "object
layout" rule), so :func:`fast_frozen_init` gives the class an ``__init__`` that turns the
new instance into a plain slotted twin class for the assignments, which are then ordinary
slot stores, and turns it back at the end: the same instance, the same fields, the same
frozen class afterwards (equality, hash, ``repr``, ``dataclasses.replace`` unchanged).

The hottest callers (a record per mapped span, a span per decoded one) take
:func:`positional_builder` instead: the same stores on a new instance of the twin, turned
into the class once (one ``__class__`` assignment, not two, and no ``type.__call__``
dispatch to ``__init__``), about a third less time per instance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_BUILDERS: dict[type, Callable[..., Any]] = {}


def fast_frozen_init(cls: type[T]) -> type[T]:
    """Replace the generated ``__init__`` of ``cls`` by one with the same signature that
    stores the fields as plain slot writes (module docstring).

    Args:
        cls: a ``@dataclass(frozen=True, slots=True)`` class deriving from ``object``
            directly, with no ``__post_init__``, no init-only, keyword-only or excluded
            fields, and no default factories. A subclass of ``cls`` (none exists today)
            gets the original ``__init__``'s behaviour.

    Returns:
        ``cls`` itself (for use as a decorator).

    Raises:
        TypeError: ``cls`` is not such a class.
    """
    params = getattr(cls, "__dataclass_params__", None)
    slots = cls.__dict__.get("__slots__")
    if params is None or not params.frozen or slots is None or cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass on object")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING
           for f in fields):
        raise TypeError(f"{cls.__name__} has a field this __init__ cannot set")
    names = [f.name for f in fields]
    if tuple(slots) != tuple(names):
        raise TypeError(f"{cls.__name__}'s slots are not its fields in order")
    twin = type(f"_Open{cls.__name__}", (), {"__slots__": tuple(slots)})
    defaults = {f"_d_{f.name}": f.default for f in fields if f.default is not dataclasses.MISSING}
    params_text = ", ".join(
        f"{name}=_d_{name}" if f"_d_{name}" in defaults else name for name in names
    )
    args_text = ", ".join(names)
    body = "".join(f"    self.{name} = {name}\n" for name in names)
    source = (
        f"def __init__(self, {params_text}):\n"
        "    if type(self) is not _cls:\n"
        f"        return _original(self, {args_text})\n"
        "    _set(self, '__class__', _twin)\n"
        f"{body}"
        "    self.__class__ = _cls\n"
        f"def build({params_text}):\n"
        "    self = _new(_twin)\n"
        f"{body}"
        "    self.__class__ = _cls\n"
        "    return self\n"
    )
    namespace: dict[str, Any] = {
        "_cls": cls, "_twin": twin, "_set": object.__setattr__, "_new": object.__new__,
        "_original": cls.__init__, **defaults,
    }
    exec(source, namespace)  # noqa: S102 (code built from the class's own field names)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    type.__setattr__(cls, "__init__", init)
    _BUILDERS[cls] = namespace["build"]
    return cls


def positional_builder(cls: type[T]) -> Callable[..., T]:
    """A function that makes an instance of ``cls`` from its fields, positional and in
    field order (defaults as the class has them): ``build(*fields) == cls(*fields)``, of
    type ``cls``, frozen, without going through ``cls.__init__`` (module docstring).

    Raises:
        KeyError: ``cls`` was not given :func:`fast_frozen_init`.
    """
    return _BUILDERS[cls]
