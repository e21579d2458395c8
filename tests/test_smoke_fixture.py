import json


def test_tiny_run_dir_is_complete(tiny_run_dir):
    for name in ("config.yaml", "metrics.json", "history.csv", "predictions.parquet", "val_predictions.parquet"):
        assert (tiny_run_dir / name).is_file(), name
    assert (tiny_run_dir / "model" / "model.safetensors").is_file()
    metrics = json.loads((tiny_run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == 64


def test_tiny_tokenizer_reads_real_words(tiny_model_dir):
    # transformers 5 ignores BertTokenizer(vocab_file=...): the fixture once mapped every word to [UNK].
    from sentiment_lab.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert len(tokenizer) > 1000
    assert "[UNK]" not in tokenizer.tokenize("the movie was good")
