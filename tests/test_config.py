"""Config dataclasses: strict keys, type coercion, range checks, merging, hashing, YAML round trip."""

from __future__ import annotations

import pytest

from reidlib import config
from reidlib.config import (
    ConfigError,
    DataConfig,
    config_hash,
    deep_merge,
    from_dict,
    load_yaml,
    profile_config,
    replace,
    save_yaml,
    to_dict,
)
from reidlib.registry import Registry


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['heigth'\].*'height'"):
        from_dict(DataConfig, {"heigth": 96})


def test_types_and_ranges_are_checked():
    with pytest.raises(ConfigError, match="data.height: expected an integer, got '96'"):
        from_dict(DataConfig, {"height": "96"}, where="data")
    with pytest.raises(ConfigError, match=r"data.flip_p=1.5 is out of range \[0.0, 1.0\]"):
        from_dict(DataConfig, {"flip_p": 1.5})
    with pytest.raises(ConfigError, match="data.batch_k=1 is out of range"):
        from_dict(DataConfig, {"batch_k": 1})
    with pytest.raises(ConfigError, match="data.masks='labels'"):
        from_dict(DataConfig, {"masks": "labels"})
    assert from_dict(DataConfig, {"flip_p": 1}).flip_p == 1.0  # ints are valid floats


def test_merge_replace_and_roundtrip(tmp_path):
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}
    cfg = replace(DataConfig(), height=96, masks="parsing")
    assert (cfg.height, cfg.masks, cfg.width) == (96, "parsing", 128)
    save_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(DataConfig, load_yaml(tmp_path / "c.yaml")) == cfg


def test_hash_is_stable_and_sensitive():
    a, b = DataConfig(), DataConfig()
    assert config_hash(a) == config_hash(b) == config_hash(to_dict(a))
    assert config_hash(replace(a, pad=0)) != config_hash(a)


def test_registry_errors_list_known_names():
    reg = Registry("widget")
    reg.register("b")(object)
    reg.register("a")(object)
    assert reg.names() == ["a", "b"] and "a" in reg
    with pytest.raises(ValueError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(object)


def test_profile_sections_pull_in_their_preset(monkeypatch):
    files = {"m": {"paper": {"data": {"height": 384}, "train": {"epochs": 70, "lr": 0.01}},
                   "demo": {"preset": "small", "train": {"epochs": 5}}},
             "presets": {"small": {"data": {"height": 96, "width": 48}, "train": {"epochs": 2}}}}
    monkeypatch.setattr(config, "packaged_config", lambda name: files[name])
    demo = profile_config("m", "demo")
    # the preset over the paper section, the profile's own keys over the preset
    assert demo == {"data": {"height": 96, "width": 48}, "train": {"epochs": 5, "lr": 0.01}}
    assert profile_config("m", "paper") == files["m"]["paper"]
    assert profile_config("m", "demo", {"train": {"lr": 0.1}})["train"] == {"epochs": 5, "lr": 0.1}
    files["m"]["demo"]["preset"] = "nosuch"
    with pytest.raises(config.ConfigError, match="unknown preset 'nosuch'.*small"):
        profile_config("m", "demo")


def test_packaged_profiles_share_the_synthocc_presets():
    for name in ("bot", "pcb", "qpm", "qpm_ide", "vit_baseline", "clip_baseline", "bpbreid", "pab"):
        for profile, size in (("ci", "ci"), ("demo", "demo")):
            data = profile_config(name, profile)["data"]
            assert (data["dataset"], data["synth_size"]) == ("synthocc", size), (name, profile)
