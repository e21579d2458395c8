from pathlib import Path

import pytest

from sentiment_lab.config import apply_overrides, build_config, load_config, read_yaml
from sentiment_lab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid():
    cfg = build_config({})
    assert cfg.model.name == "minilm-l6"
    assert cfg.training.metric_for_best_model == "f1"


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
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
