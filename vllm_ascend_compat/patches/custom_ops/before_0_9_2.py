"""The out-of-tree CustomOp registry of 0.9.2, and its custom ops on in eager mode, for 0.9.0
and 0.9.1."""

from typing import Any

op_registry_oot: dict[str, type] = {}


def _register_oot(cls: Any, _decorated_op_cls: Any = None, name: str | None = None) -> Any:
    """``CustomOp.register_oot(MyRMSNorm, name="RMSNorm")``, or as a decorator."""

    def decorator(op_cls: type) -> type:
        registered = name if name is not None else cls.__name__
        assert registered not in op_registry_oot, f"Duplicate op name: {registered}"
        op_cls.name = registered  # type: ignore[attr-defined]
        op_registry_oot[registered] = op_cls
        return op_cls

    return decorator if _decorated_op_cls is None else decorator(_decorated_op_cls)


register_oot = classmethod(_register_oot)


def _new(cls: type, *args: Any, **kwargs: Any) -> Any:
    """Instantiate the class registered under this layer's class name, if any (once per
    layer, at model construction)."""
    chosen = op_registry_oot.get(cls.__name__, cls)
    return object.__new__(chosen)


instantiate_registered = staticmethod(_new)


def custom_ops_on_when_eager(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    """Once per engine config: drop the ['none'] that vLLM set for inductor when the
    platform has made the model eager (a list the user gave is left as it was)."""
    chosen = instance.compilation_config.custom_ops if instance.compilation_config else []
    chosen = list(chosen)
    wrapped(*args, **kwargs)
    compilation, model = instance.compilation_config, instance.model_config
    if not chosen and compilation.custom_ops == ["none"] and model and model.enforce_eager:
        compilation.custom_ops = []
