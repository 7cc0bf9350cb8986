"""The package never unpickles, evaluates or shells out on data it is given.

An ``ast`` scan of ``src/bindguard`` fails, naming file:line, on: ``torch.load`` without ``weights_only=True``;
pickle-family loaders outside the one module allowed to hold a restricted unpickler; the ``eval``/``exec``/
``compile`` builtins; ``yaml`` loaders other than the safe one; shells (``shell=True``, ``os.system``,
``os.popen``); dynamic imports of computed names outside reviewed call sites; ``trust_remote_code=True``.
The scanner is proven on snippets first: each pattern it must catch, and look-alikes it must pass.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bindguard"

#: Modules (relative to src/bindguard) allowed to use pickle machinery, for a restricted unpickler only.
ALLOWED_UNPICKLER_MODULES: frozenset[str] = frozenset({"_unpickle.py"})

#: Dynamic imports of a computed name that were reviewed: (module, enclosing function) -> where the name comes from.
REVIEWED_DYNAMIC_IMPORTS: dict[tuple[str, str], str] = {
    ("registry.py", "Entry.load"): "'module:attribute' targets registered in the package source",
    ("__init__.py", "__getattr__"): "module names from the fixed _LAZY table and bindguard.<subpackage>",
    (
        "_optional.py",
        "require",
    ): "backend names; require() is itself scanned as a dynamic import, so callers pass literals",
}

PICKLE_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve"})
PICKLE_CALLS = frozenset({"joblib.load", "pandas.read_pickle", "torch.hub.load"})
TORCH_LOADS = frozenset({"torch.load", "torch.serialization.load", "torch.hub.load_state_dict_from_url"})
BUILTIN_EXECUTION = frozenset({"eval", "exec", "compile", "builtins.eval", "builtins.exec", "builtins.compile"})
YAML_SAFE_LOADERS = frozenset({"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"})
YAML_UNSAFE_CALLS = frozenset({"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"})
SUBPROCESS_CALLS = frozenset(f"subprocess.{name}" for name in ("run", "call", "check_call", "check_output", "Popen"))
SHELL_CALLS = frozenset({"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"})
DYNAMIC_IMPORTS = frozenset(
    {"__import__", "builtins.__import__", "importlib.import_module", "bindguard._optional.require"}
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _has_double_star(call: ast.Call) -> bool:
    return any(keyword.arg is None for keyword in call.keywords)


class _Scanner(ast.NodeVisitor):
    """Resolves names through the file's imports, then checks every call and reference against the rules."""

    def __init__(self, tree: ast.Module, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.scope: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> qualified name, from every import in the file
        self.called: set[int] = set()  # ids of nodes that are the callee of a call
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
                    else:
                        self.aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{self.absolute(node)}.{alias.name}"
            elif isinstance(node, ast.Call):
                self.called.add(id(node.func))

    def absolute(self, node: ast.ImportFrom) -> str:
        """The module a ``from ... import`` reads, with relative imports resolved inside the package."""
        if node.level == 0:
            return node.module or ""
        package = ["bindguard", *Path(self.path).parent.parts]
        return ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))

    def report(self, node: ast.AST, rule: str, message: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), rule, message))

    def qualified(self, node: ast.expr) -> str | None:
        """``np.load`` -> ``numpy.load`` through the imports; ``getattr(torch, "load")`` -> ``torch.load``."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            base = self.qualified(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        return None

    # ------------------------------------------------------------ scopes and imports

    def _visit_scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_scope

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_imported_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self.absolute(node)
        for alias in node.names:
            self._check_imported_module(node, f"{module}.{alias.name}")

    def _check_imported_module(self, node: ast.AST, name: str) -> None:
        if name.split(".")[0] in PICKLE_MODULES and self.path not in ALLOWED_UNPICKLER_MODULES:
            self.report(
                node, "pickle", f"imports {name}: unpickling runs code from the file; store tensors as safetensors"
            )

    # ------------------------------------------------------------ references and calls

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.qualified(node)
        if name in TORCH_LOADS and id(node) not in self.called:
            self.report(node, "torch-load", f"{name} passed around as a value; call it with weights_only=True")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.qualified(node.func)
        if name:
            for check in (self._torch_load, self._pickle, self._execution, self._yaml, self._shell, self._import):
                check(node, name)
        if _is_true(_keyword(node, "trust_remote_code")):
            self.report(
                node, "remote-code", "trust_remote_code=True runs Python shipped with the checkpoint; remove it"
            )
        self.generic_visit(node)

    def _torch_load(self, call: ast.Call, name: str) -> None:
        if name in TORCH_LOADS and not _is_true(_keyword(call, "weights_only")):
            self.report(
                call,
                "torch-load",
                f"{name} without weights_only=True unpickles arbitrary objects; pass weights_only=True",
            )

    def _pickle(self, call: ast.Call, name: str) -> None:
        if self.path in ALLOWED_UNPICKLER_MODULES:
            return
        if name in PICKLE_CALLS:
            self.report(call, "pickle", f"{name} unpickles (or runs) code from its source; load safetensors instead")
        elif name == "numpy.load":
            allow_pickle = _keyword(call, "allow_pickle")
            if (allow_pickle is not None and not _is_false(allow_pickle)) or _has_double_star(call):
                self.report(call, "pickle", "numpy.load may unpickle object arrays; drop allow_pickle or pass False")

    def _execution(self, call: ast.Call, name: str) -> None:
        if name in BUILTIN_EXECUTION:
            self.report(
                call, "eval-exec", f"the {name.rsplit('.', 1)[-1]}() builtin runs text as code; parse the data instead"
            )

    def _yaml(self, call: ast.Call, name: str) -> None:
        if name in YAML_UNSAFE_CALLS:
            self.report(call, "yaml-load", f"{name} can build arbitrary objects; use yaml.safe_load")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or self.qualified(loader) not in YAML_SAFE_LOADERS:
                self.report(call, "yaml-load", f"{name} without Loader=yaml.SafeLoader; use yaml.safe_load")

    def _shell(self, call: ast.Call, name: str) -> None:
        if name in SHELL_CALLS:
            self.report(
                call, "shell", f"{name} runs its argument through a shell; use subprocess.run([...]) with a list"
            )
        elif name in SUBPROCESS_CALLS:
            shell = _keyword(call, "shell")
            if (shell is not None and not _is_false(shell)) or _has_double_star(call):
                self.report(call, "shell", f"{name} with shell=True; pass the command as a list without a shell")

    def _import(self, call: ast.Call, name: str) -> None:
        if name not in DYNAMIC_IMPORTS or not call.args:
            return
        target = call.args[0]
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            if target.value.split(".")[0] in PICKLE_MODULES and self.path not in ALLOWED_UNPICKLER_MODULES:
                self.report(call, "pickle", f"imports {target.value} dynamically; store tensors as safetensors")
            return
        site = (self.path, ".".join(self.scope))
        if site not in REVIEWED_DYNAMIC_IMPORTS:
            self.report(
                call,
                "dynamic-import",
                f"{name} of a computed name in {site[1] or '<module>'}; import a literal name, "
                "or review the site and add it to REVIEWED_DYNAMIC_IMPORTS",
            )


def scan_source(source: str, path: str = "snippet.py") -> list[Finding]:
    """Findings for one module's source; ``path`` is relative to src/bindguard."""
    tree = ast.parse(source, filename=path)
    scanner = _Scanner(tree, path)
    scanner.visit(tree)
    return sorted(scanner.findings, key=lambda finding: (finding.line, finding.rule))


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


