"""benchmarks/head_pruning.py: the gradient head importance and the hand-written head removal (transformers 5 has
no `prune_heads`) on a tiny BERT built in code."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_benchmark, tiny_classifier_config

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "head_pruning.py"


@pytest.fixture(scope="module")
def pruning():
    return load_benchmark("head_pruning")


def _model(heads: int = 4):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_classifier_config("bert", 50, layers=2, max_positions=32)
    config.num_attention_heads = heads  # hidden 32: head size 8
    return AutoModelForSequenceClassification.from_config(config).eval()


def _masked_logits(model, ids, layer: int, heads: list[int]) -> torch.Tensor:
    """The model's logits with the given heads' outputs of one layer set to zero (what removing them must equal)."""
    attn = model.bert.encoder.layer[layer].attention.self

    def zero(module, inputs, output):
        out = output[0].clone()
        d = module.attention_head_size
        for h in heads:
            out[..., h * d : (h + 1) * d] = 0
        return (out, *output[1:])

    hook = attn.register_forward_hook(zero)
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        hook.remove()


def test_removing_heads_equals_zeroing_their_output(pruning):
    model = _model()
    ids = torch.randint(5, 50, (3, 12))
    # layer 0: heads 1 and 3 least important; layer 1: every head more important than those
    importance = np.array([[5.0, 0.1, 4.0, 0.2], [3.0, 3.5, 2.5, 6.0]])
    expected = _masked_logits(model, ids, 0, [1, 3])
    before = sum(p.numel() for p in model.parameters())
    removed = pruning.prune(model, importance, 0.25)
    assert removed == {0: [1, 3], 1: []}
    attn = model.bert.encoder.layer[0].attention.self
    assert attn.num_attention_heads == 2 and attn.query.out_features == 16
    assert model.bert.encoder.layer[0].attention.output.dense.in_features == 16
    assert sum(p.numel() for p in model.parameters()) == before - 2 * (4 * 8 * 32 + 3 * 8)  # q, k, v rows + o columns
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-5)


def test_every_layer_keeps_a_head(pruning):
    model = _model()
    importance = np.array([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    removed = pruning.prune(model, importance, 0.5)  # 4 of 8: layer 0 can give only 3
    assert removed == {0: [0, 1, 2], 1: [0]}
    assert [layer.attention.self.num_attention_heads for layer in model.bert.encoder.layer] == [1, 3]
    with torch.no_grad():
        assert model(input_ids=torch.randint(5, 50, (2, 7))).logits.shape == (2, 2)


def test_importance_is_the_gradient_of_the_loss_through_a_head_multiplier(pruning):
    from transformers import BertTokenizerFast

    model = _model()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{k}" for k in range(45)]]
    tokenizer = BertTokenizerFast(vocab=dict(zip(vocab, range(len(vocab)), strict=True)))
    texts, labels = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9"], [0, 1, 1]
    importance = pruning.head_importance(model, tokenizer, texts, labels, max_length=16)
    assert importance.shape == (2, 4) and (importance >= 0).all() and importance.sum() > 0
    # a head that the output projection ignores (its columns zero) cannot change the loss
    dense = model.bert.encoder.layer[1].attention.output.dense
    with torch.no_grad():
        dense.weight[:, 2 * 8 : 3 * 8] = 0
    importance = pruning.head_importance(model, tokenizer, texts, labels, max_length=16)
    assert importance[1, 2] == 0 and (np.delete(importance.ravel(), 6) > 0).all()
    pruning.prune(model, importance, 1 / 8)
    with pytest.raises(ValueError, match="unpruned"):
        pruning.head_importance(model, tokenizer, texts, labels, max_length=16)


def test_the_script_scores_every_fraction_against_the_unpruned_model(tiny_run_dir, tmp_path):
    import json
    import subprocess

    out = tmp_path / "head_pruning.json"
    cmd = [sys.executable, str(SCRIPT), str(tiny_run_dir), "--fractions", "0.5", "--val-n", "16", "--test-n", "32"]
    done = subprocess.run([*cmd, "--latency-n", "3", "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["unpruned", "50% of heads removed"]
    assert np.array(report["importance"]).shape == (2, 2)  # the tiny model: 2 layers of 2 heads
    assert sum(map(len, report["removed"]["0.5"].values())) == 2  # one head per layer: each keeps one
    pruned, unpruned = report["rows"]["50% of heads removed"], report["rows"]["unpruned"]
    assert pruned["parameters"] < unpruned["parameters"] and pruned["accuracy"]["n_boot"] == 2000
    assert unpruned["p50_vs_unpruned"] == 1.0 and unpruned["mcnemar_vs_unpruned"]["b"] == 0
