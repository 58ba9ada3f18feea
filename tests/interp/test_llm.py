"""The explainer/scorer clients: the local model's shared-prefix scoring against plain forwards, and the endpoint
client against a local server speaking the OpenAI chat format."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from transcoders.errors import LLMError
from transcoders.interp.llm import EndpointLLM, yes_no

ITEMS = ["the cat sat on the mat", "a dog", "and then the people of the city went home", "x"]


def test_shared_prefix_scores_equal_full_forwards(tiny_llm):
    """Keys and values of the prompt's shared part computed once and copied per batch give the probabilities that
    whole prompts give, item by item (and in a batch padded on the right)."""
    args = ("judge", "Feature description: cats\n\nText: ", ITEMS, "\nAnswer:")
    shared = tiny_llm.yes_probabilities(*args)
    full = tiny_llm.yes_probabilities(*args, share_prefix=False)
    assert len(shared) == len(ITEMS) and all(0 < p < 1 for p in shared)
    assert shared == pytest.approx(full, abs=1e-5)
    # each alone, by hand: the next-token log-probabilities of the whole prompt
    prefix, after = tiny_llm.split_prompt(*args[:2], args[3])
    for item, p in zip(ITEMS, shared):
        ids = torch.tensor([prefix + tiny_llm._ids(item + after)])
        with torch.no_grad():
            logp = tiny_llm.lm.model(ids).logits[0, -1].log_softmax(-1)
        yes = logp[sorted(tiny_llm.yes_ids)].logsumexp(-1)
        no = logp[sorted(tiny_llm.no_ids)].logsumexp(-1)
        assert p == pytest.approx(torch.sigmoid(yes - no).item(), abs=1e-5)


def test_generate_is_greedy_and_deterministic(tiny_llm):
    a = tiny_llm.generate("explain", "Excerpts:\n1. the <<cat>>", max_tokens=6)
    assert isinstance(a, str) and a == tiny_llm.generate("explain", "Excerpts:\n1. the <<cat>>", max_tokens=6)


def test_yes_no_parsing():
    assert yes_no(" Yes.") == 1.0 and yes_no("**no**") == 0.0 and yes_no("maybe") == 0.5


class _Chat(BaseHTTPRequestHandler):
    """Answers like an OpenAI-compatible server: explanations, and Yes when the text mentions cats."""

    seen: list = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        if self.server.status != 200:  # type: ignore[attr-defined]
            self.send_response(self.server.status)  # type: ignore[attr-defined]
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        text = "cats and kittens" if "Excerpts" in user else ("Yes" if "cat" in user.split("Text:")[-1] else "No")
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture()
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Chat)
    srv.status = 200  # type: ignore[attr-defined]
    _Chat.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def test_endpoint_speaks_the_openai_chat_format(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    llm = EndpointLLM(f"http://127.0.0.1:{server.server_port}/v1", "some-model", key_env="MY_KEY")
    assert llm.generate("sys", "Excerpts:\n1. <<cat>>") == "cats and kittens"
    assert llm.yes_probabilities("sys", "Text: ", ["a cat", "a dog"]) == [1.0, 0.0]
    path, auth, body = _Chat.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "some-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "sk-test" not in llm.name


def test_endpoint_errors_are_one_line(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.status = 401
    with pytest.raises(LLMError, match=r"refused the request \(HTTP 401\) with no key \(set \$OPENAI_API_KEY\)"):
        EndpointLLM(f"http://127.0.0.1:{server.server_port}/v1", "m").generate("s", "u")
    dead = EndpointLLM("http://127.0.0.1:9/v1", "m", retries=0)
    with pytest.raises(LLMError, match=r"cannot reach the LLM endpoint http://127.0.0.1:9/v1/chat/completions .*--llm-url"):
        dead.generate("s", "u")
    with pytest.raises(LLMError, match="not an http"):
        EndpointLLM("localhost:8000", "m")
