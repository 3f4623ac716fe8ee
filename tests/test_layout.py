"""The package map: import arrows run one way, cli -> routes (serve_app, batch_jobs, cluster) -> digitiser ->
contracts (tools/import_graph.py prints it)."""
import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("import_graph", Path(__file__).parent.parent / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(import_graph)

def test_no_package_level_cycles():
    assert import_graph.cycles(import_graph.graph()) == []

def test_core_and_contracts_never_import_the_routes():
    g = import_graph.graph()
    assert g["digitiser"] <= {"contracts"} and g["contracts"] == set()
    assert all("cli" not in imports for name, imports in g.items())

def test_the_cycle_finder_finds_a_cycle():
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
