"""What each function-level import of kvm/ saves: the start-up of status, vminfo and vmlist.

Every `import` inside a function of kvm/ is there so that a command that does not need the module
does not pay for loading it. This measures, for each one, what the three start-up-critical
commands would pay if it were at the top of its module: the cumulative import time of the module
it names (python -X importtime) in an interpreter that has already loaded what the command loads,
counted for a command only when the command loads the importing module and not the imported one.

    python3 bench/bench_imports.py [--runs 5] [--json FILE]

Runs on a throw-away pool (bench.Bed) with 10 VMs; prints one row per lazy import that saves a
command 0.5 ms or more, then how many save less (candidates for the top of their module).
"""

import argparse
import ast
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PY, REPO, Bed  # noqa: E402 - bench/ is no package

COMMANDS = {"status": ["status", "vm0000"], "vminfo": ["vminfo", "vm0000"], "vmlist": ["vmlist"]}
THRESHOLD_MS = 0.5


def lazy_imports():
    """[(module, line, target module)] of every import statement inside a function of kvm/."""
    out = []
    for path in sorted((REPO / "kvm").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                for target in _targets(node, module, path.name == "__init__.py"):
                    out.append((module, node.lineno, target))
    return sorted(set(out))


def _targets(node, module, is_package):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")[:len(module.split(".")) - node.level + (1 if is_package else 0)]
        node_module = ".".join(base + ([node.module] if node.module else []))
    else:
        node_module = node.module
    # `from pkg import sub`: the submodule when there is one, else the module itself
    subs = [f"{node_module}.{a.name}" for a in node.names]
    found = [s for s in subs if _is_module(s)]
    return found or [node_module]


def _is_module(name):
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def loaded_by(bed, argv):
    """The modules a command loads, from python -X importtime of a real run in the root."""
    res = subprocess.run([PY, "-X", "importtime", "-m", "kvm", *argv], env=bed.env, cwd=bed.root,
                         capture_output=True, text=True)
    return {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:") and "|" in line} - {"package"}


def cost_ms(target, preloaded, runs):
    """Median cumulative import time of `target` after `preloaded` are imported, in ms."""
    names = sorted(m for m in preloaded if "__main__" not in m)
    code = (f"import importlib\nfor m in {names!r}:\n    try:\n        importlib.import_module(m)\n"
            f"    except Exception:\n        pass\nimport {target}")
    samples = []
    for _ in range(runs):
        res = subprocess.run([PY, "-X", "importtime", "-c", code], capture_output=True, text=True,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        rows = [line for line in res.stderr.splitlines() if line.rstrip().endswith(f"| {target}")
                or line.rstrip().endswith(f"|   {target}")]
        last = [r for r in rows if r.split("|")[-1].strip() == target]
        samples.append(int(last[-1].split("|")[1]) / 1000 if last else 0.0)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    bed = Bed()
    try:
        bed.add_vms(10)
        loads = {name: loaded_by(bed, argv) for name, argv in COMMANDS.items()}
    finally:
        bed.close()
    rows = []
    for module, line, target in lazy_imports():
        saves = {}
        for name, mods in loads.items():
            if module in mods and target not in mods:
                saves[name] = cost_ms(target, mods, args.runs)
        rows.append({"site": f"{module}:{line}", "target": target, "saves_ms": saves})
    big = [r for r in rows if any(v >= THRESHOLD_MS for v in r["saves_ms"].values())]
    print(f"{len(rows)} function-level imports in kvm/; {len(big)} save status, vminfo or vmlist "
          f"{THRESHOLD_MS} ms or more:")
    print(f"{'where':42} {'imports':34} {'status':>7} {'vminfo':>7} {'vmlist':>7}")
    for r in sorted(big, key=lambda r: -max(r["saves_ms"].values())):
        cells = [f"{r['saves_ms'][c]:7.1f}" if c in r["saves_ms"] else f"{'-':>7}" for c in COMMANDS]
        print(f"{r['site']:42} {r['target']:34} {' '.join(cells)}")
    print(f"the other {len(rows) - len(big)} save none of the three commands {THRESHOLD_MS} ms "
          "(their module is not loaded by them, or the module they name is loaded anyway)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
