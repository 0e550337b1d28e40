"""The package's layers (README, "The data path"): a module imports only from its own layer and the
layers below it, and every module sits in the sub-package the README's tree names."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = ["core", "data", "nn", "training", "store", "report", "app"]  # lowest first
RANK = {name: float(i) for i, name in enumerate(LAYERS)}
RANK["distributed"] = RANK["app"] - 0.5  # the multi-GPU track may use every layer below app
OUTSIDE = {"preprocess": RANK["data"] + 0.5, "model_zoo": RANK["nn"] + 0.5}  # on data; on nn


def layer(module: str) -> str | None:
    """The layer of a module of this repository (`ctrbench.data.features` -> "data"); None for others
    and for the package root (`import ctrbench` for its version)."""
    parts = module.split(".")
    if parts[0] in OUTSIDE:
        return parts[0]
    return parts[1] if parts[0] == "ctrbench" and len(parts) > 1 else None


def rank(name: str) -> float:
    return OUTSIDE.get(name, RANK.get(name, float("inf")))


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import; write it absolute"
            if node.module in ("ctrbench", "model_zoo", "preprocess"):  # `from ctrbench import cli` imports a module
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in files("ctrbench"):
        relative = path.relative_to(REPO)
        if len(relative.parts) == 2:  # __init__.py, __main__.py: the package root, above every layer
            continue
        own = relative.parts[1]
        for module in imports(path):
            other = layer(module)
            if other is not None and other != own and rank(other) > rank(own):
                wrong.append(f"{relative} ({own}) imports {module} ({other})")
    assert not wrong, "lower layers must not import higher ones:\n" + "\n".join(sorted(wrong))


def test_the_foundation_does_not_need_torch():
    heavy = {f"{path.relative_to(REPO)} imports {module}" for path in files("ctrbench/core")
             for module in imports(path) if module.split(".")[0] == "torch"}
    assert not heavy


def test_the_models_and_converters_use_only_the_layers_below_them():
    wrong = []
    for folder in OUTSIDE:
        for path in files(folder):
            for module in imports(path):
                other = layer(module)
                if other is not None and other != folder and rank(other) > OUTSIDE[folder]:
                    wrong.append(f"{path.relative_to(REPO)} imports {module} ({other})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_package_root_holds_only_the_layers():
    root = sorted(p.name for p in (REPO / "ctrbench").iterdir() if p.suffix == ".py")
    assert root == ["__init__.py", "__main__.py"]
    packages = sorted(p.name for p in (REPO / "ctrbench").iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted([*LAYERS, "distributed"])


def test_every_module_is_where_the_readme_tree_says():
    readme = (REPO / "README.md").read_text()
    tree = re.search(r"```\nctrbench/\n(.*?)```", readme, re.S)
    assert tree, "README.md: the package tree (a code block starting with `ctrbench/`) is missing"
    listed = {m.group(1): m.group(2).split(", ")
              for m in re.finditer(r"^  (\w+)/ +([\w, ]+):", tree.group(1), re.M)}
    assert list(listed) == [*LAYERS, "distributed"], "README.md's tree: one line per layer, lowest first"
    for package, modules in listed.items():
        present = sorted(p.stem for p in (REPO / "ctrbench" / package).glob("*.py") if p.name != "__init__.py")
        assert sorted(modules) == present, f"README.md's tree, {package}/: update the line to the modules there"
