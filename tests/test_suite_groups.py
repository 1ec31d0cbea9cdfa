"""How the suite shares out over processes (``make test TEST_WORKERS=2``: pytest-xdist ``-n 2``, ``--dist loadfile``
in pytest.ini): a test file is the unit one worker runs whole, so what must not run twice at once stays in one file.
Read from the test files' source, so it holds whichever tests a run selects."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def files_taking(fixture: str) -> list[str]:
    """The test files with a function (a test or a fixture) that takes `fixture` as a parameter."""
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and fixture in {arg.arg for arg in node.args.args + node.args.kwonlyargs}
               for node in ast.walk(tree)):
            found.append(path.name)
    return found


def test_the_ray_tests_live_in_one_file():
    """Two Ray test clusters at once would share the machine's /tmp/ray and crowd its two cores with four
    one-CPU nodes: every test that uses one is in one file, so one worker runs them one after another."""
    assert files_taking("ray_cluster") == ["test_ray_backend.py"]
