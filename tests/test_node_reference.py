"""The node reference in docs/ is generated from the classes and must match them."""
from __future__ import annotations

from nodes import BUILTIN
from pipeline.nodedoc import describe_nodes
from pipeline.registry import resolve
from tests.conftest import ROOT, dance


def test_docs_nodes_md_is_up_to_date():
    committed = (ROOT / "docs" / "nodes.md").read_text()
    assert committed == describe_nodes(markdown=True) + "\n", "run `make docs` to regenerate"


def test_every_builtin_node_documents_its_ports_and_params():
    for name in BUILTIN:
        cls = resolve(name)
        assert cls.__doc__, name
        for param in cls.params.values():
            assert param.doc, f"{name}.{param.name} has no doc"


def test_dance_nodes_lists_every_type():
    result = dance("nodes")
    assert result.returncode == 0
    for name in BUILTIN:
        assert f"\n{name}  (" in "\n" + result.stdout
