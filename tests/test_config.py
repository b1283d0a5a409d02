import json

import pytest

from cloudml.cli import main
from cloudml.config import load_config, preset_names
from cloudml.errors import ConfigError

# docs/architecture.md, 'Training procedure' (the presets table), key by key: (baseline, tuned)
TABLE = {
    "learning_rate": (0.001, 0.0005),
    "warmup_steps": (2000, 500),
    "overweight_factor": (3.5, 2.0),
    "early_stopping_patience": (15, 10),
    "early_stopping_min_delta": (0.00025, 0.0005),
    "weight_decay": (0.04, 0.04),
    "epochs": (50, 50),
    "batch_size": (20, 20),
    "temporal_frames": (5, 5),
    "loss_type": ("huber", "huber"),
    "loss_alpha": (0.5, 0.5),
    "huber_delta": (1.0, 1.0),
    "optimizer": ("AdamW", "AdamW"),
    "scheduler": ("ReduceLROnPlateau", "ReduceLROnPlateau"),
    "memory_optimized": (False, False),
    "gradient_checkpointing": (True, True),
    "torch_compile": (True, True),
    "torch_compile_mode": ("default", "default"),
    "use_spatial_attention": (True, True),
    "use_temporal_attention": (True, True),
    "flat_field_correction": (True, True),
    "clahe_clip_limit": (0.01, 0.01),
    "zscore_normalize": (True, True),
    "augment": (True, True),
    "swath_slice": ([40, 480], [40, 480]),
    "filter_type": ("basic", "basic"),
    "pretrain_flight": ("30Oct24", "30Oct24"),
    "overweight_flight": ("30Oct24", "30Oct24"),
    "validation_flight": ("12Feb25", "12Feb25"),
}


@pytest.mark.parametrize("col,preset", [(0, "baseline"), (1, "tuned")])
def test_presets_equal_design_table(col, preset):
    flat = load_config(preset).flat()
    for key, values in TABLE.items():
        assert flat[key] == values[col], key
        assert type(flat[key]) is type(values[col]), key


def test_every_preset_loads():
    assert {"baseline", "tuned"} <= set(preset_names())
    for name in preset_names():
        assert load_config(name).preset == name


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("memory_optimized=true", "memory_optimized", True),
        ("temporal_frames=4", "temporal_frames", 4),
        ("loss_type=mse_mae", "loss_type", "mse_mae"),
        ("use_temporal_attention=false", "use_temporal_attention", False),
        ("weight_decay=0.08", "weight_decay", 0.08),
        ("swath_slice=[0,512]", "swath_slice", [0, 512]),
    ],
)
def test_seed_alternatives_are_single_overrides(override, key, value):
    cfg = load_config("tuned", [override])
    assert cfg.flat()[key] == value
    rest = {k: v for k, v in cfg.flat().items() if k != key}
    assert rest == {k: v for k, v in load_config("tuned").flat().items() if k != key}


def test_all_problems_listed_once():
    with pytest.raises(ConfigError) as e:
        load_config(
            "tuned",
            [
                "learning_rate=-1",
                "early_stopping_patience=0",
                "foo=1",
                "temporal_frames=0",
                "validation_flight=30Oct24",
                "epochs=abc",
            ],
        )
    msg = str(e.value)
    for needle in (
        "learning_rate",
        "early_stopping_patience",
        "'foo'",
        "temporal_frames",
        "validation_flight must differ from pretrain_flight",
        "epochs",
    ):
        assert needle in msg
    assert "6 problem" in msg or "7 problem" in msg


@pytest.mark.parametrize(
    "override,needle",
    [
        ("validation_flight=01Jan99", "unknown flight '01Jan99'"),
        ("batch_size=1", "batch_size"),
        ("swath_slice=[480,40]", "swath_slice"),
        ("loss_alpha=2", "loss_alpha"),
        ("filter_type=strict", "filter_type"),
        ("torch_compile=maybe", "torch_compile: expected true/false"),
        ("attention_heads=3", "attention_heads"),
    ],
)
def test_invalid_values(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("tuned", [override])


def test_unknown_preset_names_choices():
    with pytest.raises(ConfigError, match="known presets: .*tuned"):
        load_config("nope")


def test_cli_config_json(capsys):
    assert main(["config", "--preset", "baseline", "--set", "epochs=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "baseline" and out["epochs"] == 3 and out["learning_rate"] == 0.001


def test_cli_config_error_exit(capsys):
    assert main(["config", "--set", "learning_rate=0"]) == 1
    assert "learning_rate: must be > 0" in capsys.readouterr().err
