"""The explainer and scorer: a local Hugging Face causal LM, or an OpenAI-compatible chat endpoint.

Both answer two questions:

- ``generate(system, user, max_tokens, shots)``: a reply (greedy; the first line is what callers keep), after the
  worked examples ``shots`` given as earlier (user, assistant) turns;
- ``yes_probabilities(system, user_prefix, items, user_suffix)``: for each item, the probability that the answer to
  ``user_prefix + item + user_suffix`` is "Yes" rather than "No".

A local model reads every item's probability from its next-token logits (the "Yes" spellings against the "No"
ones), and runs the shared part of the prompt once: the prefix's keys and values are computed once and every item
continues from them, in batches. An endpoint is asked for a one-word reply per item (temperature 0), so its
probabilities are 0 or 1 (0.5 when the reply is neither). The endpoint's key is read from an environment variable
at each request and is never written anywhere.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..errors import LLMError
from ..models import LoadedModel, load_model

__all__ = ["LLM", "EndpointLLM", "LocalLLM", "open_llm"]

YES = ("Yes", " Yes", "yes", " yes", "YES")
NO = ("No", " No", "no", " no", "NO")


class LLM(Protocol):
    name: str

    def generate(self, system: str, user: str, max_tokens: int = 48, shots: Sequence[tuple[str, str]] = ()) -> str:
        ...

    def yes_probabilities(self, system: str, user_prefix: str, items: Sequence[str], user_suffix: str = "") -> list[float]:
        ...


# ---------------------------------------------------------------------------------------------------- local model
class LocalLLM:
    """A causal LM on this machine. ``batch``: items per forward when scoring."""

    def __init__(self, lm: LoadedModel, name: str | None = None, batch: int = 16):
        if lm.tokenizer is None:
            raise LLMError(f"the LLM {lm.name!r} has no tokenizer: pass a model folder or id that has one")
        self.lm, self.tok, self.batch = lm, lm.tokenizer, batch
        self.name = name or f"local:{lm.name}"
        # transformers 5.2x names the forward's cache argument `cache`; earlier releases `past_key_values`
        params = inspect.signature(lm.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.yes_ids = self._first_tokens(YES)
        self.no_ids = self._first_tokens(NO) - self.yes_ids
        if not self.yes_ids or not self.no_ids:
            raise LLMError(f"the LLM {lm.name!r}'s tokenizer cannot spell Yes and No apart: use another model")

    def _first_tokens(self, words: Sequence[str]) -> set[int]:
        out = set()
        for w in words:
            ids = self.tok.encode(w, add_special_tokens=False)
            if ids:
                out.add(int(ids[0]))
        return out

    def render(self, system: str, user: str, shots: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt text up to where the assistant's reply starts (the model's chat template when it has one)."""
        if getattr(self.tok, "chat_template", None):
            return str(self.tok.apply_chat_template(messages(system, user, shots), tokenize=False,
                                                    add_generation_prompt=True))
        turns = "".join(f"User: {u}\nAssistant: {a}\n" for u, a in shots)
        return f"{system}\n\n{turns}User: {user}\nAssistant:"

    def _ids(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    @torch.inference_mode()
    def generate(self, system: str, user: str, max_tokens: int = 48, shots: Sequence[tuple[str, str]] = ()) -> str:
        ids = torch.tensor([self._ids(self.render(system, user, shots))], device=self.lm.device)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        out = self.lm.model.generate(  # type: ignore[operator]
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad,
            stopping_criteria=StoppingCriteriaList([_StopAtNewline(self.tok, ids.shape[1])]))
        return str(self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))

    def split_prompt(self, system: str, user_prefix: str, user_suffix: str) -> tuple[list[int], str]:
        """``(prefix ids, text after the item)``: the rendered prompt split where the item goes."""
        marker = "\u2063ITEM\u2063"
        text = self.render(system, user_prefix + marker + user_suffix)
        before, after = text.split(marker)
        return self._ids(before), after

    @torch.inference_mode()
    def yes_probabilities(self, system: str, user_prefix: str, items: Sequence[str], user_suffix: str = "",
                          *, share_prefix: bool = True) -> list[float]:
        if not items:
            return []
        prefix, after = self.split_prompt(system, user_prefix, user_suffix)
        model, dev = self.lm.model, self.lm.device
        cache = _cache_of(model(torch.tensor([prefix], device=dev), use_cache=True)) if share_prefix else None
        yes, no = torch.tensor(sorted(self.yes_ids)), torch.tensor(sorted(self.no_ids))
        out: list[float] = []
        for i in range(0, len(items), self.batch):
            chunk = [self._ids(item + after) for item in items[i:i + self.batch]]
            if not share_prefix:
                chunk = [prefix + c for c in chunk]
            lengths = torch.tensor([len(c) for c in chunk])
            ids = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
            for r, c in enumerate(chunk):  # right padding: a causal model never lets real tokens see it
                ids[r, :len(c)] = torch.tensor(c)
            kwargs: dict = {}
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(chunk))
                kwargs = {self._cache_arg: past, "use_cache": True}
            logits = model(ids.to(dev), **kwargs).logits.float()
            last = logits[torch.arange(len(chunk)), lengths - 1].log_softmax(-1).cpu()
            p_yes, p_no = last[:, yes].logsumexp(-1), last[:, no].logsumexp(-1)
            out += torch.sigmoid(p_yes - p_no).tolist()
        return out


