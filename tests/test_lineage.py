"""Tests for minimopd.lineage: the recipe history as data and its two figures."""
import dataclasses
import html
from collections import Counter
from datetime import datetime

import plotly.graph_objects as go
import pytest

from minimopd.lineage import (FAMILIES, MINIATURES, RECIPES, STAGE_GLOSSARY, STAGE_KIND, STAGE_KINDS, Recipe,
                              get_recipe, recipe_card_html, recipes_table, stages_matrix_figure, timeline_figure,
                              validate)

REQUIRED = ["InstructGPT", "Llama 2", "Llama 3", "Tülu 3", "OLMo 3", "DeepSeek R1-Zero", "DeepSeek R1",
            "DeepSeek V3.2", "MiMo-V2-Flash", "DeepSeek V4", "Nemotron 3 Ultra", "MAI-Thinking-1", "Kimi K2.5",
            "GLM-5"]
ALLOWED_MINIATURES = {"instructgpt", "llama2", "llama3", "olmo3_delta", "tulu3", "r1_zero", "r1", "opd", "deepseek_v32", "mimo_v2_flash",
                      "kimi_k25", "glm5", "deepseek_v4", "nemotron3_ultra", "mai_thinking1"}


def _family_traces(fig):
    """Traces that carry a family legend entry, keyed by legendgroup."""
    return Counter(t.legendgroup for t in fig.data if t.legendgroup in FAMILIES and t.showlegend is not False)


def test_every_required_model_is_present_once():
    names = [r.name for r in RECIPES]
    assert sorted(set(names)) == sorted(names), "duplicate recipe names"
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"missing recipes: {missing}"


def test_stages_non_empty_and_from_glossary():
    for r in RECIPES:
        assert isinstance(r.stages, tuple) and len(r.stages) > 0, r.name
        unknown = [s for s in r.stages if s not in STAGE_GLOSSARY]
        assert not unknown, f"{r.name}: stages not in glossary {unknown}"


def test_glossary_is_complete_and_every_entry_is_used():
    used = {s for r in RECIPES for s in r.stages}
    assert used == set(STAGE_GLOSSARY), f"unused glossary labels: {set(STAGE_GLOSSARY) - used}"
    for label, text in STAGE_GLOSSARY.items():
        assert text.strip() and "\n" not in text, label
        assert STAGE_KIND[label] in STAGE_KINDS, label


def test_dates_are_valid_year_months_in_chronological_order():
    parsed = []
    for r in RECIPES:
        assert len(r.date) == 7, f"{r.name}: {r.date!r} is not YYYY-MM"
        d = datetime.strptime(r.date, "%Y-%m")
        assert 2022 <= d.year <= 2026, r.name
        parsed.append(d)
    assert parsed == sorted(parsed), "RECIPES should be listed in date order"


def test_families_notes_orgs_and_miniatures():
    assert set(MINIATURES) == ALLOWED_MINIATURES
    for r in RECIPES:
        assert r.family in FAMILIES, r.name
        assert r.org.strip() and len(r.note) > 30, r.name
        assert r.minimopd_recipe is None or r.minimopd_recipe in ALLOWED_MINIATURES, r.name
    # every miniature of the course has at least one historical recipe it stands for
    assert {r.minimopd_recipe for r in RECIPES} - {None} == ALLOWED_MINIATURES


def test_key_facts_from_the_sources():
    assert get_recipe("InstructGPT").stages == ("SFT", "reward model", "PPO")
    assert get_recipe("Tülu 3").stages == ("SFT", "DPO", "RLVR")
    assert "SFT" not in get_recipe("DeepSeek R1-Zero").stages          # pure RL on the base model
    assert "PPO" not in get_recipe("Llama 3").stages                   # no online RL in Llama 3
    v4 = get_recipe("DeepSeek V4").stages
    assert v4[-1] == "MOPD" and not any(STAGE_KIND[s] == "RL" for s in v4)   # no student RL
    ultra = get_recipe("Nemotron 3 Ultra").stages
    assert ultra.count("MOPD") == 2 and ultra.index("MOPD warm-up") < ultra.index("MOPD")
    assert get_recipe("MiMo-V2-Flash").date == "2026-01"
    assert "MOPD" not in get_recipe("MAI-Thinking-1").stages and "MOPD" not in get_recipe("Kimi K2.5").stages
    with pytest.raises(KeyError):
        get_recipe("GPT-7")


