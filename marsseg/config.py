"""One typed configuration: a schema per params group, and the only reader of ``params.yaml``.

    cfg = load_config()            # every group validated once, at the boundary
    cfg.model.depth, cfg.train.epochs, cfg.group_dict("model")

``params.yaml`` is the one place defaults live: the schemas below declare types and constraints next to
each field but no default values, so a key missing from the file is an error, not a silent fallback.
Every group (nested ones and the top level included) rejects unknown keys and names the nearest known
one. Names that come from a registry (architectures, losses, augmentations, data sources, clean rules)
are checked against the registry itself, so adding one is one function and one registration.

Why pydantic: it is already installed with MLflow, its models are typed, frozen and validated in one
call, `extra="forbid"` gives the unknown-key check for every group for free, and its error locations
(``("model", "depth")``) turn into the one-line messages users need. Strict mode keeps YAML honest:
``epochs: "3"`` or ``se: 1`` is refused instead of being coerced.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.errors import UserError

PARAMS_FILE = Path("params.yaml")

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
# Finite: an unbounded float such as `-S train.learning_rate=1e999` (inf) would pass ``ge``/``gt`` and train NaNs.
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # a share that must leave something over


class Group(BaseModel):
    """A params group: typed, frozen, no unknown keys, no coercion of mistyped YAML values."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _ordered_pair(name: str, value: list, low_bound: float | None = None, high_bound: float | None = None) -> list:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"expected [low, high] with low <= high, got {value}")
    if low_bound is not None and value[0] <= low_bound or high_bound is not None and value[1] >= high_bound:
        raise ValueError(f"expected {low_bound} < low <= high < {high_bound}, got {value}")
    return value


# ---------------------------------------------------------------- data

class SyntheticConfig(Group):
    n_train: PositiveInt
    n_test: PositiveInt
    outlier_fraction: Annotated[float, Field(ge=0, lt=0.5)]
    rock_image_fraction: Probability


class DataConfig(Group):
    source: str
    path: str
    limit: NonNegativeInt  # >0: a seeded random subset of that many training rows
    synthetic: SyntheticConfig

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        from marsseg.sources import SOURCES

        return _registered(value, SOURCES, "data source")

    @model_validator(mode="after")
    def _path_for_files(self) -> "DataConfig":
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data.source '{self.source}' reads a file or folder: set data.path")
        return self


# ---------------------------------------------------------------- clean

CLEAN_RULES = ("embedding", "shared_mask", "degenerate")


class CleanConfig(Group):
    rules: list[Literal[CLEAN_RULES]]
    pca_components: Annotated[int, Field(ge=2, le=512)]
    perplexity: Annotated[float, Field(ge=1, le=500)]
    tsne_iterations: Annotated[int, Field(ge=250, le=10_000)]
    n_jobs: Annotated[int, Field(ge=1, le=256)]  # threads; does not change the result
    min_embedding_rows: Annotated[int, Field(ge=4, le=10_000)]
    test_references: Annotated[int, Field(ge=0, le=1_000_000)]  # test images measured beside the training rows
    group_scales: Annotated[list[Annotated[float, Field(ge=0.01, le=100)]], Field(min_length=1)]
    max_group_fraction: Annotated[float, Field(ge=0, le=0.5)]
    min_isolation: Annotated[float, Field(ge=0, le=1000)]
    min_member_isolation: Annotated[float, Field(ge=0, le=1000)]
    min_lone_isolation: Annotated[float, Field(ge=0, le=1000)]
    max_mask_repeats: PositiveInt
    min_mask_classes: Annotated[int, Field(ge=1, le=NUM_CLASSES - 1)]
    min_image_std: Annotated[float, Field(ge=0, le=255)]
    min_image_range: Annotated[float, Field(ge=0, le=255)]

    @field_validator("rules")
    @classmethod
    def _no_repeats(cls, rules: list[str]) -> list[str]:
        if len(set(rules)) != len(rules):
            raise ValueError(f"lists a rule twice: {rules}")
        return rules

    @model_validator(mode="after")
    def _lone_needs_more(self) -> "CleanConfig":
        if self.min_lone_isolation < self.min_isolation:
            raise ValueError(f"clean.min_lone_isolation is {self.min_lone_isolation:g}, below clean.min_isolation "
                             f"{self.min_isolation:g}; a row on its own needs at least a group's isolation: "
                             f"set it to {self.min_isolation:g} or more")
        return self


# ---------------------------------------------------------------- split

