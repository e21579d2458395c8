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
        try:
            changed = config_to_dict(load_config(trial)) != resolved
        except ConfigError:  # the line is needed: without it the config is invalid (e.g. test_file beside train_file)
            changed = True
        if not changed:
            restated.append(".".join(leaf))
    assert not restated, f"{path} restates values it already gets (default or base): {restated}; remove those lines"


def test_split_options_validate_and_round_trip():
    cfg = build_config({"data": {"split": "pooled", "pooled_fractions": [0.7, 0.15, 0.15]}})
    assert cfg.data.pooled_fractions == (0.7, 0.15, 0.15)
    assert build_config(config_to_dict(cfg)) == cfg  # a run's resolved config.yaml (every key written) loads again
    assert build_config({"data": {"val_fraction": 0}}).data.val_fraction == 0.0  # no validation split
    assert not build_config({"data": {"val_fraction": 0}}).data.has_validation_split
    assert not build_config({"data": {"split": "pooled", "pooled_fractions": [0.9, 0, 0.1]}}).data.has_validation_split
    assert cfg.data.has_validation_split and build_config({}).data.has_validation_split
    with pytest.raises(ConfigError, match=r"data.val_fraction"):
        build_config({"data": {"val_fraction": 1.0}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"split": "pooled", "pooled_fractions": [0.8, 0.1, 0.2]}, r"summing to 1"),
        ({"split": "pooled", "pooled_fractions": [0.9, 0.1, 0.0]}, r"train and test above 0"),
        ({"split": "pooled", "pooled_fractions": [1.1, -0.05, -0.05]}, r"validation 0 or more"),
        ({"split": "pooled", "pooled_fractions": [0.8, 0.2]}, r"data.pooled_fractions"),
        ({"split": "pooled", "val_fraction": 0.1}, r"with split: pooled the validation share is pooled_fractions\[1\]"),
        ({"pooled_fractions": [0.6, 0.2, 0.2]}, r"pooled_fractions applies to split: pooled only"),
        ({"split": "random"}, r"data.split"),
    ],
)
def test_bad_split_options_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"data": data})


SEED_DIR = REPO / "configs" / "seed"
# What each seed config must hold: the published recipe (and, where the study is silent, the documented assumption).
SEED_RECIPES = {
    "distilbert-config1.yaml": (
        "93.04%",
        {
            "model.name": "distilbert",
            "training.learning_rate": 2e-5,
            "training.batch_size": 16,
            "training.epochs": 3,
            "training.weight_decay": 0.01,
            "training.warmup_steps": 500,
            "training.precision": "fp16",
            "tokenization.max_length": 512,
            "tokenization.padding": "max_length",
            "training.eval_strategy": "steps",
            "training.eval_steps": 500,
            "training.early_stopping_patience": 3,
            "data.val_fraction": 0.2,
        },
    ),
    "distilbert-config2.yaml": (
        "92.88%",
        {
            "model.name": "distilbert",
            "training.learning_rate": 5e-5,
            "training.batch_size": 16,
            "training.epochs": 3,
            "training.weight_decay": 0.01,
        },
    ),
    "distilbert-config3.yaml": (
        "92.96%",
        {
            "model.name": "distilbert",
            "training.learning_rate": 3e-5,
            "training.batch_size": 8,
            "training.epochs": 4,
            "training.weight_decay": 0.02,
        },
    ),
    "distilbert-pooled.yaml": (
        "~92%",
        {
            "model.name": "distilbert",
            "data.split": "pooled",
            "data.pooled_fractions": (0.8, 0.1, 0.1),
            "data.lowercase": True,
            "tokenization.max_length": 256,
            "training.epochs": 2,
            "training.learning_rate": 2e-5,
            "training.warmup_steps": 0,
        },
    ),
    "distilbert-llrd.yaml": (
        "92.72%",
        {
            "model.name": "distilbert",
            "data.val_fraction": 0.25,
            "model.llrd": 0.95,
            "model.dropout": 0.3,
            "training.epochs": 3,
            "training.eval_strategy": "epoch",
            "training.early_stopping_patience": None,
            "tokenization.max_length": 512,
        },
    ),
    "bert-base-batch8.yaml": (
        "90.5%",
        {
            "model.name": "bert-base",
            "training.batch_size": 8,
            "training.epochs": 3,
            "training.precision": "fp16",
            "training.learning_rate": 2e-5,
            "tokenization.max_length": 512,
            "training.warmup_steps": 0,
        },
    ),
    "bert-base.yaml": (
        "94.2%",
        {
            "model.name": "bert-base",
            "data.val_fraction": 0.0,
            "training.epochs": 4,
            "training.learning_rate": 2e-5,
            "training.batch_size": 16,
            "training.warmup_steps": 500,
            "training.precision": "fp16",
            "tokenization.max_length": 512,
            "tokenization.padding": "max_length",
            "training.early_stopping_patience": None,
        },
    ),
}


