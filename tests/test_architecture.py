"""The layering of docs/architecture.md, checked on the source: no import runs back up.

Every import counts, those under `TYPE_CHECKING` and inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiodicomweb"

# Bottom up; a module may import its own layer and the layers below it.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundations": (
        "_exceptions", "_validate", "_tasks", "_media", "_dicom_json", "_urls",
        "_multipart", "_stow_response",
    ),
    "http": (
        "_rate", "_tls", "_inflate", "_auth", "_retry", "_wire", "_direct",
        "_transports", "_requester",
    ),
    "session": ("_multipart_stream", "_session"),
    "transactions": ("_qido", "_wado", "_stow", "_delete"),
    "bulk": ("_part10", "_bulk_files", "_bulk_download", "_bulk_store"),
    "facades": ("_client", "_sync", "_legacy", "compat", "batch", "__init__"),
    "cli": ("cli", "__main__"),
}  # fmt: skip
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def rank(module: str) -> int:
    """A module's layer; a subpackage's modules (`cli.commands`) are in the package's."""
    return RANK[module] if module in RANK else RANK[module.split(".", 1)[0]]


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return name.removesuffix(".__init__") if name != "__init__" else name


def package_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import of the package in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            if node.module == "aiodicomweb":  # `from aiodicomweb import _qido` or a public name
                modules = [n for n in names if n in RANK and n != "__init__"]
                found += [(m, []) for m in modules]
                found += [("__init__", [n for n in names if n not in modules])]
            elif node.module.startswith("aiodicomweb."):
                found.append((node.module.removeprefix("aiodicomweb."), names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aiodicomweb."):
                    found.append((alias.name.removeprefix("aiodicomweb."), []))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    names = {module_name(p) for p in SOURCES}
    assert all(name in RANK or name.split(".", 1)[0] in RANK for name in names), names
    assert set(RANK) <= names | {name.split(".", 1)[0] for name in names}


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_no_import_runs_back_up(path: Path):
    here = module_name(path)
    for module, _ in package_imports(path):
        if here == "__init__" and module == "__init__":
            continue
        assert rank(module) <= rank(here), f"{here} ({rank(here)}) imports {module}"


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_no_private_name_is_imported_from_another_module(path: Path):
    for module, names in package_imports(path):
        private = [name for name in names if name.startswith("_") and name != "__version__"]
        assert not private, f"{module_name(path)} imports {private} from {module}"


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if module_name(p).startswith("cli")], ids=module_name
)
def test_the_cli_uses_public_names_only(path: Path):
    for module, _ in package_imports(path):
        assert module in ("__init__", "batch") or module.startswith("cli"), module