class SplitConfig(Group):
    val_fraction: Fraction          # of images without big rock
    rare_val_fraction: Fraction     # of images with big rock
    near_duplicates: bool
    max_shift: Annotated[int, Field(ge=0, le=32)]
    min_correlation: Annotated[float, Field(gt=0, le=1)]
    folds: NonNegativeInt           # 0: one train/val split; k >= 2: a k-fold partition for cross-validation
    cv_folds: list[NonNegativeInt]  # the folds trained and evaluated, one DVC stage each (ids 0..folds-1)

    @model_validator(mode="after")
    def _folds(self) -> "SplitConfig":
        if self.folds == 1:
            raise ValueError("split.folds is 1; use 0 (one train/val split) or k >= 2 (k-fold cross-validation)")
        if self.folds == 0 and self.cv_folds:
            raise ValueError(f"split.cv_folds is {self.cv_folds} but split.folds is 0; set split.folds to k >= 2 "
                             "or split.cv_folds to []")
        if self.folds >= 2:
            wrong = [fold for fold in self.cv_folds if fold >= self.folds]
            if not self.cv_folds or wrong or len(set(self.cv_folds)) != len(self.cv_folds):
                raise ValueError(f"split.cv_folds is {self.cv_folds}; with split.folds {self.folds} list distinct fold "
                                 f"ids from 0 to {self.folds - 1}, e.g. {list(range(self.folds))}")
        return self


# ---------------------------------------------------------------- augment