def _get(cfg: object, dotted: str) -> object:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


def test_every_seed_config_has_a_recipe_check():
    assert sorted(p.name for p in SEED_DIR.glob("*.yaml")) == sorted(SEED_RECIPES)


@pytest.mark.parametrize("name", sorted(SEED_RECIPES))
def test_seed_configs_hold_the_published_recipe(name):
    published, recipe = SEED_RECIPES[name]
    cfg = load_config(SEED_DIR / name)
    # What every seed did: random (not length-grouped) batches, eval batch 32, a log line every 100 steps.
    common = {"training.group_by_length": False, "training.eval_batch_size": 32, "training.logging_steps": 100}
    for key, value in {**common, **recipe}.items():
        assert _get(cfg, key) == value, f"{name}: {key} is {_get(cfg, key)!r}, the seed's recipe has {value!r}"
    header = "".join(line for line in (SEED_DIR / name).read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"Published: {published} test accuracy" in header
    if name in ("distilbert-pooled.yaml", "distilbert-llrd.yaml", "bert-base-batch8.yaml", "bert-base.yaml"):
        assert "Assumed (not stated by the study" in header  # values the study does not give are said to be assumed


def test_readme_lists_every_seed_config_with_its_published_number():
    table = (REPO / "README.md").read_text().split("## Configs", 1)[1].split("\n\n", 2)[1].splitlines()
    for name, (published, _) in SEED_RECIPES.items():
        stem = name.removesuffix(".yaml")
        shown = "distilbert-config{1,2,3}" if stem.startswith("distilbert-config") else stem  # one row for three
        rows = [row for row in table if f"`configs/seed/{shown}.yaml`" in row]
        assert len(rows) == 1, f"README's config table needs one row for configs/seed/{shown}.yaml"
        assert published.strip("~%") in rows[0], f"README's row for {name} lacks its published number {published}"


def test_label_fields_validate_and_round_trip():
    cfg = build_config({"data": {"label_names": ["negative", "neutral", "positive"], "ordinal": True}})
    # IMDb's binary default map would send `positive` to 1: with three names the names alone map the strings
    assert cfg.data.label_map == {} and cfg.data.num_labels is None
    assert build_config(config_to_dict(cfg)) == cfg
    binary = build_config({"data": {"label_names": ["negative", "positive"]}})
    assert binary.data.label_map == build_config({}).data.label_map  # agrees with the names: kept
    own = build_config({"data": {"label_names": ["bad", "ok", "good"], "label_map": {"meh": 1}}})
    assert own.data.label_map == {"meh": 1}
    assert build_config({"training": {"class_weights": [1, 2.5]}}).training.class_weights == [1.0, 2.5]
    assert build_config({"training": {"class_weights": "balanced"}}).training.class_weights == "balanced"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"data": {"label_map": {"Pos": 1, "pos": 1}}},
            r"label_map has keys that differ only in case \('Pos' and 'pos'\)",
        ),
        (
            {"data": {"label_names": ["a", "b"], "label_map": {"x": 2}}},
            r"values must be class ids 0..1, got \{'x': 2\}",
        ),
        ({"data": {"label_map": {"x": -1}}}, r"values must be class ids 0 or more"),
        ({"data": {"label_names": ["a", "A"]}}, r"must be distinct"),
        ({"data": {"label_names": ["a", "b"], "num_labels": 3}}, r"num_labels is 3 but label_names lists 2 classes"),
        ({"data": {"label_names": ["neg", "pos"], "label_map": {"pos": 0}}}, r"contradicts label_names"),
        ({"training": {"class_weights": "bal"}}, r"class_weights must be none, balanced, or a list"),
        ({"training": {"class_weights": [1, 0]}}, r"class_weights must be none, balanced, or a list"),
    ],
)
def test_label_field_mistakes_are_one_problem(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config(raw)
    assert str(info.value).count("\n") == 1  # the header and one problem line
