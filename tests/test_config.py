import copy
from pathlib import Path

import pytest
import yaml

from sentiment_lab.config import apply_overrides, build_config, config_to_dict, load_config, read_config, read_yaml
from sentiment_lab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs").rglob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid():
    cfg = build_config({})
    assert cfg.model.name == "minilm-l6"
    assert cfg.training.metric_for_best_model == "f1"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path)


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'training.learnin_rate'"):
        load_config(write(tmp_path, "training:\n  learnin_rate: 1e-5\n"))


def test_wrong_type_and_range(tmp_path):
    with pytest.raises(ConfigError, match=r"training.batch_size"):
        load_config(write(tmp_path, "training:\n  batch_size: many\n"))
    with pytest.raises(ConfigError, match=r"data.val_fraction"):
        load_config(write(tmp_path, "data:\n  val_fraction: 1.5\n"))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("does/not/exist.yaml")


def test_tabs_refused(tmp_path):
    with pytest.raises(ConfigError, match="tabs"):
        read_yaml(write(tmp_path, "training:\n\tepochs: 2\n"))


def test_alias_bomb_refused(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(ConfigError):
        read_yaml(write(tmp_path, "\n".join(lines) + "\n"))


def test_recursive_alias_refused(tmp_path):
    with pytest.raises(ConfigError, match="refers to itself"):
        read_yaml(write(tmp_path, "a: &a [1, *a]\n"))


def test_plain_anchors_still_work(tmp_path):
    data = read_yaml(write(tmp_path, "base: &b {lr: 1}\nother: *b\n"))
    assert data == {"base": {"lr": 1}, "other": {"lr": 1}}


def test_python_tags_refused(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(write(tmp_path, "x: !!python/object/apply:os.system ['echo hi']\n"))


def test_overrides_parse_yaml_values():
    raw = apply_overrides({}, ["training.learning_rate=3e-5", "data.max_train=100", "model.name=distilbert"])
    cfg = build_config(raw)
    assert cfg.training.learning_rate == pytest.approx(3e-5)
    assert cfg.data.max_train == 100
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["training.epochs"])


def test_override_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'training.epoch'"):
        build_config(apply_overrides({}, ["training.epoch=3"]))


def test_imdb_dir_env_and_data_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("IMDB_DIR", str(tmp_path))
    assert load_config().data.path == str(tmp_path.resolve())
    assert load_config(data_path=str(tmp_path / "x")).data.path == str((tmp_path / "x").resolve())


def test_head_tokens_must_fit():
    with pytest.raises(ConfigError, match="head_tokens"):
        build_config({"tokenization": {"max_length": 64, "head_tokens": 100}})


def write_at(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_child_overrides_and_nested_sections_merge(tmp_path):
    write_at(
        tmp_path / "base.yaml", "name: base\ntraining:\n  learning_rate: 1.0e-4\n  epochs: 3\ndata:\n  max_train: 50\n"
    )
    child = write_at(tmp_path / "child.yaml", "base: base.yaml\ntraining:\n  learning_rate: 3.0e-5\n")
    cfg = load_config(child)
    assert cfg.training.learning_rate == pytest.approx(3e-5)  # the child's value wins
    assert cfg.training.epochs == 3.0 and cfg.data.max_train == 50  # the base's other keys stay
    assert cfg.name == "base"  # a child without `name:` inherits its base's
    assert "base" not in config_to_dict(cfg) and "base" not in read_config(child)


def test_base_chain_of_three_with_paths_relative_to_each_file(tmp_path, monkeypatch):
    write_at(tmp_path / "root" / "grand.yaml", "name: grand\ntraining:\n  epochs: 5\n  batch_size: 4\n")
    write_at(tmp_path / "mid" / "parent.yaml", "base: ../root/grand.yaml\nname: parent\ntraining:\n  batch_size: 8\n")
    child = write_at(tmp_path / "leaf" / "child.yaml", "base: ../mid/parent.yaml\ntokenization:\n  max_length: 64\n")
    monkeypatch.chdir(tmp_path / "root")  # paths resolve from the file that holds them, not the working folder
    cfg = load_config(child)
    assert (cfg.name, cfg.training.batch_size) == ("parent", 8)  # the middle file beats the root
    assert (cfg.training.epochs, cfg.tokenization.max_length) == (5.0, 64)  # root's and leaf's own keys stay


def test_set_overrides_beat_child_and_base(tmp_path):
    write_at(tmp_path / "base.yaml", "training:\n  epochs: 3\n  batch_size: 4\n")
    child = write_at(tmp_path / "child.yaml", "base: base.yaml\ntraining:\n  epochs: 2\n")
    cfg = load_config(child, ["training.epochs=7", "training.batch_size=2"])
    assert (cfg.training.epochs, cfg.training.batch_size) == (7.0, 2)


def test_missing_base_names_the_file_and_the_rule(tmp_path):
    child = write_at(tmp_path / "child.yaml", "base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base 'nope\.yaml' not found .*relative to the file"):
        load_config(child)


def test_base_cycle_is_refused(tmp_path):
    write_at(tmp_path / "a.yaml", "base: b.yaml\n")
    write_at(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a\.yaml -> .*b\.yaml -> .*a\.yaml\); remove the `base:`"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(write_at(tmp_path / "self.yaml", "base: self.yaml\n"))


@pytest.mark.parametrize("value", ["3", "[a.yaml]", "null", "''", "{x: 1}"])
def test_base_must_be_a_path(tmp_path, value):
    with pytest.raises(ConfigError, match=r"c\.yaml: `base:` must be the path of another config YAML"):
        load_config(write(tmp_path, f"base: {value}\n"))


def test_every_file_of_a_chain_is_read_safely(tmp_path):
    write_at(tmp_path / "base.yaml", "training:\n\tepochs: 2\n")
    with pytest.raises(ConfigError, match=r"base\.yaml indents with tabs"):
        load_config(write(tmp_path, "base: base.yaml\n"))


def test_base_outside_a_file_is_refused():
    with pytest.raises(ConfigError, match="resolved only when a config file is read"):
        build_config(apply_overrides({}, ["base=other.yaml"]))


def _leaves(raw: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_presets_state_only_what_differs(path, tmp_path):
    """A preset line whose removal leaves the resolved config unchanged restates a default (or its base's value)."""
    own = read_yaml(path)
    if "base" in own:
        own["base"] = str((path.parent / own["base"]).resolve())
    resolved = config_to_dict(load_config(path))
    restated = []
    for leaf in _leaves({k: v for k, v in own.items() if k != "base"}):
        without = copy.deepcopy(own)
        node = without
        for key in leaf[:-1]:
            node = node[key]
        del node[leaf[-1]]
        trial = tmp_path / "without-one-line.yaml"
        trial.write_text(yaml.safe_dump(without))
        if config_to_dict(load_config(trial)) == resolved:
            restated.append(".".join(leaf))
    assert not restated, f"{path} restates values it already gets (default or base): {restated}; remove those lines"