class AugmentConfig(Group):
    copies_min: NonNegativeInt
    copies_max: NonNegativeInt
    rare_copies_min: NonNegativeInt
    rare_copies_max: NonNegativeInt
    p: dict[str, Probability]
    rotate_limit: NonNegative
    affine_shift: NonNegative
    affine_scale: list[Positive]
    affine_rotate: NonNegative
    crop_min_height: Annotated[int, Field(ge=1, le=IMAGE_SHAPE[0])]
    brightness_limit: NonNegative
    contrast_limit: NonNegative
    gamma_limit: list[Positive]
    cutmix_area: list[float]

    @field_validator("p")
    @classmethod
    def _every_transform(cls, p: dict[str, float]) -> dict[str, float]:
        from marsseg.augment import AUGMENTATIONS

        for name in p:
            _registered(name, AUGMENTATIONS, "augmentation", key=f"augment.p.{name}")
        missing = [name for name in AUGMENTATIONS if name not in p]
        if missing:
            raise ValueError(f"missing probability augment.p.{missing[0]} (0 turns it off)")
        return p

    @field_validator("affine_scale", "gamma_limit")
    @classmethod
    def _pair(cls, value: list, info) -> list:
        return _ordered_pair(info.field_name, value)

    @field_validator("cutmix_area")
    @classmethod
    def _area(cls, value: list) -> list:
        return _ordered_pair("cutmix_area", value, 0.0, 1.0)

    @model_validator(mode="after")
    def _copy_ranges(self) -> "AugmentConfig":
        for low, high in (("copies_min", "copies_max"), ("rare_copies_min", "rare_copies_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"augment.{low} ({getattr(self, low)}) is above augment.{high} ({getattr(self, high)})")
        return self


# ---------------------------------------------------------------- model

MIN_DEPTH, MAX_DEPTH = 3, 5
MODEL_FLAGS = ("se", "skip_gate", "attention", "residual", "denoise_input")


def poolable_depths(height: int = IMAGE_SHAPE[0], width: int = IMAGE_SHAPE[1]) -> list[int]:
    return [d for d in range(MIN_DEPTH, MAX_DEPTH + 1) if height % 2**d == 0 and width % 2**d == 0]


class ModelConfig(Group):
    """Validated model options; ``dropout`` comes out with exactly ``depth + 1`` rates (bottleneck last),
    and the options an architecture forces are applied."""

    arch: str
    depth: int
    base_filters: PositiveInt
    norm: Literal["batch", "instance", "group", "none"]
    norm_groups: PositiveInt  # groups for norm: group (fewer where channels need it)
    se: bool
    skip_gate: bool
    attention: bool
    residual: bool
    denoise_input: bool
    dropout: list[Annotated[float, Field(ge=0, lt=1)]]
    l2: NonNegative
    patch: NonNegativeInt  # 0: off; else the tile width of patch-and-compose

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        if isinstance(raw.get("dropout"), (int, float)) and not isinstance(raw.get("dropout"), bool):
            raw["dropout"] = [raw["dropout"]]
        if isinstance(raw.get("arch"), str):
            from marsseg.models.registry import ARCHITECTURES

            if raw["arch"] in ARCHITECTURES:
                raw.update(ARCHITECTURES[raw["arch"]].forces)
        return raw

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        from marsseg.models.registry import ARCHITECTURES

        return _registered(value, ARCHITECTURES, "architecture")

    @field_validator("depth")
    @classmethod
    def _poolable(cls, depth: int) -> int:
        if depth not in poolable_depths():
            raise ValueError(f"allowed: {', '.join(map(str, poolable_depths()))} "
                             f"(poolings of the {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} input)")
        return depth

    @field_validator("dropout")
    @classmethod
    def _some_rate(cls, rates: list[float]) -> list[float]:
        if not rates:
            raise ValueError("expected a number or a list of rates, one per level shallow to deep")
        return rates

    @model_validator(mode="after")
    def _per_level(self) -> "ModelConfig":
        levels = self.depth + 1
        object.__setattr__(self, "dropout", (list(self.dropout) + [self.dropout[-1]] * levels)[:levels])
        width = IMAGE_SHAPE[1]
        widths = [w for w in range(2**self.depth, width + 1, 2**self.depth) if width % w == 0]
        if self.patch and self.patch not in widths:
            raise ValueError(f"model.patch is {self.patch}; allowed: 0 (off) or a tile width dividing {width} "
                             f"that pools {self.depth} times: {', '.join(map(str, widths))}")
        return self

    def filters(self, level: int) -> int:
        """Channels at encoder level ``level`` (0 = full resolution); they double per pooling."""
        return self.base_filters * 2**level


# ---------------------------------------------------------------- loss

class LossConfig(Group):
    name: str                       # a registered loss, or several joined by '+'
    class_weights: Annotated[list[NonNegative], Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)]
    focal_gamma: NonNegative
    focal_weighted: bool
    tversky_alpha: NonNegative
    tversky_beta: NonNegative
    smooth: Positive
    sum_weights: list[NonNegative] | None  # one weight per '+'-joined term; null: all 1

    @field_validator("name")
    @classmethod
    def _known_terms(cls, name: str) -> str:
        from marsseg.losses import LOSSES

        for term in name.split("+"):
            _registered(term, LOSSES, "loss", hint="or names joined by '+' (e.g. focal+dice)")
        return name

    @field_validator("class_weights")
    @classmethod
    def _some_weight(cls, weights: list[float]) -> list[float]:
        if not any(weights):
            raise ValueError("at least one class weight must be above 0")
        return weights

    @model_validator(mode="after")
    def _consistent(self) -> "LossConfig":
        if self.tversky_alpha + self.tversky_beta == 0:
            raise ValueError("loss.tversky_alpha + loss.tversky_beta must be > 0")
        if self.sum_weights is not None:
            if len(self.sum_weights) != len(self.terms) or not any(self.sum_weights):
                raise ValueError(f"loss.sum_weights needs {len(self.terms)} weight(s) >= 0, not all 0, "
                                 f"one per term of '{self.name}'; got {self.sum_weights}")
        return self

    @property
    def terms(self) -> list[str]:
        return self.name.split("+")

    @property
    def term_weights(self) -> list[float]:
        return list(self.sum_weights) if self.sum_weights is not None else [1.0] * len(self.terms)


# ---------------------------------------------------------------- train

class TrainConfig(Group):
    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: Positive
    weight_decay: NonNegative
    plateau_factor: Annotated[float, Field(gt=0, lt=1)]
    plateau_patience: PositiveInt
    early_stopping_patience: PositiveInt
    strategy: Literal["default", "mirrored", "multiworker"]
    precision: Literal["auto", "float32", "bfloat16", "float16"]  # mixed bfloat16 / float16; auto: by hardware
    schedule: Literal["plateau", "cosine", "onecycle"]
    warmup_epochs: NonNegativeInt
    ema: bool  # validate, pick and save the moving average of the weights
    # best: the epoch with the highest val mIoU, then scored on the fold that picked it (an optimistic pick);
    # last: the final epoch, no choice made on the validation fold, so its score is unbiased
    keep: Literal["best", "last"]

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) must be below train.epochs ({self.epochs})")
        if self.schedule == "onecycle" and self.warmup_epochs < 1:
            raise ValueError("train.schedule 'onecycle' rises over train.warmup_epochs: set it to at least 1")
        # What the explicit multiworker loop (marsseg/train/distributed.py) does not implement.
        if self.strategy == "multiworker" and self.ema:
            raise ValueError("train.ema is not supported with train.strategy 'multiworker': set it to false")
        if self.strategy == "multiworker" and self.precision == "float16":
            raise ValueError("train.precision 'float16' is not supported with train.strategy 'multiworker' "
                             "(no loss scaling): use float32 or bfloat16")
        return self


# ---------------------------------------------------------------- evaluate, submit

class PredictConfig(Group):
    tta: bool                  # flip test-time augmentation
    batch_size: PositiveInt    # images per forward pass (speed and memory only)


