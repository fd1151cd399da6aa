"""Runs docs/python.md's examples, in order, against a private Redis."""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "python.md"
DOC_URL = "redis://127.0.0.1:6379"


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_examples_of_docs_python_md_run(redis_url, r, tmp_path, monkeypatch):
    (tmp_path / "schemas").symlink_to(REPO / "schemas")
    (toml,) = blocks("toml")
    (tmp_path / "evstream.toml").write_text(toml.replace(DOC_URL, redis_url))
    monkeypatch.chdir(tmp_path)
    examples = blocks("python")
    assert len(examples) == 5
    namespace: dict = {}
    for example in examples:
        assert DOC_URL in example or "evstream.toml" in example
        exec(compile(example.replace(DOC_URL, redis_url), str(DOC), "exec"), namespace)
    # What the examples did, seen from Redis.
    assert r.xlen("events") == 3
    assert r.xlen("events:dlq") == 1