def test_recipe_is_frozen_and_validate_rejects_bad_records():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES[0].name = "x"
    good = RECIPES[0]
    for bad in (dataclasses.replace(good, stages=()), dataclasses.replace(good, stages=("SFT", "magic")),
                dataclasses.replace(good, date="2022-13"), dataclasses.replace(good, date="March 2022"),
                dataclasses.replace(good, family="vibes"), dataclasses.replace(good, minimopd_recipe="gpt4")):
        with pytest.raises(ValueError):
            validate((bad,))
        with pytest.raises(ValueError):
            timeline_figure((bad,))
    validate(RECIPES)


def test_timeline_figure_has_one_trace_group_per_family_and_hover_lists_stages():
    fig = timeline_figure()
    assert isinstance(fig, go.Figure)
    fams = _family_traces(fig)
    assert set(fams) == {r.family for r in RECIPES} and all(n == 1 for n in fams.values()), fams
    # each recipe appears exactly once as a dated marker, and its hover text lists its stages in order
    hovers = [h for t in fig.data if t.legendgroup in FAMILIES for h in t.hovertext]
    assert len(hovers) == len(RECIPES)
    for r in RECIPES:
        (h,) = [h for h in hovers if f"<b>{r.name}</b>" in h]
        assert " → ".join(r.stages) in h
    # one coloured box (shape) per stage of every recipe, plus connectors
    rects = [s for s in fig.layout.shapes if s.type == "rect" and s.xref == "x2"]
    assert len(rects) == sum(len(r.stages) for r in RECIPES)
    fig.to_json()


def test_figures_on_a_subset_only_show_its_families():
    subset = tuple(r for r in RECIPES if r.family in ("RLHF", "preference"))
    for make in (timeline_figure, stages_matrix_figure):
        assert set(_family_traces(make(subset))) == {"RLHF", "preference"}


def test_stages_matrix_counts_match_the_recipes():
    fig = stages_matrix_figure()
    (hm,) = [t for t in fig.data if isinstance(t, go.Heatmap)]
    labels = [fig.layout.xaxis.ticktext[k + 1] for k in range(len(hm.z[0]))]
    assert set(labels) == {s for r in RECIPES for s in r.stages}
    ordered = sorted(RECIPES, key=lambda r: r.date)
    assert len(hm.z) == len(ordered)
    for r, row in zip(ordered, hm.z):
        assert list(row) == [r.stages.count(s) for s in labels], r.name
    fams = _family_traces(fig)
    assert set(fams) == {r.family for r in RECIPES} and all(n == 1 for n in fams.values())


def test_recipes_table_rows():
    rows = recipes_table()
    assert len(rows) == len(RECIPES)
    assert [row["date"] for row in rows] == sorted(row["date"] for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert by_name["DeepSeek R1"]["stages"].split(" → ")[0] == "cold-start SFT"
    assert by_name["DeepSeek R1"]["n_stages"] == 6
    for r in RECIPES:
        assert by_name[r.name]["miniature"] == (r.minimopd_recipe or "")
        assert by_name[r.name]["family"] == r.family


def test_recipe_card_html_mentions_every_stage():
    r = get_recipe("Nemotron 3 Ultra")
    card = recipe_card_html(r)
    assert "Nemotron 3 Ultra" in card and "nemotron3_ultra" in card
    for s in set(r.stages):
        assert f">{html.escape(s)}</span>" in card, s          # one coloured box per stage label
        assert html.escape(STAGE_GLOSSARY[s]) in card, s       # and its glossary line


def test_recipe_type_fields():
    fields = [f.name for f in dataclasses.fields(Recipe)]
    assert fields == ["name", "org", "date", "stages", "family", "note", "minimopd_recipe"]
