"""The ``model`` parameters: defaults, validation and the normalised config every builder reads.

Validation runs before any layer is created, so a typo in ``params.yaml`` costs a second, not a
model build. Each failure is one line naming ``model.<key>``, the bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from marsseg import IMAGE_SHAPE
from marsseg.errors import UserError
from marsseg.params import reject_unknown_keys

ARCH_NAMES = ("unet", "unetpp", "unet3p", "attention_unet", "resunet")
NORMS = ("batch", "instance", "group", "none")
MIN_DEPTH, MAX_DEPTH = 3, 5

# Variants that are a base architecture with one option switched on for good.
FORCED_OPTIONS: dict[str, dict[str, Any]] = {
    "attention_unet": {"attention": True},
    "resunet": {"residual": True},
}

DEFAULTS: dict[str, Any] = {
    "arch": "unet",
    "depth": 3,
    "base_filters": 16,
    "norm": "instance",
    "norm_groups": 8,
    "se": False,
    "skip_gate": False,
    "attention": False,
    "residual": False,
    "denoise_input": False,
    "dropout": [0.0],
    "l2": 1.0e-4,
    "patch": 0,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Validated model options; ``dropout`` has exactly ``depth + 1`` entries (bottleneck last)."""

    arch: str
    depth: int
    base_filters: int
    norm: str
    norm_groups: int
    se: bool
    skip_gate: bool
    attention: bool
    residual: bool
    denoise_input: bool
    dropout: tuple[float, ...]
    l2: float
    patch: int

    def filters(self, level: int) -> int:
        """Channels at encoder level ``level`` (0 = full resolution); they double per pooling."""
        return self.base_filters * 2**level

    def to_params(self) -> dict[str, Any]:
        params = dataclasses.asdict(self)
        params["dropout"] = list(self.dropout)
        return params


def _fail(key: str, value: Any, allowed: str) -> UserError:
    return UserError(f"params.yaml: model.{key} is {value!r}; {allowed}")


def _as_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "expected true or false")
    return value


def _as_int(key: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, value, allowed)
    return value


def _as_number(key: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, value, allowed)
    return float(value)


def _poolable_depths(height: int, width: int) -> list[int]:
    return [d for d in range(MIN_DEPTH, MAX_DEPTH + 1) if height % 2**d == 0 and width % 2**d == 0]


def _check_depth(value: Any, height: int, width: int) -> int:
    depths = _poolable_depths(height, width)
    allowed = f"allowed: {', '.join(map(str, depths))} (poolings of the {height}x{width} input)"
    depth = _as_int("depth", value, allowed)
    if depth not in depths:
        raise _fail("depth", value, allowed)
    return depth


def _check_dropout(value: Any, depth: int) -> tuple[float, ...]:
    """A number or a per-level list (shallow to deep), padded with its last value to depth+1."""
    allowed = "expected a number or a list of numbers in [0, 1), one per level shallow to deep"
    rates = value if isinstance(value, list) else [value]
    if not rates:
        raise _fail("dropout", value, allowed)
    rates = [_as_number("dropout", rate, allowed) for rate in rates]
    if any(not 0.0 <= rate < 1.0 for rate in rates):
        raise _fail("dropout", value, allowed)
    levels = depth + 1
    return tuple((rates + [rates[-1]] * levels)[:levels])


def _check_patch(value: Any, depth: int, width: int) -> int:
    widths = [w for w in range(2**depth, width + 1, 2**depth) if width % w == 0]
    allowed = f"allowed: 0 (off) or a tile width dividing {width} that pools {depth} times: " + ", ".join(
        map(str, widths)
    )
    patch = _as_int("patch", value, allowed)
    if patch != 0 and patch not in widths:
        raise _fail("patch", value, allowed)
    return patch


def validate_model_params(
    model_params: Mapping[str, Any], input_shape: tuple[int, ...] = (*IMAGE_SHAPE, 1)
) -> dict[str, Any]:
    """Return a normalised copy of the ``model`` section, or raise ``UserError``."""
    return model_config(model_params, input_shape).to_params()


def model_config(
    model_params: Mapping[str, Any], input_shape: tuple[int, ...] = (*IMAGE_SHAPE, 1)
) -> ModelConfig:
    if not isinstance(model_params, Mapping):
        raise UserError(f"params.yaml: 'model' must be a mapping of options, got {model_params!r}")
    reject_unknown_keys("model", model_params, DEFAULTS)
    raw = {**DEFAULTS, **model_params}
    height, width = input_shape[0], input_shape[1]

    arch = raw["arch"]
    if arch not in ARCH_NAMES:
        raise _fail("arch", arch, f"allowed: {', '.join(ARCH_NAMES)}")
    norm = raw["norm"]
    if norm not in NORMS:
        raise _fail("norm", norm, f"allowed: {', '.join(NORMS)}")
    depth = _check_depth(raw["depth"], height, width)
    base_filters = _as_int("base_filters", raw["base_filters"], "expected a positive integer")
    if base_filters < 1:
        raise _fail("base_filters", base_filters, "expected a positive integer")
    norm_groups = _as_int("norm_groups", raw["norm_groups"], "expected a positive integer")
    if norm_groups < 1:
        raise _fail("norm_groups", norm_groups, "expected a positive integer")
    l2 = _as_number("l2", raw["l2"], "expected a number >= 0")
    if l2 < 0:
        raise _fail("l2", raw["l2"], "expected a number >= 0")

    flags = {key: _as_bool(key, raw[key]) for key in ("se", "skip_gate", "attention", "residual", "denoise_input")}
    flags.update(FORCED_OPTIONS.get(arch, {}))
    return ModelConfig(
        arch=arch,
        depth=depth,
        base_filters=base_filters,
        norm=norm,
        norm_groups=norm_groups,
        dropout=_check_dropout(raw["dropout"], depth),
        l2=l2,
        patch=_check_patch(raw["patch"], depth, width),
        **flags,
    )
