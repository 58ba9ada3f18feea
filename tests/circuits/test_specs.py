"""One grammar for features, wherever one is written: targets, --feature, edits, and what is printed."""

import pytest

from transcoders.circuits.interventions import Edit, parse_edit
from transcoders.circuits.specs import FeatureSpec, feature_label, parse_edit_spec, parse_feature
from transcoders.errors import CircuitError


@pytest.mark.parametrize("text, spec", [
    ("8:123", FeatureSpec(8, 123, None)),
    ("8:123@-1", FeatureSpec(8, 123, -1)),
    ("tc8[123]", FeatureSpec(8, 123, None)),
    ("tc8[123]@5", FeatureSpec(8, 123, 5)),
    ("8[123]@0", FeatureSpec(8, 123, 0)),
    (" tc8:123 ", FeatureSpec(8, 123, None)),
])  # fmt: skip
def test_both_spellings_read_the_same(text, spec):
    assert parse_feature(text) == spec


@pytest.mark.parametrize("spec", [FeatureSpec(8, 123, None), FeatureSpec(0, 0, -3), FeatureSpec(29, 4607, 12)])
def test_what_is_printed_reads_back(spec):
    assert parse_feature(feature_label(spec.layer, spec.feature, spec.pos)) == spec
    assert str(spec) == feature_label(spec.layer, spec.feature, spec.pos)


@pytest.mark.parametrize("text, kw, says", [
    ("8:*", {}, "not a whole layer"),
    ("8:5@2", {"position": False}, "takes no position"),
    ("8", {}, "cannot read"),
    ("tc8[5", {}, "cannot read"),
    ("8:5]", {}, "cannot read"),
    ("a:b", {}, "cannot read"),
])  # fmt: skip
def test_bad_specs_say_what_to_write(text, kw, says):
    with pytest.raises(CircuitError, match=says):
        parse_feature(text, **kw)


def test_edits_take_both_spellings_and_their_operands():
    # the same feature, whichever way it is written (`--zero tc8[123]` used to be refused)
    assert parse_edit("tc8[123]", "zero") == parse_edit("8:123", "zero") == Edit(8, 123, None, "zero", 0.0)
    assert parse_edit("tc3[17]@-1=2.5", "clamp") == Edit(3, 17, -1, "clamp", 2.5)
    assert parse_edit("3:*@4*0.5", "scale") == Edit(3, None, 4, "scale", 0.5)
    assert parse_edit("tc3[*]*-1e-2", "scale") == Edit(3, None, None, "scale", -0.01)
    assert parse_edit_spec("3:*", "patch") == (FeatureSpec(3, None, None), None)
    for text, op, says in (("3:17", "clamp", "=VALUE"), ("3:17*2", "clamp", "=VALUE"), ("3:17=1", "zero", "no value"),
                           ("3:*", "scale", "*FACTOR"), ("x", "zero", "cannot read")):
        with pytest.raises(CircuitError, match=says.replace("*", r"\*")):
            parse_edit(text, op)
