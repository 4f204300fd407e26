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
        specs = _specs(cls)
        cls.__record_fields__ = specs
        compared = tuple(name for name, spec in specs if spec.compare)
        cls.__init__ = _init(cls.__name__, specs)

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in compared)
        cls.__eq__ = __eq__
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = lambda self: f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n, _ in specs)})"
        if frozen:
            def refuse(self, name, *value):
                raise FrozenError(f"cannot assign to field '{name}' of a frozen {cls.__name__}")
            cls.__setattr__, cls.__delattr__ = refuse, refuse
            cls.__hash__ = lambda self: hash(tuple(getattr(self, n) for n in compared))
        else:
            cls.__hash__ = None
        return cls
    return wrap


def _specs(cls):
    """((name, Field), ...) from the annotations; class attributes left as plain defaults."""
    specs = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(value)
        if isinstance(value, Field):
            delattr(cls, name)
            if spec.default is not _MISSING:
                setattr(cls, name, spec.default)
        specs.append((name, spec))
    return tuple(specs)


def _init(clsname, specs):
    names = [name for name, _ in specs]

    def __init__(self, *args, **kwargs):
        if len(args) > len(specs):
            raise TypeError(f"{clsname}() takes {len(specs)} arguments, {len(args)} given")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key in given or key not in names:
                raise TypeError(f"{clsname}() got an unexpected or repeated argument '{key}'")
            given[key] = value
        for name, spec in specs:
            if name in given:
                value = given[name]
            elif spec.factory is not None:
                value = spec.factory()
            elif spec.default is not _MISSING:
                value = spec.default
            else:
                raise TypeError(f"{clsname}() missing argument '{name}'")
            object.__setattr__(self, name, value)
    return __init__