def _cache_of(output):
    return getattr(output, "cache", None) or output.past_key_values


class _StopAtNewline(StoppingCriteria):
    """Ends generation once the reply holds a line break (explanations are one line)."""

    def __init__(self, tok, start: int):
        self.tok, self.start = tok, start

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        text = self.tok.decode(input_ids[0, self.start:], skip_special_tokens=True)
        done = "\n" in text.strip(" ") and bool(text.strip())
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


# ---------------------------------------------------------------------------------------------------- endpoint
class EndpointLLM:
    """An OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp's server, Ollama, ...)."""

    def __init__(self, url: str, model: str, key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 retries: int = 3):
        if not url.startswith(("http://", "https://")):
            raise LLMError(f"--llm-url {url!r} is not an http(s) URL: give the API base, e.g. http://localhost:8000/v1")
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.key_env, self.timeout, self.retries = model, key_env, timeout, retries
        self.name = f"{model}@{url.rstrip('/')}"

    def _chat(self, system: str, user: str, max_tokens: int, shots: Sequence[tuple[str, str]] = ()) -> str:
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": max_tokens,
                           "messages": messages(system, user, shots)})
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=body.encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    reply = json.loads(resp.read())
                return str(reply["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):
                    where = f"${self.key_env}" if key else f"no key (set ${self.key_env})"
                    raise LLMError(f"the LLM endpoint {self.url} refused the request (HTTP {err.code}) with {where}: "
                                   "check the key") from None
                if err.code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    time.sleep(2.0 ** attempt)
                    continue
                raise LLMError(f"the LLM endpoint {self.url} answered HTTP {err.code} ({err.reason}): check --llm-url "
                               f"and --llm-model {self.model!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                refused = isinstance(getattr(err, "reason", err), ConnectionRefusedError)
                if attempt < self.retries and not refused:  # a refused connection will not change in seconds
                    time.sleep(2.0 ** attempt)
                    continue
                reason = getattr(err, "reason", err)
                raise LLMError(f"cannot reach the LLM endpoint {self.url} ({reason}): check --llm-url and that the "
                               "server is running") from None
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise LLMError(f"the LLM endpoint {self.url} did not answer in the OpenAI chat format ({err!r}): "
                               "check --llm-url") from None
        raise AssertionError("unreachable")

    def generate(self, system: str, user: str, max_tokens: int = 48, shots: Sequence[tuple[str, str]] = ()) -> str:
        return self._chat(system, user, max_tokens, shots)

    def yes_probabilities(self, system: str, user_prefix: str, items: Sequence[str], user_suffix: str = "") -> list[float]:
        return [yes_no(self._chat(system, user_prefix + item + user_suffix, 3)) for item in items]


def messages(system: str, user: str, shots: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """Chat messages: the system prompt, the worked examples as earlier turns, the question."""
    out = [{"role": "system", "content": system}]
    for u, a in shots:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return out + [{"role": "user", "content": user}]


def yes_no(reply: str) -> float:
    """1.0 for a reply that starts with yes, 0.0 for no, 0.5 for anything else."""
    word = reply.strip().lstrip("*\"'`").lower()
    if word.startswith("yes"):
        return 1.0
    if word.startswith("no"):
        return 0.0
    return 0.5


def open_llm(llm: str, *, url: str | None = None, key_env: str = "OPENAI_API_KEY", device: str = "cpu",
             dtype: torch.dtype = torch.float32, batch: int = 16) -> LLM:
    """``--llm`` names a model (a named one, a local folder or a Hugging Face id); with ``url`` it is the model name
    the endpoint serves."""
    if url:
        return EndpointLLM(url, llm, key_env=key_env)
    return LocalLLM(load_model(llm, dtype=dtype, device=device), name=f"local:{llm}", batch=batch)