class EvaluateConfig(PredictConfig):
    overlay_worst: NonNegativeInt
    overlay_random: NonNegativeInt
    confusion_sample: NonNegativeInt
    bootstrap: NonNegativeInt  # resamples of the validation images for 95% intervals; 0: off

    @model_validator(mode="after")
    def _some_overlay(self) -> "EvaluateConfig":
        if self.overlay_worst + self.overlay_random == 0:
            raise ValueError("evaluate.overlay_worst + evaluate.overlay_random must be at least 1 "
                             "(reports/overlays.png is a stage output)")
        return self


class SubmitConfig(PredictConfig):
    bootstrap: NonNegativeInt  # resamples of the test images for 95% intervals of the predicted class fractions; 0: off


# ---------------------------------------------------------------- tracking, CI

class MlflowConfig(Group):
    tracking_uri: str          # empty: sqlite mlflow.db in the repository root, or MLFLOW_TRACKING_URI
    experiment: Annotated[str, Field(min_length=1)]
    required: bool


class CiConfig(Group):
    tolerance: NonNegative
    ignore: list[str]


# ---------------------------------------------------------------- the whole file

class Config(Group):
    seed: NonNegativeInt
    data: DataConfig
    clean: CleanConfig
    split: SplitConfig
    augment: AugmentConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    submit: SubmitConfig
    mlflow: MlflowConfig
    ci: CiConfig

    def group_dict(self, name: str) -> Any:
        """A group as plain data (lists, dicts), e.g. for logging or hashing."""
        value = getattr(self, name)
        return value.model_dump() if isinstance(value, BaseModel) else value

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


GROUPS = tuple(Config.model_fields)


# ---------------------------------------------------------------- reading and messages

def _registered(name: str, registry, what: str, hint: str = "", key: str | None = None) -> str:
    """``name`` if ``registry`` holds it; else a message naming the nearest registered name.

    ``key``: the params key that names it (``augment.p.blur``), for names that are keys themselves."""
    if name not in registry:
        near = difflib.get_close_matches(str(name), list(registry), n=1)
        if key:
            parent = key.rsplit(".", 1)[0]
            suggestion = f"did you mean {parent}.{near[0]}? " if near else ""
            raise ValueError(f"unknown {what} {key}; {suggestion}known: {', '.join(registry)}")
        suggestion = f"did you mean '{near[0]}'? " if near else ""
        raise ValueError(f"unknown {what} '{name}'; {suggestion}known: {', '.join(registry)}" + (f" {hint}" if hint else ""))
    return name


def _schema_at(location: tuple) -> type[BaseModel] | None:
    """The schema class that owns the last key of ``location`` (for suggesting a known key)."""
    schema: Any = Config
    for part in location[:-1]:
        field = schema.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        schema = annotation
    return schema


def _dotted(location: tuple) -> str:
    return ".".join(str(part) for part in location)


def describe(error: dict, source: str) -> str:
    """One pydantic error -> one line that names the key and says what to fix."""
    location = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    key = _dotted(location)
    kind = error["type"]
    if kind == "extra_forbidden":
        schema = _schema_at(location)
        known = list(schema.model_fields) if schema else []
        near = difflib.get_close_matches(str(location[-1]), known, n=1)
        parent = _dotted(location[:-1])
        suggestion = f"did you mean {parent + '.' if parent else ''}{near[0]}? " if near else ""
        return f"{source}: unknown key {key}; {suggestion}known: {', '.join(known)}"
    if kind == "missing":
        return f"{source}: missing key {key} ({source} is where every setting and its default lives)"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.startswith("literal_error"):
        message = message.replace("Input should be ", "allowed: ")
    value = error.get("input")
    if isinstance(value, dict):  # a whole group or mapping was refused: the message says which part
        return f"{source}: {message}" if message.startswith("unknown ") else f"{source}: {key + ': ' if key else ''}{message}"
    return f"{source}: {key} is {value!r}; {message}"


def validate(raw: Any, source: str = str(PARAMS_FILE)) -> Config:
    """The parsed params file -> ``Config``, or one ``UserError`` line about the first problem."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of parameter groups at the top level")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe(exc.errors()[0], source)) from None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-05`` (no dot) as a string; DVC writes small ``-S`` floats that way and reads
    them back as numbers (YAML 1.2), so this loader does too."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """Parse YAML as DVC does (floats like ``1e-05`` included)."""
    return yaml.load(text, Loader=_Loader)


def read_params(path: str | Path = PARAMS_FILE) -> dict:
    """The raw YAML of a params file (no validation)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; run from the repository root (where params.yaml is)")
    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_config(path: str | Path = PARAMS_FILE) -> Config:
    return validate(read_params(path), str(path))


def validate_group(name: str, values: Any, source: str = str(PARAMS_FILE)) -> Any:
    """One group on its own (tests, tools that hold a single group)."""
    schema = Config.model_fields[name].annotation
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate(values)
        return Config.model_fields[name].annotation(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(describe({**error, "loc": (name, *error["loc"])}, source)) from None
