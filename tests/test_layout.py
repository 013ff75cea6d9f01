"""The package's programs and the one direction of imports between them.

    client -> models, errors <- server -> engine -> supervisor's on-disk format

The supervisor runs with the standard library alone; the client installs with httpx
alone. These tests read the imports of every module (ast) and run the programs' imports
in fresh interpreters, so a wrong import fails here before it fails a user.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sandbox_agent
from sandbox_agent import _types, models
from sandbox_agent.server import schemas
from sandbox_agent.supervisor import ondisk

PACKAGE = Path(sandbox_agent.__file__).parent
SRC = PACKAGE.parent

#: For each part of the package, what of ours it may import (besides itself).
ALLOWED = {
    "supervisor": set(),
    "engine": {"supervisor.ondisk", "supervisor.capture", "_exceptions", "_types"},
    "server": {"engine", "supervisor.ondisk", "_exceptions", "_types", "_version"},
    "client": {"models", "_exceptions", "_types", "_version"},
    "cli": {"client", "models", "server", "_exceptions", "_types", "_version"},
    "models": {"_types"},
    "_types": set(),
    "_exceptions": set(),
    "_version": set(),
    "__init__": {"client", "models", "_exceptions", "_version"},
    "__main__": {"cli"},
}
#: Third-party packages each part may import; the rest of the standard library is free.
THIRD_PARTY = {
    "server": {"fastapi", "starlette", "pydantic", "uvicorn"},
    "client": {"httpx", "anyio"},
    "cli": {"httpx"},
}
KNOWN_THIRD_PARTY = {"fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools", "httpx", "anyio"}


def _part(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved, our prefix cut)."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    package = list(relative.parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                if node.module is None:
                    found.update(f"sandbox_agent.{target}.{a.name}".replace("..", ".") for a in node.names)
                else:
                    found.add(f"sandbox_agent.{target}" if target else "sandbox_agent")
            elif node.module:
                found.add(node.module)
    return found


def _ours_allowed(part: str, target: str) -> bool:
    if _part(target) == part:
        return True
    return any(target == allowed or target.startswith(allowed + ".") for allowed in ALLOWED[part])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    part = relative.parts[0].removesuffix(".py")
    wrong = []
    for name in _imports(path):
        if name == "sandbox_agent" or name.startswith("sandbox_agent."):
            target = name.removeprefix("sandbox_agent").removeprefix(".")
            if target and not _ours_allowed(part, target):
                wrong.append(name)
        elif name.split(".")[0] in KNOWN_THIRD_PARTY and name.split(".")[0] not in THIRD_PARTY.get(part, set()):
            wrong.append(name)
    assert not wrong, f"{relative} ({part}) must not import {sorted(wrong)}"


def test_the_supervisor_imports_under_the_standard_library_alone() -> None:
    code = f"""
import json, sys
sys.path.insert(0, {str(SRC)!r})
import sandbox_agent.supervisor.launcher, sandbox_agent.supervisor.ondisk
print(json.dumps(sorted(name for name in sys.modules if name != "__main__")))
"""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert "sandbox_agent.supervisor.supervisor" in loaded
    ours = [name for name in loaded if name.split(".")[0] == "sandbox_agent"]
    assert all(name == "sandbox_agent" or name.startswith("sandbox_agent.supervisor") for name in ours), ours
    others = [name for name in loaded if name.split(".")[0] not in (*sys.stdlib_module_names, "sandbox_agent")]
    assert others == [], f"the supervisor loaded modules from outside the standard library: {others}"
    assert "typing" not in loaded  # a large import in a process that must stay small


def _loaded_after(statements: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``statements``."""
    code = f"import json, sys; {statements}; print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_the_client_loads_neither_the_server_nor_pydantic() -> None:
    statements = (
        "import sandbox_agent; sandbox_agent.Client; sandbox_agent.AsyncClient; sandbox_agent.Process; "
        "import sandbox_agent.cli"
    )
    assert _loaded_after(statements, ("fastapi", "starlette", "pydantic", "uvicorn")) == []


def test_the_server_loads_neither_the_client_nor_its_models() -> None:
    # What `sandbox-agent server` imports stays in its memory for as long as it runs.
    statements = (
        "from sandbox_agent.cli import build_parser; build_parser().parse_args(['server']); import sandbox_agent.server"
    )
    assert _loaded_after(statements, ("sandbox_agent.client", "sandbox_agent.models", "httpx")) == []


def test_the_base_install_needs_httpx_and_websockets_alone() -> None:
    import tomllib

    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert names <= {"httpx", "anyio", "websockets"}, names  # anyio is a dependency of httpx
    server = {dep.split(">")[0].strip() for dep in project["optional-dependencies"]["server"]}
    assert {"fastapi", "uvicorn", "uvloop", "httptools"} <= server


def _schema_fields(model: type) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name",
    [
        "Process",
        "LogPaths",
        "ProcessList",
        "Logs",
        "Health",
        "TerminalSize",
        "ProcessInfo",
        "ProcessInfoList",
        "CreateProcess",
        "RunProcess",
        "RunResult",
        "ProcessConfig",
        "ProcessLogEntry",
        "ProcessLogs",
        "InputWritten",
    ],
)
def test_client_models_and_server_schemas_name_the_same_fields(name: str) -> None:
    client_fields = {models.camel(f.name) for f in dataclasses.fields(getattr(models, name))}
    assert client_fields == _schema_fields(getattr(schemas, name))


def test_the_client_start_body_is_a_subset_of_the_servers() -> None:
    client_fields = {models.camel(f.name) for f in dataclasses.fields(models.StartProcess)}
    assert client_fields <= _schema_fields(schemas.StartProcess)


def test_one_set_of_exited_statuses() -> None:
    assert set(_types.EXITED_STATUSES) == set(ondisk.EXITED_STATUSES)
    js = (PACKAGE / "ui" / "format.js").read_text()
    line = next(line for line in js.splitlines() if line.startswith("export const EXITED_STATUSES"))
    assert set(json.loads(line.split("=", 1)[1].strip().rstrip(";"))) == set(ondisk.EXITED_STATUSES)


def test_the_server_command_without_the_server_extra_says_what_to_install(tmp_path: Path) -> None:
    # fastapi made unimportable, as in an install without the [server] extra.
    code = (
        "import sys; sys.modules['fastapi'] = None; from sandbox_agent.cli import main; "
        f"sys.exit(main(['server', '--port', '0', '--data-dir', {str(tmp_path)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pip install 'sandbox-agent-py[server]'" in result.stderr
    assert "Traceback" not in result.stderr
