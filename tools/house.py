#!/usr/bin/env python3
"""The house's measurements: export-cell sizes, modules' lengths, and whether an export changed any code.

    python tools/house.py sizes                 # figures over nbs/*.ipynb (issue 23's table) + the worst cells
    python tools/house.py sizes --per-notebook  # the same, one line per notebook
    python tools/house.py code REV              # exported code of baldro_nb/ at REV vs now, cell markers ignored:
                                                # splitting a cell (or moving a definition between cells of one
                                                # notebook) leaves the code equal; a module split shows as moved lines

Lines of an export cell: its source lines without the `#| export` directive and blank lines at its ends.
A definition: a top-level `def`, `async def`, `class` or `@patch`ed function.
"""
import ast, json, re, statistics, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export_cells(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    for c in nb["cells"]:
        if c["cell_type"] != "code": continue
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        lines = src.split("\n")
        if not any(re.match(r"#\|\s*export", l) for l in lines[:3]): continue
        body = [l for l in lines if not re.match(r"#\|", l)]
        while body and not body[0].strip(): body.pop(0)
        while body and not body[-1].strip(): body.pop()
        yield c.get("id"), body


def n_defs(body):
    try: tree = ast.parse("\n".join(body))
    except SyntaxError: return 1
    return sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)


def sizes(per_notebook=False):
    rows = []
    for nb in sorted((ROOT/"nbs").glob("*.ipynb")):
        for cid, body in export_cells(nb): rows.append((nb.name, cid, len(body), n_defs(body)))
    def fig(rs):
        n = [r[2] for r in rs]
        q = statistics.quantiles(n, n=10)[-1] if len(n) > 1 else n[0]
        return (f"{len(rs)} export cells, lines median {statistics.median(n):g} / p90 {q:g} / max {max(n)}, "
                f"over 40: {sum(x > 40 for x in n)}, more than one definition: {sum(r[3] > 1 for r in rs)} "
                f"({100 * sum(r[3] > 1 for r in rs) / len(rs):.0f} %)")
    print(fig(rows))
    if per_notebook:
        for name in sorted({r[0] for r in rows}): print(f"  {name:28s}", fig([r for r in rows if r[0] == name]))
    print("largest cells:", ", ".join(f"{a}#{b} {c}" for a, b, c, _ in sorted(rows, key=lambda r: -r[2])[:10]))
    mods = sorted(((len(p.read_text().splitlines()), p.name) for p in (ROOT/"baldro_nb").glob("*.py")
                   if not p.name.startswith("_")), reverse=True)
    print("modules over 480 lines:", ", ".join(f"{m} {n}" for n, m in mods if n > 480) or "none")


def _code(text):
    return [l for l in text.splitlines() if l.strip() and not l.startswith("# %% ")]


def code(rev):
    now = {p.name: _code(p.read_text()) for p in (ROOT/"baldro_nb").glob("*.py") if p.name != "_modidx.py"}
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "baldro_nb/"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    then = {Path(n).name: _code(subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, capture_output=True,
                                               text=True, check=True).stdout)
            for n in names if n.endswith(".py") and not n.endswith("_modidx.py")}
    same = [m for m in now if then.get(m) == now[m]]
    print(f"identical code (cell markers and blank lines ignored): {len(same)} of {len(set(now) | set(then))} modules")
    for m in sorted(set(now) | set(then)):
        if then.get(m) != now.get(m):
            a, b = set(then.get(m, [])), set(now.get(m, []))
            print(f"  {m}: {len(b - a)} lines only now, {len(a - b)} lines only at {rev}"
                  + ("" if m in now else " (module gone)") + ("" if m in then else " (new module)"))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "sizes": sizes("--per-notebook" in sys.argv)
    elif len(sys.argv) == 3 and sys.argv[1] == "code": code(sys.argv[2])
    else: sys.exit(__doc__)
