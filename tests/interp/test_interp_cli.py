"""`transcoders interp` and `transcoders concepts` from the command line: output, interp.json, one-line errors
that lose nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from transcoders.cli import main
from transcoders.dictionary.runs import interp_path
from transcoders.features import store as S
from transcoders.interp import InterpConfig, interp


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def run_copy(store_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(store_run, dst)
    return dst


def test_missing_store(capsys, run_copy):
    S.store_path(run_copy).unlink()
    code, _, err = run_main(capsys, "interp", run_copy, "--scores", "llm", "--quiet")
    one_line_error(code, err, "has no feature store", f"transcoders features {run_copy}")


def test_unreachable_endpoint_keeps_what_was_scored(capsys, run_copy, tiny_llm):
    interp([run_copy], InterpConfig(scores="llm", features=2, test=2, top=3, quantiles=1), llm=tiny_llm,
           progress=False)
    con = S.connect(S.store_path(run_copy), readonly=True)
    before = con.execute("SELECT * FROM interp ORDER BY feature").fetchall()
    con.close()
    code, _, err = run_main(capsys, "interp", run_copy, "--scores", "llm", "--llm", "m", "--llm-url",
                            "http://127.0.0.1:9/v1", "--quiet")
    one_line_error(code, err, "cannot reach the LLM endpoint", "--llm-url")
    con = S.connect(S.store_path(run_copy), readonly=True)
    assert con.execute("SELECT * FROM interp ORDER BY feature").fetchall() == before and len(before) == 2
    con.close()


def test_weights_then_a_bad_labelled_file(capsys, run_copy, tmp_path):
    code, out, _ = run_main(capsys, "interp", run_copy, "--scores", "weights", "--features", "10", "--quiet")
    assert code == 0 and "weights  (10 features): hit@10" in out
    saved = json.loads(interp_path(run_copy).read_text())
    assert saved["weights"]["features"] == 10
    bad = tmp_path / "one.jsonl"
    bad.write_text(json.dumps({"text": "a b c", "label": 1}) + "\n" + json.dumps({"text": "d e", "label": 1}) + "\n")
    code, _, err = run_main(capsys, "interp", run_copy, "--scores", "probing", "--labelled", bad, "--quiet")
    one_line_error(code, err, "one class ('1')")
    assert json.loads(interp_path(run_copy).read_text()) == saved  # nothing lost
    code, _, err = run_main(capsys, "interp", run_copy, "--scores", "llm,vibes")
    one_line_error(code, err, "unknown score 'vibes'")


def test_probing_on_a_labelled_file(capsys, run_copy, tmp_path, tiny_texts):
    f = tmp_path / "lab.jsonl"
    f.write_text("".join(json.dumps({"text": t, "label": "long" if len(t) > 400 else "short"}) + "\n"
                         for t in tiny_texts[:60]))
    code, out, err = run_main(capsys, "interp", run_copy, "--scores", "probing", "--labelled", f, "--quiet")
    assert code == 0, err
    res = json.loads(interp_path(run_copy).read_text())["probing"]["lab"]
    assert res["texts"] == 60 and set(res["mean"]) == {"dense", "k=1", "k=2", "k=5", "k=10", "k=20"}
    assert "probing lab (2 labels, 60 texts): dense" in out


def test_concepts_command(capsys, run_copy, tmp_path, tiny_texts):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.jsonl"
    pos.write_text("\n".join(tiny_texts[:6]))
    neg.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_texts[6:12]))
    out_json = tmp_path / "found.json"
    code, out, err = run_main(capsys, "concepts", run_copy, "--positive", pos, "--negative", neg, "--top", "3",
                              "--out", out_json, "--quiet")
    assert code == 0, err
    assert "6 positive, 6 negative texts" in out and "AUROC" in out
    (rows,) = json.loads(out_json.read_text()).values()
    assert len(rows) == 3 and rows[0]["auroc"] >= rows[-1]["auroc"] and "<<" in rows[0]["example"]
    code, _, err = run_main(capsys, "concepts", run_copy, "--positive", tmp_path / "nope.txt", "--negative", neg)
    one_line_error(code, err, "--positive file", "does not exist")


def test_absorption_on_a_vocabulary_too_small_is_skipped_not_fatal(capsys, run_copy):
    code, out, err = run_main(capsys, "interp", run_copy, "--scores", "absorption,weights", "--features", "5",
                              "--quiet")
    assert code == 0, err
    assert "absorption: skipped (the tokenizer has only" in out and "weights  (5 features)" in out
    saved = json.loads(interp_path(run_copy).read_text())
    assert "skipped" in saved["absorption"] and saved["weights"]["features"] == 5
