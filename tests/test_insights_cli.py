"""`synth insights`: bad input exits 2 and writes nothing; real embeddings write the documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.cli import build_parser, main
from synth.insights.personas import write_personas_jsonl
from synth.insights.synthetic import generate_population
from synth.insights.types import Persona
from tests.test_insights_pipeline import INSIGHT_KEYS


def test_cli_bad_input_exits_nonzero_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "personas.jsonl"
    bad.write_text('{"user_id": "a", "persona": "Likes tea."}\n{"user_id": "b"}\n')
    out = tmp_path / "insights.json"
    assert main(["insights", str(bad), "-o", str(out), "--html", str(tmp_path / "r.html")]) == 2
    assert f"{bad}, line 2, field 'persona': missing required field" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["personas.jsonl"]


def test_cli_refuses_a_user_id_repeated_across_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_personas_jsonl([Persona("u-1", "Likes tea.")], first)
    write_personas_jsonl([Persona("u-1", "Likes chess.")], second)
    assert main(["insights", str(first), str(second), "-o", str(tmp_path / "out.json")]) == 2
    assert f"{second}, field 'user_id': repeats 'u-1' already read from {first}" in capsys.readouterr().err


def test_parser_reads_the_insights_options() -> None:
    args = build_parser().parse_args(["insights", "p.jsonl", "-o", "o.json", "--min-users", "3", "--seed", "2"])
    assert args.command == "insights" and args.min_users == 3 and args.seed == 2 and args.personas == ["p.jsonl"]
    assert callable(args.func)


@pytest.mark.slow
def test_cli_writes_the_documented_schema_with_real_embeddings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))  # --cache-dir sets it; restored after the test
    source = tmp_path / "personas.jsonl"
    markup = [
        Persona(
            f"markup-{i}",
            "The user pastes <script>alert(1)</script> and <img src=x onerror=alert(2)> into every chat.",
        )
        for i in range(6)
    ]
    personas = generate_population(60, seed=5).personas + markup
    write_personas_jsonl(personas, source)
    out, report = tmp_path / "insights.json", tmp_path / "report.html"
    code = main(["insights", str(source), "-o", str(out), "--html", str(report), "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    document = json.loads(out.read_text())
    assert set(document) == {"insights", "hidden_small_clusters", "params"}
    assert isinstance(document["hidden_small_clusters"], int)
    assert document["params"]["min_users"] == 5 and document["params"]["n_personas"] == len(personas)
    known = {p.user_id for p in personas}
    assert document["insights"]
    for item in document["insights"]:
        assert set(item) == INSIGHT_KEYS
        assert item["n_users"] == len(set(item["user_ids"])) >= 5
        assert set(item["user_ids"]) <= known
        assert 0.0 <= item["stability"] <= 1.0
    page = report.read_text()
    assert "&lt;script&gt;alert(1)" in page  # shown as text in the map labels
    assert "<script>alert(1)" not in page and "<img src=x" not in page


def test_cli_exports_the_texts_to_embed_and_rejects_a_file_that_lacks_some(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "personas.jsonl"
    write_personas_jsonl([Persona("a", "**Beekeeping**: She keeps two hives and plays chess online.")], source)
    texts = tmp_path / "texts.parquet"
    assert main(["insights", str(source), "--export-texts", "-o", str(texts), "--quiet"]) == 0
    exported = pq.read_table(texts).column("text").to_pylist()
    assert exported == ["Beekeeping: keeps two hives", "Beekeeping: Plays chess online"]
    partial = tmp_path / "embedded.parquet"
    pq.write_table(pa.table({"text": ["Beekeeping: keeps two hives"], "embedding": [[1.0, 0.0]]}), partial)
    out = tmp_path / "insights.json"
    assert main(["insights", str(source), "--embeddings", str(partial), "-o", str(out)]) == 2
    assert "field 'text': 1 of 2 texts to embed are not in the file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_cli_clusters_precomputed_embeddings(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.insights_doubles import TOPICS, TopicEmbedder, topic_personas

    source, texts, embedded = tmp_path / "p.jsonl", tmp_path / "t.parquet", tmp_path / "e.parquet"
    write_personas_jsonl(topic_personas(), source)
    assert main(["insights", str(source), "--export-texts", "-o", str(texts), "--quiet"]) == 0
    wanted = pq.read_table(texts).column("text").to_pylist()
    vectors = TopicEmbedder(TOPICS).embed(wanted)
    pq.write_table(pa.table({"text": wanted, "embedding": vectors.tolist()}), embedded)
    out = tmp_path / "insights.json"
    assert main(["insights", str(source), "--embeddings", str(embedded), "-o", str(out), "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert document["params"]["embedder"] == "precomputed:e.parquet" and document["insights"]
