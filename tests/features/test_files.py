"""Feature settings files: JSON and YAML into FeatureConfig, checked strictly, dumped back."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fleetml.features import FeatureConfig
from fleetml.features.files import (
    FeatureConfigError,
    dump_feature_config,
    feature_config_from_dict,
    field_names,
    load_feature_config,
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_and_yaml_files_give_the_same_config_and_unset_fields_keep_defaults(tmp_path):
    js = write(
        tmp_path,
        "f.json",
        json.dumps({"mean_windows": ["10h", "30h"], "ratios": [["a", "b"]], "seasonal": False}),
    )
    ym = write(
        tmp_path,
        "f.yaml",
        "mean_windows: [10h, 30h]\nratios:\n  - [a, b]\nseasonal: false\n",
    )
    cfg = load_feature_config(js)
    assert cfg == load_feature_config(ym)
    assert cfg.mean_windows == ("10h", "30h") and cfg.ratios == (("a", "b"),)
    assert cfg.seasonal is False
    assert cfg.std_windows == FeatureConfig().std_windows  # not in the file: default


def test_dump_is_json_safe_covers_every_field_and_reads_back_equal(tmp_path):
    cfg = FeatureConfig(mean_windows=("2h",), z_windows=("6h",), peers=False, ratios=())
    data = dump_feature_config(cfg)
    assert set(data) == {f.name for f in dataclasses.fields(FeatureConfig)} == set(field_names())
    path = write(tmp_path, "dumped.json", json.dumps(data))
    assert load_feature_config(path) == cfg
    assert feature_config_from_dict(dump_feature_config(None)) == FeatureConfig()


def test_unknown_key_names_the_key_the_file_and_the_valid_keys(tmp_path):
    path = write(tmp_path, "bad.json", json.dumps({"mean_window": ["1h"]}))
    with pytest.raises(FeatureConfigError) as info:
        load_feature_config(path)
    msg = str(info.value)
    assert "'mean_window'" in msg and str(path) in msg
    assert "valid keys:" in msg and "mean_windows" in msg and "peers" in msg


@pytest.mark.parametrize(
    ("content", "field", "hint"),
    [
        ({"mean_windows": ["15 minuets"]}, "mean_windows", "not a positive duration"),
        ({"std_windows": ["-1h"]}, "std_windows", "not a positive duration"),
        ({"roc_windows": ["15"]}, "roc_windows", "not a positive duration"),
        ({"seasonal_tolerance": "soon"}, "seasonal_tolerance", "not a positive duration"),
        ({"mean_windows": "1h"}, "mean_windows", "should be a list"),
        ({"seasonal_days": -3}, "seasonal_days", "negative"),
        ({"seasonal_days": 1.5}, "seasonal_days", "integer"),
        ({"peers": 1}, "peers", "boolean"),
        ({"ratios": [["a"]]}, "ratios", "required"),
    ],
)
def test_a_wrong_value_names_its_field(tmp_path, content, field, hint):
    path = write(tmp_path, "bad.json", json.dumps(content))
    with pytest.raises(FeatureConfigError) as info:
        load_feature_config(path)
    msg = str(info.value)
    assert f"'{field}" in msg and hint in msg and str(path) in msg


def test_a_negative_job_count_follows_joblib_and_long_windows_are_fine():
    cfg = feature_config_from_dict({"n_jobs": -1, "mean_windows": ["15 minutes", "7D"]})
    assert cfg.n_jobs == -1 and cfg.lookback_ms() >= 7 * 86_400_000


@pytest.mark.parametrize(
    ("name", "text", "hint"),
    [
        ("list.json", "[1, 2]", "mapping"),
        ("broken.json", "{mean_windows: 1h}", "not valid JSON"),
        ("broken.yml", "mean_windows: [1h\n", "not valid YAML"),
    ],
)
def test_files_that_are_not_a_mapping_say_so(tmp_path, name, text, hint):
    with pytest.raises(FeatureConfigError, match=hint):
        load_feature_config(write(tmp_path, name, text))


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FeatureConfigError, match="cannot read"):
        load_feature_config(tmp_path / "nope.json")
