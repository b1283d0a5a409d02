"""Typed configuration: YAML presets -> one dataclass per concern, `--set key=value` overrides.

A preset is a flat YAML mapping (`cloudml/presets/<name>.yaml`); every key belongs to exactly
one of DataConfig, ModelConfig or TrainConfig, and every key is also a pipeline parameter.
Unknown keys and invalid values are rejected once, with every problem listed.

    cfg = load_config("tuned", ["learning_rate=3e-4", "memory_optimized=true"])
    cfg.train.learning_rate  # 0.0003
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cloudml.errors import ConfigError
from cloudml.fileio import check_input_file
from cloudml.flights import FLIGHT_NAMES

# cbh label range per filter_type, km (docs/physics.md, 'Label rules')
CBH_RANGES_KM: dict[str, tuple[float, float]] = {"basic": (0.1, 2.0), "practical": (0.05, 2.5)}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SCALES = ("local", "full")


def key(default: Any, help: str, pipeline: bool = True) -> Any:
    """A config field with its one description (`help`: what it changes, units, range).
    pipeline=False: a config key that is not a pipeline parameter (one implemented value)."""
    meta = {"help": help} if pipeline else {"help": help, "pipeline": False}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    """Flights, label filter and the preprocessing applied once at ingest."""

    temporal_frames: int = key(
        5,
        "Consecutive IR frames per sample (the temporal window the network sees), >= 1; "
        "more frames add parallax and motion cues at the cost of memory and time.",
    )
    swath_slice: tuple[int, int] = key(
        (40, 480),
        "Rows of the frame kept, [start, stop) in 512-row full-frame units (applied "
        "proportionally at local scale); 0 <= start < stop <= 512.",
    )
    flat_field_correction: bool = key(
        True,
        "At ingest, divide each frame by a flat field fitted to the flight's first good "
        "frames (radial vignetting times column striping).",
    )
    clahe_clip_limit: float = key(
        0.01,
        "CLAHE contrast clip limit at ingest, in [0, 1]; higher means stronger local "
        "contrast enhancement, 0 disables CLAHE.",
    )
    zscore_normalize: bool = key(
        True,
        "Standardise each frame to zero mean and unit variance at ingest.",
    )
    augment: bool = key(
        True,
        "Training-time only: random mirrors and transpositions of the frame grid (with the "
        "solar azimuth they imply); evaluation is never augmented.",
    )
    filter_type: str = key(
        "basic",
        "Label filter: which cloud-base heights count as labels. 'basic' keeps 0.1-2.0 km, "
        "'practical' 0.05-2.5 km (docs/physics.md, 'Label rules').",
    )
    pretrain_flight: str = key(
        "30Oct24",
        "Flight pretrain trains on (its earliest 1 - val_fraction, the rest selects the "
        "epoch); must be in flights and differ from validation_flight.",
    )
    overweight_flight: str = key(
        "30Oct24",
        "Flight finetune draws overweight_factor times as often as the others; must be in "
        "flights and differ from validation_flight.",
    )
    validation_flight: str = key(
        "12Feb25",
        "Flight held out of all training and scored once by evaluate: its R² is the one the "
        "gate judges.",
    )
    flights: tuple[str, ...] = key(
        FLIGHT_NAMES,
        "Campaign flights to ingest (one ingest task each); every flight except "
        "validation_flight is training data for finetune.",
    )
    # `local` bins frames down for a CPU (data/compute size only, never hyperparameters)
    scale: str = key(
        "full",
        "'full': frames as recorded (440x640 after the swath slice); 'local': frames "
        "area-averaged 20x for a CPU run. Changes data size only, never hyperparameters.",
    )

    @property
    def cbh_range_km(self) -> tuple[float, float]:
        return CBH_RANGES_KM[self.filter_type]

    @property
    def training_flights(self) -> tuple[str, ...]:
        """Every campaign flight except the validation flight (finetune's data)."""
        return tuple(f for f in self.flights if f != self.validation_flight)


@dataclass(frozen=True)
class ModelConfig:
    """The research network (docs/physics.md, 'The model')."""

    memory_optimized: bool = key(
        False,
        "Narrower network: 32/64/128 channels instead of 64/128/256 (about a quarter of the "
        "weights and less activation memory).",
    )
    use_spatial_attention: bool = key(
        True,
        "A learned spatial attention mask on each input frame, before the convolutions.",
    )
    use_temporal_attention: bool = key(
        True,
        "Attention across the temporal_frames of a sample; false averages them instead.",
    )
    use_multiscale_temporal: bool = key(
        False,
        "With use_temporal_attention: multi-scale temporal attention (several window "
        "lengths) instead of the single-scale one.",
    )
    attention_heads: int = key(
        4,
        "Heads of the attention layers; must divide the feature width (256, or 128 with "
        "memory_optimized).",
    )
    gradient_checkpointing: bool = key(
        True,
        "Recompute encoder activations in the backward pass to save memory (full scale "
        "only; skipped at local scale). Same result, slower.",
    )
    torch_compile: bool = key(
        True,
        "Compile the network with torch.compile where supported (CUDA); skipped on CPU.",
    )
    torch_compile_mode: str = key(
        "default",
        "torch.compile mode: one of default, reduce-overhead, max-autotune, "
        "max-autotune-no-cudagraphs.",
    )


MAX_ENSEMBLE = 16  # members; each is a full training run


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, early stopping (docs/architecture.md, 'Training procedure')."""

    learning_rate: float = key(
        0.0005,
        "AdamW peak learning rate, > 0, reached after warmup_steps; halved by the plateau "
        "schedule (plateau_factor).",
    )
    warmup_steps: int = key(
        500,
        "Linear learning-rate warm-up length in optimizer steps (batches), not epochs; >= 0.",
    )
    weight_decay: float = key(
        0.04,
        "AdamW decoupled weight decay, >= 0; larger values regularise more.",
    )
    epochs: int = key(
        50,
        "Upper limit on epochs per training stage, >= 1; early stopping usually ends a "
        "stage sooner.",
    )
    batch_size: int = key(
        20,
        "Samples per optimizer step, >= 2 (BatchNorm needs two); bounds memory use.",
    )
    optimizer: str = key(
        "AdamW",
        "Optimizer; only 'AdamW' is implemented (a config key, not a pipeline parameter).",
        pipeline=False,
    )
    scheduler: str = key(
        "ReduceLROnPlateau",
        "Learning-rate schedule after warm-up; only 'ReduceLROnPlateau' is implemented (a "
        "config key, not a pipeline parameter).",
        pipeline=False,
    )
    plateau_factor: float = key(
        0.5,
        "Factor in (0, 1) the learning rate is multiplied by when the selection-split loss "
        "stops improving.",
    )
    plateau_patience: int = key(
        5,
        "Epochs without selection-split improvement before the learning rate is cut, >= 0.",
    )
    loss_type: str = key(
        "huber",
        "Training loss on the standardised height: 'huber' (huber_delta) or 'mse_mae' "
        "(loss_alpha x MSE + (1 - loss_alpha) x MAE).",
    )
    loss_alpha: float = key(
        0.5,
        "mse_mae only: weight of MSE in [0, 1]; 0 is pure MAE, 1 pure MSE.",
    )
    huber_delta: float = key(
        1.0,
        "huber only: residual (in standard deviations of the height) where the loss turns "
        "from quadratic to linear, > 0.",
    )
    grad_clip: float = key(
        1.0,
        "Gradient norm clip per optimizer step, >= 0; 0 disables clipping.",
    )
    ema_decay: float = key(
        0.98,
        "Decay of the moving average of the weights that is judged and kept, in [0, 1); 0 "
        "turns the average off.",
    )
    early_stopping_patience: int = key(
        10,
        "Epochs without a selection-split improvement before a stage stops, >= 1.",
    )
    early_stopping_min_delta: float = key(
        0.0005,
        "Smallest drop in selection-split loss that counts as an improvement, >= 0.",
    )
    early_stopping_after_warmup: bool = key(
        False,
        "Count early-stopping patience only after the learning-rate warm-up, as the plateau "
        "schedule does (an improvement during warm-up still resets it). Off by default: in "
        "a pilot of 4 paired draws the longer stages kept the same epoch in 3 and scored "
        "lower in 1 (docs/draws.md, 'Where early stopping ends a stage').",
    )
    overweight_factor: float = key(
        2.0,
        "Finetune draws overweight_flight this many times as often as each other flight, >= "
        "1 (1 = uniform).",
    )
    val_fraction: float = key(
        0.2,
        "Time-ordered tail of each training flight held out as the selection split (picks "
        "the epoch, drives early stopping), in (0, 1).",
    )
    mixed_precision: bool = key(
        True,
        "bfloat16 autocast of the forward passes (training, BatchNorm re-estimation, "
        "prediction) on CUDA (speed, memory); on CPU see mixed_precision_cpu.",
    )
    mixed_precision_cpu: bool = key(
        False,
        "With mixed_precision, bf16 autocast on CPUs with native bf16 (AVX512-BF16 or AMX) "
        "too; float32 on other CPUs. Off by default: measured 1.4x faster local steps, but "
        "12Feb25 R² 0.085 lower on average (standard error 0.072) over 12 paired draws and "
        "the ensembles lower on both development campaigns (docs/draws.md).",
    )
    seed: int = key(
        42,
        "Training seed of the first ensemble member; member i trains with seed + i.",
    )
    ensemble_size: int = key(
        2,
        "Members of the shipped ensemble, 1-16, each its own pretrain + finetune with its "
        "own seed; evaluate averages their predictions. 1 = a single model. Default 2: what "
        "`make run` fits in 15 minutes on a 2-core CPU; 3 halves the spread further "
        "(docs/draws.md) where members train in parallel.",
    )


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    def flat(self) -> dict[str, Any]:
        """All keys in one JSON-friendly mapping (tuples become lists)."""
        out: dict[str, Any] = {}
        for section in (self.data, self.model, self.train):
            for f in fields(section):
                v = getattr(section, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_json(self) -> str:
        return json.dumps({"preset": self.preset, **self.flat()}, indent=2)


# section name -> its dataclass, in Config's field order; every key belongs to one section
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
KEY_SECTION: dict[str, str] = {
    f.name: section for section, cls in SECTIONS.items() for f in fields(cls)
}


def key_help() -> dict[str, str]:
    """{key: its one-line description} for every config key, in definition order.

    The descriptions live beside the fields (`metadata["help"]`); the pipeline's parameter
    descriptions, `cloudml config --help` and docs/config.md are all drawn from here."""
    return {f.name: f.metadata["help"] for cls in SECTIONS.values() for f in fields(cls)}


def pipeline_keys() -> list[str]:
    """The config keys that are pipeline parameters, in definition order: every key except
    those whose metadata says `pipeline: False` (one implemented value, nothing to choose)."""
    return [
        f.name for cls in SECTIONS.values() for f in fields(cls) if f.metadata.get("pipeline", True)
    ]


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("cloudml.presets").iterdir()
        if p.name.endswith(".yaml")
    )


def read_preset(name_or_path: str) -> dict[str, Any]:
    """The raw key/value mapping of a preset name (`tuned`) or a YAML file path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = check_input_file(name_or_path, "preset file", ConfigError)
        text, where = path.read_text(), str(path)
    else:
        res = resources.files("cloudml.presets") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown preset {name_or_path!r}; known presets: {', '.join(preset_names())}"
            )
        text, where = res.read_text(), f"preset {name_or_path}"
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of key: value, got {type(raw).__name__}")
    return raw


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["lr=1e-3", "swath_slice=[0,512]"]` -> {"lr": 0.001, ...}; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check `value` against a field type; ints pass as floats. Raises ValueError."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        if key.endswith("_flight") and isinstance(value, (int, float)):
            return str(value)
        raise ValueError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(typ)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args, strict=True))
    raise TypeError(f"unsupported config type for {key}: {typ}")


# Sane bounds of every numeric key: (low, high, low inclusive, high inclusive). A value
# outside them is a typo or a unit slip (batch_size=1000000000, seed=-1), never a setting
# worth a run: the upper ends sit far above anything the presets or the seed's notes use.
# tests/test_config_bounds.py fails when a numeric key has no entry here.
SEED_MAX = 2**32 - 1 - MAX_ENSEMBLE  # members use seed..seed+K-1; NumPy seeds are uint32
NUMERIC_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "temporal_frames": (1, 32, True, True),  # frames per sample; the research uses 5
    "clahe_clip_limit": (0.0, 1.0, True, True),  # 0 disables CLAHE
    "attention_heads": (1, 256, True, True),  # must also divide the feature width
    "learning_rate": (0.0, 1.0, False, True),
    "warmup_steps": (0, 1_000_000, True, True),
    "weight_decay": (0.0, 1.0, True, True),
    "epochs": (1, 10_000, True, True),
    "batch_size": (2, 4096, True, True),  # >= 2: BatchNorm needs two samples
    "plateau_factor": (0.0, 1.0, False, False),
    "plateau_patience": (0, 1000, True, True),
    "loss_alpha": (0.0, 1.0, True, True),
    "huber_delta": (0.0, 100.0, False, True),  # on the standardised target
    "grad_clip": (0.0, 1e6, True, True),  # 0 = no clipping
    "ema_decay": (0.0, 1.0, True, False),  # 0 = off
    "early_stopping_patience": (1, 10_000, True, True),
    "early_stopping_min_delta": (0.0, 1.0, True, True),  # standardised loss
    "overweight_factor": (1.0, 1000.0, True, True),
    "val_fraction": (0.0, 1.0, False, False),
    "seed": (0, SEED_MAX, True, True),
    "ensemble_size": (1, MAX_ENSEMBLE, True, True),  # each member is a full training run
}
_WHY_LOW = {"batch_size": " (BatchNorm needs two samples)", "ema_decay": " (0 = off)"}


def bound_problem(key: str, value: float) -> str | None:
    """The problem with `value` for numeric `key` under NUMERIC_BOUNDS, or None."""
    lo, hi, lo_in, hi_in = NUMERIC_BOUNDS[key]
    why = _WHY_LOW.get(key, "")
    if not (value >= lo if lo_in else value > lo):  # also catches NaN
        return f"{key}: must be {'>=' if lo_in else '>'} {lo}{why}, got {value}"
    if not (value <= hi if hi_in else value < hi):
        return f"{key}: must be {'<=' if hi_in else '<'} {hi}, got {value}"
    return None


def validate(cfg: Config) -> list[str]:
    """Every problem with a resolved config (empty when valid)."""
    d, m, t = cfg.data, cfg.model, cfg.train
    p: list[str] = []
    for key in ("pretrain_flight", "overweight_flight", "validation_flight"):
        if getattr(d, key) not in d.flights:
            p.append(f"{key}: unknown flight {getattr(d, key)!r} (known: {', '.join(d.flights)})")
    unknown = [f for f in d.flights if f not in FLIGHT_NAMES]
    if unknown:
        p.append(f"flights: unknown flight(s) {unknown} (known: {', '.join(FLIGHT_NAMES)})")
    if len(set(d.flights)) != len(d.flights):
        p.append(f"flights: duplicates in {list(d.flights)}")
    if d.validation_flight == d.pretrain_flight:
        p.append("validation_flight must differ from pretrain_flight (it is held out of training)")
    if d.validation_flight == d.overweight_flight:
        p.append(
            "validation_flight must differ from overweight_flight (it is held out of training)"
        )
    for key in NUMERIC_BOUNDS:
        section = (d, m, t)[list(SECTIONS).index(KEY_SECTION[key])]
        if (problem := bound_problem(key, getattr(section, key))) is not None:
            p.append(problem)
    a, b = d.swath_slice
    if not (0 <= a < b <= 512):
        p.append(f"swath_slice: need 0 <= start < stop <= 512 (full-frame rows), got [{a}, {b}]")
    if d.filter_type not in CBH_RANGES_KM:
        p.append(f"filter_type: must be one of {sorted(CBH_RANGES_KM)}, got {d.filter_type!r}")
    if d.scale not in SCALES:
        p.append(f"scale: must be one of {list(SCALES)}, got {d.scale!r}")
    width = 128 if m.memory_optimized else 256
    if m.attention_heads >= 1 and width % m.attention_heads:
        p.append(f"attention_heads: must divide the feature width {width}, got {m.attention_heads}")
    if m.torch_compile_mode not in COMPILE_MODES:
        p.append(
            f"torch_compile_mode: must be one of {list(COMPILE_MODES)}, got {m.torch_compile_mode!r}"
        )
    if t.optimizer != "AdamW":
        p.append(f"optimizer: only 'AdamW' is implemented, got {t.optimizer!r}")
    if t.scheduler != "ReduceLROnPlateau":
        p.append(f"scheduler: only 'ReduceLROnPlateau' is implemented, got {t.scheduler!r}")
    if t.loss_type not in ("huber", "mse_mae"):
        p.append(f"loss_type: must be 'huber' or 'mse_mae', got {t.loss_type!r}")
    return p


def build_config(values: dict[str, Any], preset: str = "custom") -> Config:
    """A validated Config from a flat mapping; every unknown key and bad value is reported."""
    problems: list[str] = []
    per_section: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in values.items():
        section = KEY_SECTION.get(key)
        if section is None:
            problems.append(f"unknown key {key!r}")
            continue
        hints = typing.get_type_hints(SECTIONS[section])
        try:
            per_section[section][key] = _coerce(key, value, hints[key])
        except ValueError as e:
            problems.append(str(e))
    cfg = Config(
        data=DataConfig(**per_section["data"]),
        model=ModelConfig(**per_section["model"]),
        train=TrainConfig(**per_section["train"]),
        preset=preset,
    )
    problems += validate(cfg)
    if problems:
        raise ConfigError(_listing(preset, problems))
    return cfg


def _listing(preset: str, problems: list[str]) -> str:
    head = f"invalid configuration ({preset}): {len(problems)} problem(s)"
    return "\n  - ".join([head, *problems])


def load_config(
    preset: str = "tuned", overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """Preset (name or YAML path) plus overrides -> validated Config."""
    values = read_preset(preset)
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    values.update(extra)
    name = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    return build_config(values, preset=name)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from `Config.flat()` output plus `preset` (e.g. from a checkpoint)."""
    values = dict(values)
    preset = str(values.pop("preset", "custom"))
    return build_config(values, preset=preset)


def replace(cfg: Config, **changes: Any) -> Config:
    """A copy of `cfg` with flat keys changed, re-validated."""
    values = cfg.flat()
    values.update(changes)
    return build_config(values, preset=cfg.preset)


__all__ = [
    "SECTIONS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "build_config",
    "key_help",
    "pipeline_keys",
    "config_from_dict",
    "replace",
]
