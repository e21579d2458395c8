import pytest
from transformers import AutoTokenizer

from sentiment_lab.sidecar import TextSettings
from sentiment_lab.tokenization import (
    count_tokens,
    encode_texts,
    preprocess_text,
    special_token_frame,
    token_budget,
    truncate_ids,
)

IDS = list(range(10))


@pytest.mark.parametrize(
    ("strategy", "head", "expected"),
    [
        ("head", None, [0, 1, 2, 3]),
        ("tail", None, [6, 7, 8, 9]),
        ("head_tail", 1, [0, 7, 8, 9]),
        ("head_tail", 3, [0, 1, 2, 9]),
        ("head_tail", None, [0, 7, 8, 9]),  # default head = budget // 4
    ],
)
def test_truncate_ids(strategy, head, expected):
    assert truncate_ids(IDS, 4, strategy, head) == expected


def test_short_sequences_untouched():
    assert truncate_ids([1, 2], 4, "head_tail", 1) == [1, 2]


def test_encode_respects_max_length_and_specials(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prefix, suffix = special_token_frame(tok)
    assert prefix == [tok.cls_token_id] and suffix == [tok.sep_token_id]
    long_text = " ".join(["good"] * 50 + ["bad"] * 50)
    enc = encode_texts(tok, [long_text, "good"], TextSettings(max_length=12, truncation="head_tail", head_tokens=3))
    ids = enc["input_ids"][0]
    assert len(ids) == 12 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    good, bad = tok.convert_tokens_to_ids(["good", "bad"])
    assert ids[1:4] == [good] * 3 and ids[4:-1] == [bad] * 7
    assert enc["input_ids"][1] == [tok.cls_token_id, good, tok.sep_token_id]
    assert enc["attention_mask"][1] == [1, 1, 1]


def test_head_matches_tokenizer_truncation(tiny_model_dir, imdb_sample):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = imdb_sample["text"].tolist()[:20]
    ours = encode_texts(tok, texts, TextSettings(max_length=64, truncation="head"))["input_ids"]
    theirs = tok(texts, truncation=True, max_length=64)["input_ids"]
    assert ours == theirs


def test_count_tokens_includes_specials(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert count_tokens(tok, ["good bad"]).tolist() == [4]


def test_token_budget_leaves_room_for_the_special_tokens(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert token_budget(tok, 64) == 62  # [CLS] ... [SEP]


def test_preprocess_text_options():
    text = "Good.<br /><br />BAD<BR>"
    assert preprocess_text(text) == text
    assert preprocess_text(text, lowercase=True, strip_html=True) == "good.  bad "