# ---------------------------------------------------------------- the package


def test_package_source_never_unpickles_evaluates_or_shells_out() -> None:
    findings: list[Finding] = []
    for module in package_modules():
        relative = module.relative_to(PACKAGE).as_posix()
        try:
            findings += scan_source(module.read_text(encoding="utf-8"), relative)
        except SyntaxError as error:
            findings.append(
                Finding(relative, error.lineno or 0, "syntax", f"cannot be parsed, so not scanned: {error.msg}")
            )
    assert not findings, "unsafe loading or execution in src/bindguard:\n" + "\n".join(map(str, findings))


def test_scan_covers_the_whole_package() -> None:
    modules = {module.relative_to(PACKAGE).as_posix() for module in package_modules()}
    assert len(modules) > 30 and {"registry.py", "attacks/threat.py", "encoders/tinybind.py"} <= modules


def test_allowed_and_reviewed_modules_exist() -> None:
    for relative in ALLOWED_UNPICKLER_MODULES | {path for path, _ in REVIEWED_DYNAMIC_IMPORTS}:
        assert (PACKAGE / relative).is_file(), f"{relative} is allowed but does not exist; remove the stale entry"


# ---------------------------------------------------------------- the scanner catches each pattern

UNSAFE = [
    ("torch-load", "import torch\ntorch.load('x.pt')"),
    ("torch-load", "import torch\ntorch.load(f, weights_only=False)"),
    ("torch-load", "import torch\ntorch.load(f, weights_only=flag)"),
    ("torch-load", "import torch\nopts = {'weights_only': True}\ntorch.load(f, **opts)"),
    ("torch-load", "import torch as T\nT.load(f, map_location='cpu')"),
    ("torch-load", "from torch import load\nload(f)"),
    ("torch-load", "from torch import load as read\nread(f)"),
    ("torch-load", "import torch.serialization\ntorch.serialization.load(f)"),
    ("torch-load", "import torch\ngetattr(torch, 'load')(f)"),
    ("torch-load", "import torch\nreaders = [torch.load]"),
    ("torch-load", "import torch\ntorch.hub.load_state_dict_from_url(url)"),
    ("pickle", "import torch\ntorch.hub.load('owner/repo', 'model')"),
    ("pickle", "import pickle"),
    ("pickle", "import pickle as serializer\nserializer.loads(blob)"),
    ("pickle", "from pickle import loads"),
    ("pickle", "import cPickle"),
    ("pickle", "import _pickle"),
    ("pickle", "import dill"),
    ("pickle", "import cloudpickle"),
    ("pickle", "import shelve"),
    ("pickle", "def read(path):\n    import pickle\n    return pickle.load(open(path, 'rb'))"),
    ("pickle", "import joblib\njoblib.load(path)"),
    ("pickle", "from joblib import load\nload(path)"),
    ("pickle", "import numpy as np\nnp.load(path, allow_pickle=True)"),
    ("pickle", "import numpy\nnumpy.load(path, allow_pickle=flag)"),
    ("pickle", "import numpy as np\nnp.load(path, **options)"),
    ("pickle", "import pandas as pd\npd.read_pickle(path)"),
    ("pickle", "import importlib\nimportlib.import_module('pickle')"),
    ("pickle", "__import__('pickle')"),
    ("eval-exec", "eval(text)"),
    ("eval-exec", "exec(code)"),
    ("eval-exec", "compile(source, 'f', 'exec')"),
    ("eval-exec", "import builtins\nbuiltins.eval(text)"),
    ("eval-exec", "class A:\n    def f(self, text):\n        return eval(text, {})"),
    ("yaml-load", "import yaml\nyaml.load(text)"),
    ("yaml-load", "import yaml\nyaml.load(text, Loader=yaml.Loader)"),
    ("yaml-load", "import yaml\nyaml.load(text, yaml.FullLoader)"),
    ("yaml-load", "import yaml\nyaml.load_all(text)"),
    ("yaml-load", "import yaml\nyaml.unsafe_load(text)"),
    ("yaml-load", "import yaml\nyaml.full_load(text)"),
    ("yaml-load", "from yaml import load\nload(text)"),
    ("shell", "import subprocess\nsubprocess.run(command, shell=True)"),
    ("shell", "import subprocess\nsubprocess.Popen(command, shell=flag)"),
    ("shell", "import subprocess\nsubprocess.run(command, **options)"),
    ("shell", "from subprocess import check_output\ncheck_output(command, shell=True)"),
    ("shell", "import subprocess as sp\nsp.call(command, shell=True)"),
    ("shell", "import subprocess\nsubprocess.getoutput(command)"),
    ("shell", "import os\nos.system(command)"),
    ("shell", "import os\nos.popen(command).read()"),
    ("shell", "from os import system\nsystem(command)"),
    ("dynamic-import", "__import__(name)"),
    ("dynamic-import", "import importlib\nimportlib.import_module(user_text)"),
    ("dynamic-import", "from importlib import import_module\ndef load(name):\n    return import_module(f'x.{name}')"),
    ("dynamic-import", "from bindguard._optional import require\nrequire(backend, extra='tinybind')"),
    ("dynamic-import", "from ._optional import require\nrequire(backend, extra='tinybind')"),
    ("remote-code", "model = AutoModel.from_pretrained(directory, trust_remote_code=True)"),
]


