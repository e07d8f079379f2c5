"""docs/reference.md is generated from the models and cannot drift from them."""

from __future__ import annotations

from pydantic import BaseModel

from syncd import reference
from syncd.mapping.transforms import TRANSFORMS
from syncd.rules.config import RulesConfig


def test_committed_reference_is_the_generated_one() -> None:
    assert reference.DOC.exists(), "docs/reference.md is missing: run `make reference`"
    assert reference.DOC.read_text(encoding="utf-8") == reference.render(), (
        "docs/reference.md is out of date: run `make reference` (python -m syncd.reference)"
    )
    assert reference.main(["--check"]) == 0


def test_every_config_mapping_and_rules_key_is_described() -> None:
    models = [*reference.own_models(), RulesConfig, *reference.nested_models(RulesConfig)]
    assert reference.undocumented(models) == []


def test_every_key_and_transform_appears() -> None:
    text = reference.render()
    for model in [*reference.own_models(), RulesConfig, *reference.nested_models(RulesConfig)]:
        for key in reference.model_keys(model):
            assert f"| `{key.name}` |" in text, f"{model.__name__}.{key.name}"
    for name in TRANSFORMS:
        assert f"| `{name}` |" in text
    assert "| `retention_days` | number | `90.0` |" in text


def test_a_new_key_changes_the_reference() -> None:
    class Probe(BaseModel):
        """A model someone extends."""

        known: int = 1  # documented on its line
        # documented above it
        above: str = "x"
        bare: bool = False

    keys = {k.name: k for k in reference.model_keys(Probe)}
    assert keys["known"].doc == "documented on its line" and keys["known"].default == "`1`"
    assert keys["above"].doc == "documented above it"
    assert keys["bare"].doc == "" and reference.undocumented([Probe]) == ["Probe.bare"]
