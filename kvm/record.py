"""Records for the modules nearly every command imports (set.conf's VmConfig, an rc.d Script):
the part of dataclasses they use (annotated fields with defaults or a default factory, keyword or
positional construction, equality, frozen), without importing dataclasses, which pulls in inspect
and ast: about 20 ms of the start of status, vminfo or vmlist.

    @record(frozen=True)
    class Point:
        x: int
        y: int = 0
        tags: dict = field(default_factory=dict, compare=False)
"""

_MISSING = object()


class FrozenError(AttributeError):
    """An attribute of a frozen record was set or deleted."""


class Field:
    def __init__(self, default=_MISSING, default_factory=None, compare=True):
        self.default, self.factory, self.compare = default, default_factory, compare


def field(default=_MISSING, *, default_factory=None, compare=True):
    return Field(default, default_factory, compare)


def fields(obj):
    """The field names of a record (class or instance), in order."""
    return tuple(name for name, _ in obj.__record_fields__)


def record(frozen=False):
    def wrap(cls):
        specs = []
        for name in cls.__dict__.get("__annotations__", {}):
            value = cls.__dict__.get(name, _MISSING)
            spec = value if isinstance(value, Field) else Field(value)
            if isinstance(value, Field):
                delattr(cls, name)
                if spec.default is not _MISSING:
                    setattr(cls, name, spec.default)
            specs.append((name, spec))
        cls.__record_fields__ = tuple(specs)
        compared = tuple(name for name, spec in specs if spec.compare)

        def __init__(self, *args, **kwargs):
            if len(args) > len(specs):
                raise TypeError(f"{cls.__name__}() takes {len(specs)} arguments, {len(args)} given")
            given = dict(zip((name for name, _ in specs), args))
            for key, value in kwargs.items():
                if key in given or key not in {name for name, _ in specs}:
                    raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument '{key}'")
                given[key] = value
            for name, spec in specs:
                if name in given:
                    value = given[name]
                elif spec.factory is not None:
                    value = spec.factory()
                elif spec.default is not _MISSING:
                    value = spec.default
                else:
                    raise TypeError(f"{cls.__name__}() missing argument '{name}'")
                object.__setattr__(self, name, value)

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in compared)

        def __repr__(self):
            return f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n, _ in specs)})"

        cls.__init__, cls.__eq__ = __init__, __eq__
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = __repr__
        if frozen:
            def refuse(self, name, *value):
                raise FrozenError(f"cannot assign to field '{name}' of a frozen {cls.__name__}")
            cls.__setattr__, cls.__delattr__ = refuse, refuse
            cls.__hash__ = lambda self: hash(tuple(getattr(self, n) for n in compared))
        else:
            cls.__hash__ = None
        return cls
    return wrap