@pytest.mark.parametrize(("rule", "source"), UNSAFE, ids=[f"{rule}-{index}" for index, (rule, _) in enumerate(UNSAFE)])
def test_scanner_catches_unsafe_snippet(rule: str, source: str) -> None:
    findings = scan_source(source)
    assert [finding.rule for finding in findings].count(rule) >= 1, f"missed [{rule}] in:\n{source}\ngot {findings}"
    last_line = source.count("\n") + 1
    assert all(1 <= finding.line <= last_line for finding in findings)
    assert str(findings[0]).startswith(f"snippet.py:{findings[0].line}: [")


SAFE = [
    "import torch\ntorch.load(f, weights_only=True)",
    "import torch\ntorch.load(f, map_location='cpu', weights_only=True)",
    "from torch import load\nload(f, weights_only=True)",
    "from safetensors.torch import load, load_file\nload(data)\nload_file(path)",
    "def load(path):\n    return path\nload('x')",
    "import numpy as np\nnp.load(path)\nnp.load(path, allow_pickle=False)",
    "import re\nre.compile('x')",
    "from re import compile\npattern = compile('x')",
    "model.eval()\nself.compile()\nscript = torch.compile(model)",
    "def run(compile: bool, eval: bool):\n    return compile and eval",
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(text, yaml.CSafeLoader)",
    "from yaml import SafeLoader, load\nload(text, Loader=SafeLoader)",
    "import subprocess\nsubprocess.run(['git', 'status'], check=True)",
    "import subprocess\nsubprocess.run(command, shell=False)",
    "import os\nos.path.join(a, b)\nos.environ.get('HOME')",
    "import importlib\nimportlib.import_module('bindguard.attacks')",
    "__import__('json')",
    "from bindguard._optional import require\nrequire('transformers', extra='tinybind')",
    "from . import _optional\nfrom ._optional import require\nrequire('matplotlib', extra='plots')",
    "model = AutoModel.from_pretrained(directory)",
    "text = 'import pickle; torch.load(f); eval(x); os.system(c)'  # import pickle",
    "import json\njson.loads(text)",
]


