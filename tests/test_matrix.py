"""Matrix strategies, ids and narrowing (pure)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_promptflow.config import DatasetSpec, VariantsSpec
from pytest_promptflow.errors import SpecError
from pytest_promptflow.matrix import expand, init_labels, narrow, parse_selection

NODE_VARIANTS = {
    "classify": ("variant_0", ("variant_0", "variant_1")),
    "summarize": ("v0", ("v0", "v1", "v2")),
}
DATA = [DatasetSpec("easy", Path("easy.jsonl")), DatasetSpec("hard", Path("hard.jsonl"))]


def ids(cells):
    return [c.id for c in cells]


def test_matrix_is_the_cartesian_product_of_variants_overrides_and_datasets():
    spec = VariantsSpec(nodes={"classify": "*"}, overrides={"nodes.classify.inputs.temperature": (0.0, 0.7)})
    cells = expand("sentiment", spec, NODE_VARIANTS, DATA)
    assert ids(cells) == [
        "sentiment-classify=variant_0-temperature=0.0-easy",
        "sentiment-classify=variant_0-temperature=0.7-easy",
        "sentiment-classify=variant_1-temperature=0.0-easy",
        "sentiment-classify=variant_1-temperature=0.7-easy",
        "sentiment-classify=variant_0-temperature=0.0-hard",
        "sentiment-classify=variant_0-temperature=0.7-hard",
        "sentiment-classify=variant_1-temperature=0.0-hard",
        "sentiment-classify=variant_1-temperature=0.7-hard",
    ]
    assert len({c.key for c in cells}) == 8


def test_one_at_a_time_swaps_one_node_from_the_defaults():
    spec = VariantsSpec(strategy="one_at_a_time", nodes={"classify": "*", "summarize": "*"})
    cells = expand("f", spec, NODE_VARIANTS, DATA[:1])
    assert ids(cells) == [
        "f-classify=variant_0-summarize=v0-easy",
        "f-classify=variant_1-summarize=v0-easy",
        "f-classify=variant_0-summarize=v1-easy",
        "f-classify=variant_0-summarize=v2-easy",
    ]


def test_defaults_strategy_is_one_cell_per_dataset():
    spec = VariantsSpec(strategy="defaults", nodes={"classify": "*"}, overrides={"nodes.x.inputs.t": (1, 2)})
    assert ids(expand("f", spec, NODE_VARIANTS, DATA)) == ["f-classify=variant_0-easy", "f-classify=variant_0-hard"]


def test_listed_variants_limit_the_node():
    spec = VariantsSpec(nodes={"summarize": ["v2"]})
    assert ids(expand("f", spec, NODE_VARIANTS, DATA[:1])) == ["f-summarize=v2-easy"]


def test_clashing_override_names_get_longer_ids():
    spec = VariantsSpec(overrides={"nodes.a.inputs.temperature": (0,), "nodes.b.inputs.temperature": (1,)})
    assert ids(expand("f", spec, NODE_VARIANTS, DATA[:1])) == ["f-a.temperature=0-b.temperature=1-easy"]


def test_unknown_node_and_variant_are_spec_errors():
    with pytest.raises(SpecError, match="node 'clasify' has no variants"):
        expand("f", VariantsSpec(nodes={"clasify": "*"}), NODE_VARIANTS, DATA)
    with pytest.raises(SpecError, match="has no variant 'variant_9'"):
        expand("f", VariantsSpec(nodes={"classify": ["variant_9"]}), NODE_VARIANTS, DATA)


def test_narrow_keeps_matching_cells():
    spec = VariantsSpec(nodes={"classify": "*"})
    cells = expand("f", spec, NODE_VARIANTS, DATA)
    assert ids(narrow(cells, "classify=variant_1")) == ["f-classify=variant_1-easy", "f-classify=variant_1-hard"]
    assert narrow(cells, None) == cells


def test_selection_option_rejects_malformed_text():
    assert parse_selection("classify=variant_1") == "classify=variant_1"
    with pytest.raises(argparse.ArgumentTypeError, match="node=variant"):
        parse_selection("classify")


def test_init_is_named_in_the_cell_id() -> None:
    init = {"word": "good", "n": 3, "model_config": {"connection": "aoai", "azure_deployment": "gpt"},
            "judge": SimpleNamespace(azure_deployment="gpt-4o", api_key="sk-secret", azure_endpoint="e"),
            "api_key": "sk-secret", "text": "a very long sentence that goes on and on", "options": {"a": [1, 2]}}
    labels = dict(init_labels(init))
    assert labels == {"word": "good", "n": "3", "model_config": "aoai", "judge": "gpt-4o",
                      "text": "a very long sentence th~", "options": labels["options"]}
    assert len(labels["options"]) == 6 and labels["options"] != dict(init_labels({"options": {"a": [2]}}))["options"]
    cells = expand("chat", VariantsSpec(), {}, DATA[:1], init={"word": "good", "api_key": "sk-secret"})
    assert [c.id for c in cells] == ["chat-word=good-easy"]
    assert cells[0].key != expand("chat", VariantsSpec(), {}, DATA[:1], init={"word": "bad"})[0].key


def test_init_labels_are_the_same_in_every_process() -> None:
    """xdist workers collect separately: a label must not depend on an object's address."""
    class Retriever:
        def __init__(self) -> None:
            self.top_k = 3

    first, second = init_labels({"retriever": Retriever(), "score": len}), init_labels({"retriever": Retriever(),
                                                                                         "score": len})
    assert first == second
    assert init_labels({"retriever": Retriever()}) != init_labels({"retriever": SimpleNamespace(top_k=4)})


MARKUP = "<img src=x onerror=alert(1)>"


def test_ids_carry_no_markup_from_dataset_names_or_override_values() -> None:
    """pytest-html inserts test ids as HTML: a dataset name or an override value must not write markup."""
    spec = VariantsSpec(overrides={"nodes.classify.inputs.style": (MARKUP, "plain")})
    cells = expand("f", spec, NODE_VARIANTS, [DatasetSpec(MARKUP, Path("x.jsonl"))])
    for cell in cells:
        assert not set('<>"\'& ') & set(cell.id), cell.id
    assert cells[1].id.startswith("f-style=plain-_img_src=x_onerror=alert_1__")
    assert cells[0].config.startswith("style=_img_src=x_onerror=alert_1__")


def test_values_that_read_alike_once_made_safe_keep_distinct_ids() -> None:
    spec = VariantsSpec(overrides={"nodes.classify.inputs.style": ("a<b", "a>b", "a_b", "a b")})
    cells = expand("f", spec, NODE_VARIANTS, [DatasetSpec("x y", Path("1.jsonl")), DatasetSpec("x/y", Path("2.jsonl"))])
    assert len({c.id for c in cells}) == len(cells) == 8
    assert "f-style=a_b-x_y_" in cells[2].id  # a safe value is kept verbatim
