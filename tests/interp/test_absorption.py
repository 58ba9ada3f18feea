"""First-letter absorption against planted dictionaries whose answer is known.

The model: a random Llama (hidden size 256) whose vocabulary is 200 made-up words, 25 for each of 8 first letters,
each word embedded as its letter's direction plus noise (so a probe learns the letter), with layer 0's attention
output zeroed, so that layer 0's MLP input at a word is a function of the word alone; 200 points in 256 dimensions
can be split any way by a linear read-out. Dictionary "clean": feature i fires (value 1)
on exactly the words of letter i. Dictionary "absorbing": the same, except that every other word of each letter
goes to a second feature instead: the letter's main feature misses those, and another feature has them.
"""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from transcoders.dictionary import Dictionary, DictionaryConfig
from transcoders.interp.absorption import first_letter_absorption, letter_words
from transcoders.interp.probing import split
from transcoders.models import capture, load_model

LETTERS = "abcdefgh"


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    rng = random.Random(0)
    words = sorted({c + "".join(rng.choice("aeioulnrst") for _ in range(rng.randint(3, 6))) for c in LETTERS
                    for _ in range(40)})
    by = {c: [w for w in words if w[0] == c][:25] for c in LETTERS}
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2}
    for c in LETTERS:
        for w in by[c]:
            vocab["Ġ" + w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=256, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(1)
    letter_dir = torch.randn(len(LETTERS), 256, generator=g)
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        for token, t in vocab.items():  # a word's embedding: its first letter's direction plus its own noise
            if token.startswith("Ġ"):
                emb = letter_dir[LETTERS.index(token[1])] + 0.5 * torch.randn(256, generator=g)
                model.model.embed_tokens.weight[t] = emb
    folder = tmp_path_factory.mktemp("word-model")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder))


def planted(lm, absorb: bool) -> Dictionary:
    """Feature i reads letter i's words exactly (least squares: +1 on them, -1 elsewhere, then a bias of 0 and ReLU
    leaves 1 on them); with ``absorb``, feature 8 + i takes every other word of letter i from feature i."""
    words = letter_words(lm.tokenizer, 10_000)
    ids = torch.tensor([w for w, _ in words])
    with torch.no_grad():
        x = capture(lm, torch.stack([torch.zeros_like(ids), ids], 1), ["blocks.0.mlp.in"])["blocks.0.mlp.in"][:, 1]
    x = x.double()
    cfg = DictionaryConfig(d_in=256, d_out=256, width=2 * len(LETTERS), kind="transcoder", activation="relu",
                           model=lm.name, layer=0, hook_in="blocks.0.mlp.in", hook_out="blocks.0.mlp.out")
    d = Dictionary(cfg)
    targets = []
    for i, c in enumerate(LETTERS):
        mine = [j for j, (_, first) in enumerate(words) if first == c]
        main = torch.zeros(len(words), dtype=torch.bool)
        side = torch.zeros(len(words), dtype=torch.bool)
        for n, j in enumerate(mine):
            (side if absorb and n % 2 else main)[j] = True
        targets += [(i, main), (len(LETTERS) + i, side)]
    with torch.no_grad():
        d.W_enc.zero_()
        d.b_enc.fill_(-1.0)
        for f, mask in targets:
            if mask.any():
                y = mask.double() * 2 - 1  # +1 on the words, -1 elsewhere: exact, 200 points in 256 dimensions
                w = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
                assert torch.allclose(x @ w, y, atol=1e-6)
                d.W_enc[f] = w.float()
                d.b_enc[f] = 0.0
    return d, words


def test_clean_features_absorb_nothing_and_the_absorbing_ones_half(word_model):
    clean, words = planted(word_model, absorb=False)
    absorbing, _ = planted(word_model, absorb=True)
    res = first_letter_absorption(word_model, [clean, absorbing], n_words=10_000, min_words=10, cos_threshold=-1.0)
    a, b = res
    assert a["letters"] == b["letters"] == len(LETTERS)
    for row in a["per_letter"]:
        assert row["main_feature"] == LETTERS.index(row["letter"])
        assert row["main_f1"] == 1.0 and row["main_recall"] == 1.0 and row["absorption"] == 0.0
    # the absorbing dictionary: on held-out words the probe places, the share handed to the second feature
    _, test = split([c for _, c in words], 0.3, 0)
    for row in b["per_letter"]:
        assert row["probe_recall"] == 1.0  # linearly separable: the probe finds every letter
        c = row["letter"]
        mine = [j for j, (_, first) in enumerate(words) if first == c]
        side = {j for n, j in enumerate(mine) if n % 2}
        i = LETTERS.index(c)
        assert row["main_feature"] in (i, len(LETTERS) + i)  # either half can be the main feature (the larger wins)
        other = side if row["main_feature"] == i else set(mine) - side
        held = [j for j in test if words[j][1] == c]
        assert row["absorption"] == pytest.approx(sum(j in other for j in held) / len(held))
        assert row["main_recall"] == pytest.approx(1 - row["absorption"])
    assert 0.2 < b["mean"]["absorption"] < 0.8 and a["mean"]["absorption"] == 0.0