@pytest.mark.parametrize("source", SAFE)
def test_scanner_passes_safe_look_alike(source: str) -> None:
    assert scan_source(source) == []


def test_scanner_honours_the_allowed_unpickler_module(monkeypatch: pytest.MonkeyPatch) -> None:
    source = "import pickle\nclass Restricted(pickle.Unpickler):\n    pass"
    assert [finding.rule for finding in scan_source(source, "_unpickler.py")] == ["pickle"]
    monkeypatch.setattr(f"{__name__}.ALLOWED_UNPICKLER_MODULES", frozenset({"_unpickler.py"}))
    assert scan_source(source, "_unpickler.py") == []
    assert scan_source(source, "other.py") != []


def test_scanner_honours_reviewed_dynamic_import_sites_only() -> None:
    source = "import importlib\nclass Entry:\n    def load(self):\n        return importlib.import_module(self.module)"
    assert scan_source(source, "registry.py") == []
    assert [finding.rule for finding in scan_source(source, "elsewhere.py")] == ["dynamic-import"]


def test_scanner_resolves_relative_imports_inside_the_package() -> None:
    source = "from .._optional import require\nrequire(backend, extra='tinybind')"
    assert [finding.rule for finding in scan_source(source, "encoders/backend.py")] == ["dynamic-import"]
