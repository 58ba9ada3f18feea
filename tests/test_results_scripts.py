"""The results scripts under docs/results: scaling.md's tables are what its committed records say, and a record
grows across sessions without losing or silently mixing what it holds."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("scaling_results", RESULTS / "scaling.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_md_tables_are_the_committed_records(scaling):
    """Every table between markers in scaling.md is what report() writes from docs/results/scaling/*.json: a
    number edited by hand, or a record committed without rerunning the report, fails here."""
    recs = scaling.records()
    assert "default" in recs and recs["default"]["rows"], "the default model's record is committed"
    text = (RESULTS / "scaling.md").read_text()
    tables = scaling.report(recs)
    for name, table in tables.items():
        found = re.search(rf"<!-- begin {name} -->\n(.*?)\n<!-- end {name} -->", text, re.S)
        assert found, f"scaling.md has no {name} table"
        assert found.group(1) == table, f"scaling.md's {name} table differs from its records: rerun --report-only"


def _row(run: str, ce: float, sweep: str = "topk") -> dict:
    return {"sweep": sweep, "run": run, "l0": "32.0", "fvu": "0.4", "ce_recovered_mean": str(ce)}


def _rec(rows: list[dict], interp: dict, cost: dict) -> dict:
    return {"model": "default", "rows": rows, "interp": interp, "cost": cost, "tune": {}}


def test_merged_keeps_what_was_not_remeasured_and_reports_what_differs(scaling, capsys):
    old = _rec([_row("transcoder-topk-k16", 0.6), _row("transcoder-topk-k32", 0.7), _row("transcoder-relu", 0.5, "relu")],
               {"transcoder": {"weights": {"hit@10": [0.1, 0.0, 0.2]}, "llm": {"features": 10}}},
               {"sweep-topk": {"wall_s": 100}, "features": {"wall_s": 5}})
    new = _rec([_row("transcoder-topk-k32", 0.71)],
               {"transcoder": {"weights": {}, "llm": {"features": 20}}},
               {"sweep-topk-k32": {"wall_s": 50}, "features": {"wall_s": 6}})
    m = scaling.merged(old, new)
    rows = {r["run"]: r for r in m["rows"]}
    assert set(rows) == {"transcoder-topk-k16", "transcoder-topk-k32", "transcoder-relu"}
    assert rows["transcoder-topk-k32"]["ce_recovered_mean"] == "0.71"  # the re-measured row replaces the old one
    assert rows["transcoder-topk-k16"]["ce_recovered_mean"] == "0.6"
    assert m["interp"]["transcoder"]["weights"] == {"hit@10": [0.1, 0.0, 0.2]}  # not measured again: kept
    assert m["interp"]["transcoder"]["llm"] == {"features": 20}  # measured again: replaced
    assert m["cost"] == {"sweep-topk": {"wall_s": 100}, "sweep-topk-k32": {"wall_s": 50}, "features": {"wall_s": 6}}
    err = capsys.readouterr().err
    assert "transcoder-topk-k32 re-measured differs" in err and "0.7000 -> 0.7100" in err
    assert "k16" not in err

    same = scaling.merged(m, _rec([_row("transcoder-topk-k16", 0.6)], {}, {}))
    assert sorted(map(json.dumps, same["rows"])) == sorted(map(json.dumps, m["rows"]))
    assert capsys.readouterr().err == ""  # a row measured again to the same figures is not reported


def test_train_rate_skips_the_harvest_interval(scaling, tmp_path):
    """Training tokens/s is the median over the log's intervals (each line's "sec" is the time since the last
    line), so the first interval, in which the sweep harvested, does not count; a short last interval neither."""
    intervals = [(20, 500.0), (40, 10.0), (60, 12.0), (80, 10.0), (90, 5.0)]  # (step, seconds since the last line)
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "sec": t}) + "\n" for s, t in intervals))
    per_step = scaling.TOKENS / 90
    assert scaling.train_rate(tmp_path) == pytest.approx(per_step * 20 / 10.0)  # rates (x per_step): 0.04, 2, 1.67, 2, 2
    assert scaling.train_rate(tmp_path / "missing") is None
