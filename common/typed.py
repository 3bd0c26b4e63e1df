"""`build_typed`: the one check of a config table read from a file (TOML config, checkpoint) against the
dataclass it fills: unknown keys and values of the wrong kind are one InputError, never a TypeError later."""

from diffcurate.common.errors import InputError


def build_typed(cls, d: dict, where: str, check_types: bool = True):
    """cls(**d) for a dataclass read from a file (TOML config, checkpoint): unknown keys, and values whose type
    does not match the field's default (a string for a number, a scalar for a tuple), are one InputError."""
    from dataclasses import MISSING, fields

    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a table of fields, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    extra = set(d) - set(known)
    if extra:
        raise InputError(f"{where}: unknown keys {sorted(extra)}")
    if check_types:
        for k, v in d.items():
            f = known[k]
            default = (
                f.default
                if f.default is not MISSING
                else (f.default_factory() if f.default_factory is not MISSING else None)
            )
            if default is None or v is None:
                continue
            if not _same_kind(default, v):
                raise InputError(f"{where}: {k} = {v!r} should be like {default!r}")
    try:
        return cls(**d)
    except TypeError as e:
        raise InputError(f"{where}: {e}") from None


def _same_kind(default, v) -> bool:
    if isinstance(default, bool):
        return isinstance(v, bool)
    if isinstance(default, int):
        return isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return isinstance(v, int | float) and not isinstance(v, bool)
    if isinstance(default, str):
        return isinstance(v, str)
    if isinstance(default, tuple | list):
        return isinstance(v, tuple | list) and all(_same_kind(default[0], x) for x in v) if default else True
    if isinstance(default, dict):
        return isinstance(v, dict)
    return True
