"""requirements.txt's numpy range holds: the project's code uses no numpy name that 1.26 lacks.

numpy>=1.26,<3 is only true while no module calls what numpy 2 added; this test reads every project
module (tests excluded) with `ast`, collects each `np.<name>` / `numpy.<name>` / `np.linalg.<name>`
it uses and each name imported `from numpy`, and fails on the ones numpy 1.26 does not have.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# Added in numpy 2.0 (release notes: "Array API standard compatibility" and new functions), plus the
# 2.1/2.2 additions, all absent from 1.26. np.long / np.ulong were removed in 1.24 and came back in 2.0.
NUMPY_2_ONLY = frozenset(
    {
        "trapezoid",
        "concat",
        "permute_dims",
        "astype",
        "isdtype",
        "bitwise_count",
        "vecdot",
        "matrix_transpose",
        "unique_all",
        "unique_counts",
        "unique_inverse",
        "unique_values",
        "cumulative_sum",
        "cumulative_prod",
        "unstack",
        "matvec",
        "vecmat",
        "pow",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atan2",
        "atanh",
        "bitwise_left_shift",
        "bitwise_right_shift",
        "bitwise_invert",
        "long",
        "ulong",
        "strings",
        "linalg.vecdot",
        "linalg.matrix_transpose",
        "linalg.matrix_norm",
        "linalg.vector_norm",
        "linalg.svdvals",
        "linalg.diagonal",
        "linalg.trace",
        "linalg.outer",
        "linalg.cross",
        "linalg.tensordot",
        "linalg.matmul",
        "lib.array_utils",
    }
)
# Removed in numpy 2.0: they would break the "<3" side of the range (numpy 2.x) instead.
REMOVED_IN_NUMPY_2 = frozenset(
    {
        "float_",
        "complex_",
        "string_",
        "unicode_",
        "product",
        "cumproduct",
        "sometrue",
        "alltrue",
        "round_",
        "NaN",
        "Inf",
        "Infinity",
        "infty",
        "PINF",
        "NINF",
        "PZERO",
        "NZERO",
        "NAN",
        "asfarray",
        "msort",
        "trapz",
        "in1d",
    }
)
SKIPPED_FOLDERS = {"tests", ".git", ".whl", "runs", "data_cache", "wandb", "models", "__pycache__", "node_modules"}


def _project_modules() -> list[Path]:
    return sorted(
        p
        for p in PROJECT_ROOT.rglob("*.py")
        if not SKIPPED_FOLDERS & set(p.relative_to(PROJECT_ROOT).parts[:-1])
        and not any(part.startswith(".") or "site-packages" in part for part in p.relative_to(PROJECT_ROOT).parts[:-1])
    )


def numpy_names(source: str) -> set[str]:
    """The numpy attributes a module uses: `np.x`, `np.linalg.y` (as "linalg.y"), `from numpy import z`."""
    tree = ast.parse(source)
    aliases = {"numpy"}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "numpy"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "numpy":
            prefix = node.module.partition(".")[2]
            names |= {f"{prefix}.{a.name}" if prefix else a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            inner: ast.expr = node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in aliases:
                chain.reverse()
                names.add(chain[0])
                if len(chain) > 1:
                    names.add(f"{chain[0]}.{chain[1]}")
    return names


def test_the_scanner_sees_numpy_2_names():
    used = numpy_names("import numpy as np\nfrom numpy.linalg import vector_norm\nx = np.trapezoid(y)\nz = np.linalg.vecdot(a, b)\n")
    assert {"trapezoid", "linalg.vecdot", "linalg.vector_norm"} <= used & NUMPY_2_ONLY


def test_project_code_runs_on_the_numpy_floor_and_on_numpy_2():
    modules = _project_modules()
    used: dict[str, set[str]] = {}
    for path in modules:
        for name in numpy_names(path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(str(path.relative_to(PROJECT_ROOT)))
    assert len(modules) > 20 and len(used) > 30, "the scan found too little: is PROJECT_ROOT right?"
    too_new = {name: sorted(where) for name, where in used.items() if name in NUMPY_2_ONLY}
    assert not too_new, f"numpy-2-only names (requirements.txt says numpy>=1.26): {too_new}; use the 1.26 spelling or raise the floor"
    gone = {name: sorted(where) for name, where in used.items() if name in REMOVED_IN_NUMPY_2}
    assert not gone, f"names numpy 2 removed (requirements.txt allows numpy 2): {gone}"
