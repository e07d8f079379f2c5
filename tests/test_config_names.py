"""syncd.names: config values given by the names a manager sees, matched against the live CRM's
names (LiveSchema.names); ids pass as they are; an unknown name says what exists."""

from __future__ import annotations

from types import SimpleNamespace

from syncd.connector import LiveSchema
from syncd.names import Slot, resolve, wanted

LIVE = LiveSchema(names={
    "pipeline": {"Общая": "0", "PRO.Лиды": "3"},
    "stage:0": {"Новая": "NEW", "Счёт выставлен": "PREPAYMENT_INVOICE"},
    "stage:3": {"Не обработан": "C3:NEW", "В работе": "C3:WORK"},
    "source": {"Сайт 4fresh опт": "1|WEB", "Звонок": "CALL"},
    "user": {"anna@4fresh.example": "7", "Анна Лебедева": "7", "Лебедева Анна": "7"},
})


def _slots(obj: SimpleNamespace, **kinds: str) -> list[Slot]:
    out: list[Slot] = []
    pipe = None
    for attr, kind in kinds.items():
        s = Slot(kind, getattr(obj, attr), f"systems.forms.form.f.{attr}",
                 (lambda a: lambda v: setattr(obj, a, v))(attr), pipeline=pipe if kind == "stage" else None)
        if kind == "pipeline":
            pipe = s
        out.append(s)
    return out


def test_names_become_ids_in_place_case_and_spacing_aside_and_ids_stay() -> None:
    obj = SimpleNamespace(pipeline="pro.лиды", stage="  Не  обработан ", responsible="Лебедева Анна",
                          source="«Сайт 4fresh опт»")
    slots = _slots(obj, pipeline="pipeline", stage="stage", responsible="user", source="source")
    assert wanted(slots) and resolve(slots, LIVE) == []
    assert (obj.pipeline, obj.stage, obj.responsible, obj.source) == ("3", "C3:NEW", "7", "1|WEB")
    ids = SimpleNamespace(pipeline="3", stage="C3:WORK", responsible="7", source="CALL")
    slots = _slots(ids, pipeline="pipeline", stage="stage", responsible="user", source="source")
    assert not wanted(slots) and resolve(slots, LiveSchema()) == []
    assert (ids.pipeline, ids.stage) == ("3", "C3:WORK")


def test_a_stage_is_looked_up_in_its_pipeline_or_given_with_it() -> None:
    obj = SimpleNamespace(stage="PRO.Лиды / В работе")
    assert resolve(_slots(obj, stage="stage"), LIVE) == [] and obj.stage == "C3:WORK"
    obj = SimpleNamespace(stage="Новая")                     # no pipeline given: the default one's
    assert resolve(_slots(obj, stage="stage"), LIVE) == [] and obj.stage == "NEW"
    obj = SimpleNamespace(pipeline="Общая", stage="В работе")  # a stage of another pipeline
    (problem,) = resolve(_slots(obj, pipeline="pipeline", stage="stage"), LIVE)
    assert problem.startswith("systems.forms.form.f.stage: no stage in 'Общая' named 'В работе'; there are: ")
    assert "новая" in problem and "счёт выставлен" in problem and obj.stage == "В работе"


def test_an_unknown_name_is_one_line_with_what_exists() -> None:
    obj = SimpleNamespace(responsible="boris@4fresh.example", source="Сайт")
    problems = resolve(_slots(obj, responsible="user", source="source"), LIVE)
    assert problems == [
        "systems.forms.form.f.responsible: no user (by e-mail or name) named 'boris@4fresh.example'; there are: "
        "anna@4fresh.example, анна лебедева, лебедева анна",
        "systems.forms.form.f.source: no source named 'Сайт'; there are: звонок, сайт 4fresh опт"]
    assert obj.responsible == "boris@4fresh.example"


def test_crm_map_defaults_and_rules_managers_by_name(tmp_path) -> None:
    """The CRM maps' `defaults` (CATEGORY_ID, STAGE_ID, SOURCE_ID) and the rules' managers and
    [rules.defaults] take names too; each slot says its file and key."""
    from syncd.config import load_settings
    from syncd.mapping import Mapper, load_mappings
    from syncd.names import slots

    (tmp_path / "m.toml").write_text('''
[[maps]]
system = "crm"
kind = "deal"
entity = "order"
create = true
[maps.fields]
"order.title" = "TITLE"
[maps.defaults]
CATEGORY_ID = "PRO.Лиды"
STAGE_ID = "В работе"
SOURCE_ID = "Звонок"

[rules.assign.order]
system = "crm"
chain = [{ name = "the team", strategy = "random", group = ["Анна Лебедева", "7"] }]

[rules.defaults.order]
"order.responsible" = "anna@4fresh.example"
''', encoding="utf-8")
    (tmp_path / "config.toml").write_text(f'''
[daemon]
database_url = "sqlite:///{tmp_path}/s.db"
state_dir = "{tmp_path}"
mappings = ["{tmp_path}/m.toml"]
[systems.crm]
type = "bitrix24"
webhook_url = "https://p.bitrix24.ru/rest/1/x/"
''', encoding="utf-8")
    settings = load_settings(tmp_path / "config.toml")
    mapper = Mapper(load_mappings(settings.daemon.mappings, base=settings.base_dir))
    from syncd.rules import parse_rules
    rules = parse_rules(dict(mapper.ms.rules))
    found = slots(settings, mapper, rules)
    assert {s.where.split(": ", 1)[1] for s in found} == {
        "[[maps]] system = 'crm' kind = 'deal' defaults.CATEGORY_ID",
        "[[maps]] system = 'crm' kind = 'deal' defaults.STAGE_ID",
        "[[maps]] system = 'crm' kind = 'deal' defaults.SOURCE_ID",
        "rules.assign.order.chain[0].group[0]", "rules.assign.order.chain[0].group[1]",
        'rules.defaults.order."order.responsible"'}
    assert all(s.where.startswith(str(tmp_path / "m.toml")) for s in found)
    assert resolve(found, LIVE) == []
    (em,) = mapper.ms.maps
    assert em.defaults == {"CATEGORY_ID": "3", "STAGE_ID": "C3:WORK", "SOURCE_ID": "CALL"}
    assert rules.assign["order"].chain[0].group == ["7", "7"]
    assert rules.defaults["order"].fields["order.responsible"] == "7"
