import json


def test_tiny_run_dir_is_complete(tiny_run_dir):
    for name in ("config.yaml", "metrics.json", "history.csv", "predictions.parquet", "val_predictions.parquet"):
        assert (tiny_run_dir / name).is_file(), name
    assert (tiny_run_dir / "model" / "model.safetensors").is_file()
    metrics = json.loads((tiny_run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == 64
