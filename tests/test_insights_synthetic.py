"""synth.insights.synthetic: seeded populations with planted traits from the bundled trait catalog."""

from __future__ import annotations

import json

from synth.insights.synthetic import TraitCatalog, generate_population
from synth.paths import asset_path


def test_generator_is_seeded_and_plants_documented_traits() -> None:
    first, again, other = (
        generate_population(50, seed=3),
        generate_population(50, seed=3),
        generate_population(50, seed=4),
    )
    assert [u.persona.text for u in first.users] == [u.persona.text for u in again.users]
    assert [u.persona.text for u in first.users] != [u.persona.text for u in other.users]
    keys = {facet.key for facet in first.planted}
    assert len(keys) == 26
    for user in first.users:
        assert user.dominant_trait == user.traits[0] and set(user.traits) <= keys
        assert 3 <= len(user.traits) <= 4 and len(set(user.traits)) == len(user.traits)
        assert not {"concise", "in_depth"} <= set(user.traits) and not {"student", "retiree"} <= set(user.traits)


def test_bundled_catalog_fills_every_placeholder() -> None:
    catalog = TraitCatalog.load()
    document = json.loads(asset_path("trait_catalog.json").read_text(encoding="utf-8"))
    assert [trait.key for trait in catalog.traits] == [trait["key"] for trait in document["traits"]]
    assert {trait.facet for trait in catalog.traits} == {"style", "values", "topics", "situation"}
    assert all(len(trait.templates) == 8 for trait in catalog.traits)
    for user in generate_population(200, seed=1).users:
        assert "{" not in user.persona.text and "}" not in user.persona.text


def test_a_catalog_from_another_file_drives_the_generator(tmp_path) -> None:
    document = json.loads(asset_path("trait_catalog.json").read_text(encoding="utf-8"))
    document["traits"] = [
        {"key": key, "facet": "topics", "label": key, "weight": 1.0,
         "templates": [f"{{S}} talks about {key}.", f"{{P!c}} favourite subject is {key}."]}
        for key in ("tea", "chess", "bees", "jazz")
    ]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document))
    population = generate_population(20, seed=0, catalog=TraitCatalog.load(path))
    for user in population.users:
        assert set(user.traits) <= {"tea", "chess", "bees", "jazz"}
        assert all(key in user.persona.text for key in user.traits)
