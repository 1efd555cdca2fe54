import pytest

from pfnkit.exceptions import InvalidConfigError, UnknownNameError
from pfnkit.registry import Registry


def test_register_get_and_decorator():
    reg: Registry[object] = Registry("widget")
    reg.register("a", int)

    @reg.register("b")
    class B:
        pass

    assert reg.get("a") is int
    assert reg["b"] is B
    assert "a" in reg and "zzz" not in reg
    assert reg.names() == ["a", "b"]
    reg.register("a", int)  # same object again is harmless


def test_taken_name_raises():
    reg: Registry[object] = Registry("widget")
    reg.register("a", int)
    with pytest.raises(InvalidConfigError, match="already registered"):
        reg.register("a", float)


def test_unknown_name_lists_known_and_closest():
    reg: Registry[object] = Registry("prior")
    reg.register("gaussian", int)
    reg.register("bnn", int)
    with pytest.raises(UnknownNameError) as e:
        reg.get("gausian")
    msg = str(e.value)
    assert "Unknown prior 'gausian'" in msg
    assert "bnn, gaussian" in msg
    assert "Did you mean 'gaussian'" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
