"""The REST API with FastAPI's TestClient: every endpoint and every error case, on a fake model and the tiny model."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sentiment_lab.analysis.explain import merge_wordpieces
from sentiment_lab.errors import ConfigError
from sentiment_lab.predictor import Predictor
from sentiment_lab.server import auth
from sentiment_lab.server.app import create_app
from sentiment_lab.server.explainer import model_explainer
from sentiment_lab.server.run import bind_socket, check_bind
from sentiment_lab.server.settings import ServerSettings, build_settings


def fake_predict(texts: list[str]) -> list[dict[str, Any]]:
    """POSITIVE when the text says 'good'; a fixed confidence so needs_review is predictable."""
    out = []
    for t in texts:
        pos = "good" in t
        out.append({"label": "POSITIVE" if pos else "NEGATIVE", "score": 0.9, "prob_pos": 0.9 if pos else 0.1})
        out[-1]["needs_review"] = "unsure" in t
    return out


def client_for(predict=fake_predict, explain=None, **settings: Any) -> TestClient:
    app = create_app(predict, ServerSettings(**settings), {"model_dir": "fake", "backend": "test"}, explain)
    return TestClient(app)


def test_predict_returns_one_prediction_per_text_in_order() -> None:
    with client_for() as client:
        r = client.post("/v1/predict", json={"texts": ["a good film", "dull", "good but unsure"]})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == ["POSITIVE", "NEGATIVE", "POSITIVE"]
    assert [p["needs_review"] for p in preds] == [False, False, True]
    assert set(preds[0]) == {"label", "score", "prob_pos", "needs_review"}


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('{"texts": ["unterminated', "JSON decode error"),
        ('{"texts": "one string, not a list"}', "list"),
        ('{"texts": [1, 2]}', "string"),
        ('{"texts": ["ok", null]}', "string"),
        ('{"text": ["misspelled key"]}', "texts"),
        ('{"texts": ["ok"], "extra": 1}', "extra"),
        ('["texts"]', "dict"),
    ],
)
def test_invalid_json_and_wrong_types_are_422(body: str, fragment: str) -> None:
    with client_for() as client:
        r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert fragment.lower() in json.dumps(r.json()).lower()


@pytest.mark.parametrize(
    "texts, fragment",
    [
        ([], "texts is empty"),
        (["x"] * 5, "max_texts=4"),
        (["fine", "y" * 101], "text 1 has 101 characters; the limit is max_chars=100"),
        (["fine", ""], "text 1 is empty"),
        (["   \n\t"], "text 0 is empty or whitespace only"),
    ],
)
def test_limits_and_empty_texts_are_422_naming_the_problem(texts: list[str], fragment: str) -> None:
    with client_for(max_texts=4, max_chars=100) as client:
        r = client.post("/v1/predict", json={"texts": texts})
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


def test_body_over_the_limit_is_413_with_or_without_content_length() -> None:
    big = json.dumps({"texts": ["x" * 3000]}).encode()
    with client_for(max_body_bytes=1024, max_chars=10**6) as client:
        declared = client.post("/v1/predict", content=big, headers={"Content-Type": "application/json"})
        streamed = client.post(
            "/v1/predict",
            content=iter([big[:600], big[600:]]),  # chunked: no Content-Length, counted as it arrives
            headers={"Content-Type": "application/json"},
        )
        small = client.post("/v1/predict", json={"texts": ["good"]})
    for r in (declared, streamed):
        assert r.status_code == 413
        assert "max_body_bytes=1024" in r.json()["detail"]
    assert small.status_code == 200


def test_full_queue_answers_503_with_retry_after() -> None:
    gate = threading.Event()

    def blocked(texts: list[str]) -> list[dict[str, Any]]:
        assert gate.wait(10)
        return fake_predict(texts)

    with client_for(blocked, max_queue=2, max_batch_size=1, max_wait_ms=0) as client, ThreadPoolExecutor(2) as pool:
        first = [pool.submit(client.post, "/v1/predict", json={"texts": ["good"]}) for _ in range(2)]
        deadline = time.monotonic() + 5
        while "sentiment_lab_queue_texts 2.0" not in client.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.01)  # until both requests are held by the batcher
        r = client.post("/v1/predict", json={"texts": ["one too many"]})
        gate.set()
        answers = [f.result(timeout=10) for f in first]
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert "limit 2" in r.json()["detail"]
    assert [a.status_code for a in answers] == [200, 200]


def test_slow_prediction_times_out_with_504() -> None:
    def slow(texts: list[str]) -> list[dict[str, Any]]:
        time.sleep(0.5)
        return fake_predict(texts)

    with client_for(slow, request_timeout_s=0.1) as client:
        r = client.post("/v1/predict", json={"texts": ["good"]})
    assert r.status_code == 504
    assert "request_timeout_s=0.1" in r.json()["detail"]


def test_model_errors_become_500_without_a_traceback() -> None:
    def broken(texts: list[str]) -> list[dict[str, Any]]:
        raise RuntimeError("internal detail")

    with client_for(broken) as client:
        r = client.post("/v1/predict", json={"texts": ["good"]})
        assert client.post("/v1/predict", json={"texts": ["good"]}).status_code == 500  # the server keeps serving
    assert r.status_code == 500
    assert "internal detail" not in r.text and "server log" in r.json()["detail"]


def test_api_key_is_required_on_v1_and_checked_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    body = {"texts": ["good"]}
    with client_for(api_key="s3cret-key") as client:
        missing = client.post("/v1/predict", json=body)
        wrong = client.post("/v1/predict", json=body, headers={"X-API-Key": "s3cret-kez"})
        by_header = client.post("/v1/predict", json=body, headers={"X-API-Key": "s3cret-key"})
        by_bearer = client.post("/v1/predict", json=body, headers={"Authorization": "Bearer s3cret-key"})
        info_without = client.get("/v1/model")
        health = client.get("/healthz")
        info = client.get("/v1/model", headers={"X-API-Key": "s3cret-key"}).json()
    assert missing.status_code == 401 and wrong.status_code == 401 and info_without.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "X-API-Key" in missing.json()["detail"]
    assert by_header.status_code == 200 and by_bearer.status_code == 200
    assert health.status_code == 200  # probes need no key
    assert (b"s3cret-kez", b"s3cret-key") in calls and (b"s3cret-key", b"s3cret-key") in calls
    assert "s3cret" not in json.dumps(info)  # the key never appears in the model/limits answer


def test_health_readiness_and_model_info() -> None:
    app = create_app(fake_predict, ServerSettings(max_texts=7), {"model_dir": "fake", "backend": "test"})
    cold = TestClient(app)  # no `with`: the lifespan (model thread, batcher) has not started
    assert cold.get("/healthz").status_code == 200
    assert cold.get("/readyz").status_code == 503
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        info = client.get("/v1/model").json()
    assert info["model"] == {"model_dir": "fake", "backend": "test"}
    assert info["limits"]["max_texts"] == 7 and "api_key" not in info["limits"]
    assert info["explain"] is False


def test_metrics_count_requests_batches_and_errors() -> None:
    with client_for(max_wait_ms=0) as client:
        client.post("/v1/predict", json={"texts": ["good", "bad"]})
        client.post("/v1/predict", json={"texts": []})
        client.get("/no-such-page")
        text = client.get("/metrics").text
    assert 'sentiment_lab_http_requests_total{path="/v1/predict",status="200"} 1.0' in text
    assert 'sentiment_lab_http_requests_total{path="/v1/predict",status="422"} 1.0' in text
    assert 'sentiment_lab_http_requests_total{path="other",status="404"} 1.0' in text
    assert "sentiment_lab_batch_size_count 1.0" in text and "sentiment_lab_batch_size_sum 2.0" in text
    assert "sentiment_lab_texts_predicted_total 2.0" in text
    assert 'sentiment_lab_http_request_duration_seconds_count{path="/v1/predict"} 2.0' in text


def test_docs_and_page_need_no_cdn() -> None:
    with client_for() as client:
        docs = client.get("/docs")
        page = client.get("/")
        assets = [client.get(f"/static/{name}") for name in ("app.js", "style.css")]
        schema = client.get("/openapi.json").json()
        swagger_js = client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text  # every asset from this server
    assert swagger_js.status_code == 200
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'src="/static/app.js"' in page.text and "http" not in page.text
    assert all(a.status_code == 200 for a in assets)
    assert "textContent" in assets[0].text and "innerHTML" not in assets[0].text
    assert "/v1/predict" in schema["paths"] and "422" in schema["paths"]["/v1/predict"]["post"]["responses"]


def test_explain_endpoint_with_and_without_an_explainer() -> None:
    def explain(text: str) -> dict[str, Any]:
        return {"label": "POSITIVE", "prob_pos": 0.8, "words": [{"text": w, "score": 1.0} for w in text.split()]}

    with client_for(explain=explain) as client:
        ok = client.post("/v1/explain", json={"text": "a good film"})
        empty = client.post("/v1/explain", json={"text": "  "})
        assert client.get("/v1/model").json()["explain"] is True
    with client_for() as client:
        missing = client.post("/v1/explain", json={"text": "a good film"})
    assert ok.status_code == 200 and [w["text"] for w in ok.json()["words"]] == ["a", "good", "film"]
    assert ok.json()["truncated"] is False
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    assert missing.status_code == 404


def test_explanations_are_bounded() -> None:
    gate, entered = threading.Event(), threading.Event()

    def slow_explain(text: str) -> dict[str, Any]:
        entered.set()
        assert gate.wait(10)
        return {"label": "POSITIVE", "prob_pos": 0.8, "words": [], "truncated": False}

    with client_for(explain=slow_explain, max_explain_pending=1) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/explain", json={"text": "good"})
        assert entered.wait(5)  # the first explanation is running
        second = client.post("/v1/explain", json={"text": "good"})
        gate.set()
        assert first.result(timeout=10).status_code == 200
        third = client.post("/v1/explain", json={"text": "good"})  # the slot is free again
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"
    assert third.status_code == 200


def test_tiny_model_predictions_and_explanations(tiny_model_dir: Path) -> None:
    predictor = Predictor.load(tiny_model_dir)
    texts = ["A wonderful, moving film.", "Dull and far too long.", "<script>alert(1)</script> meh"]
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    with TestClient(app) as client:
        r = client.post("/v1/predict", json={"texts": texts})
        e = client.post("/v1/explain", json={"text": texts[0]})
        info = client.get("/v1/model").json()
    assert r.status_code == 200
    expected = predictor.predict(texts)
    for got, want in zip(r.json()["predictions"], expected, strict=True):
        assert got["label"] == want["label"] and math.isclose(got["prob_pos"], want["prob_pos"], rel_tol=1e-6)
    assert e.status_code == 200
    body = e.json()
    assert body["label"] == expected[0]["label"]
    # the words the model read, sub-word pieces joined (the tiny fixture's tokenizer may map them to [UNK])
    tokens = predictor.tokenizer.tokenize(texts[0])
    assert [w["text"] for w in body["words"]] == merge_wordpieces(tokens, np.zeros(len(tokens)))[0]
    assert all(math.isfinite(w["score"]) for w in body["words"])
    assert info["model"]["backend"] == "torch" and info["explain"] is True


@pytest.mark.parametrize(
    "host, key, allow_public, ok",
    [
        ("127.0.0.1", None, False, True),
        ("localhost", None, False, True),
        ("::1", None, False, True),
        ("0.0.0.0", None, False, False),
        ("192.168.1.5", None, False, False),
        ("my-server.example", None, False, False),
        ("0.0.0.0", "key", False, True),
        ("0.0.0.0", None, True, True),
    ],
)
def test_non_loopback_hosts_need_a_key_or_allow_public(
    host: str, key: str | None, allow_public: bool, ok: bool
) -> None:
    if ok:
        check_bind(host, key, allow_public)
    else:
        with pytest.raises(ConfigError, match="--api-key.*--allow-public"):
            check_bind(host, key, allow_public)


def test_bad_settings_and_taken_ports_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="max_texts"):
        build_settings(max_texts=0)
    with pytest.raises(ConfigError, match="unknown_limit"):
        build_settings(unknown_limit=3)
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+.*--port"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


# Hostile input -------------------------------------------------------------------------------------------------------


def test_a_1_mb_text_and_10000_tiny_texts_are_refused_with_the_limit_named() -> None:
    one_mb = "x" * 2**20
    with client_for(max_wait_ms=0) as client:  # the default limits
        huge = client.post("/v1/predict", json={"texts": [one_mb]})
        huge_explain = client.post("/v1/explain", json={"text": one_mb})
        many = client.post("/v1/predict", json={"texts": ["ok"] * 10_000})
    assert huge.status_code == 413 and "max_body_bytes=1048576" in huge.json()["detail"]
    assert huge_explain.status_code == 413
    assert many.status_code == 422
    assert many.json()["detail"] == "10000 texts in one request; the limit is max_texts=64 (split the request)"
    with client_for(max_body_bytes=4 * 2**20) as client:  # a body limit that lets it through: max_chars stops it
        long = client.post("/v1/predict", json={"texts": ["fine", one_mb]})
    assert long.status_code == 422
    assert long.json()["detail"].startswith("text 1 has 1048576 characters; the limit is max_chars=20000")


def test_validation_errors_are_one_line_problems_without_the_input() -> None:
    with client_for() as client:
        r = client.post("/v1/predict", json={"texts": [{"secret": "s3cret"}, 2], "extra": 1})
        missing = client.post("/v1/predict")
    assert r.status_code == 422 and missing.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and list(r.json()) == ["detail"]  # the schema's Problem, as every error
    assert "body.texts.0: Input should be a valid string" in detail and "body.extra" in detail
    assert "s3cret" not in detail  # never echoes what was sent
    assert missing.json()["detail"].startswith("invalid request: body: Field required")


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"texts": ["caf\xe9"]}', "not valid JSON: it is not UTF-8 text"),  # latin-1
        (b'{"texts": ["caf\xc3"]}', "not valid JSON: it is not UTF-8 text"),  # a cut multi-byte sequence
        (b'{"texts": ["\xed\xa0\x80"]}', "text 0 holds a lone surrogate (U+D800)"),  # a surrogate as UTF-8 bytes
    ],
    ids=["latin-1", "truncated-utf8", "encoded-surrogate"],
)
def test_a_body_that_is_not_utf8_is_422(body: bytes, fragment: str) -> None:
    with client_for() as client:
        r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


HOSTILE_TEXTS = {
    "control characters": "a\x00b\x07c\x1b[31m red \x7f\r\n end",
    "RTL and emoji": "\u202eمرحبا بالعالم\u202c שלום 😀👍🏽 fine",
    "zero-width and BOM": "\ufeff\u200b\u200d good \u2060",
    "HTML and script": '<script>alert("x")</script><img src=x onerror=alert(1)> a film',
    "combining marks": "Z\u0351\u0352\u0353\u0354a\u0300\u0301l\u0302g\u0303o\u0304",
}


@pytest.fixture(scope="module")
def tiny_client(tiny_model_dir: Path) -> Any:
    predictor = Predictor.load(tiny_model_dir)
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    with TestClient(app) as client:
        yield client


def test_control_rtl_emoji_and_markup_texts_are_labelled(tiny_client: TestClient) -> None:
    texts = list(HOSTILE_TEXTS.values())
    r = tiny_client.post("/v1/predict", json={"texts": texts})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert len(preds) == len(texts) and {p["label"] for p in preds} <= {"NEGATIVE", "POSITIVE"}
    assert all(0.0 <= p["prob_pos"] <= 1.0 for p in preds)
    e = tiny_client.post("/v1/explain", json={"text": HOSTILE_TEXTS["RTL and emoji"]})
    assert e.status_code == 200 and all(math.isfinite(w["score"]) for w in e.json()["words"])


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
def test_a_lone_surrogate_is_422_not_a_model_crash(tiny_client: TestClient, path: str) -> None:
    # Valid JSON ("\ud800" is a legal escape) that decodes to no character; the tokenizer raises on it.
    body = b'{"texts": ["fine", "bad \\ud800 text"]}' if path == "/v1/predict" else b'{"text": "bad \\udc00"}'
    r = tiny_client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert "lone surrogate" in r.json()["detail"]
    if path == "/v1/predict":
        assert r.json()["detail"].startswith("text 1 holds a lone surrogate (U+D800) at character 4")
    ok = tiny_client.post("/v1/predict", json={"texts": ["fine"]})
    assert ok.status_code == 200  # the server keeps serving


def test_explain_reports_the_temperature_scaled_probability_of_predict(tiny_model_dir: Path) -> None:
    predictor = Predictor.load(tiny_model_dir, precision="fp32")  # one set of weights for both endpoints
    predictor.temperature = 0.05  # as if calibrated; sharp enough to move the tiny model's near-0.5 outputs
    text = "A wonderful, moving film."
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    with TestClient(app) as client:
        predicted = client.post("/v1/predict", json={"texts": [text]}).json()["predictions"][0]
        explained = client.post("/v1/explain", json={"text": text}).json()
    raw = predictor.predict([text])[0]["prob_pos"]
    predictor.temperature = 1.0
    assert abs(raw - predictor.predict([text])[0]["prob_pos"]) > 0.01  # the temperature matters here
    assert math.isclose(explained["prob_pos"], predicted["prob_pos"], abs_tol=1e-3)
