"""Project-level checks: the package is what the notebooks export, and the dependency sources agree."""
import configparser, re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def _cfg():
    c = configparser.ConfigParser(delimiters=["="]); c.read(ROOT/"settings.ini"); return c["DEFAULT"]


def test_every_default_exp_has_its_module():
    for nb in sorted((ROOT/"nbs").glob("[0-9]*.ipynb")):
        cells = nbformat.read(nb, as_version=4).cells
        mods = [m[1] for c in cells if c.cell_type == "code" for m in [re.search(r"#\|\s*default_exp\s+(\S+)", c.source)] if m]
        assert len(mods) == 1, f"{nb.name}: expected one default_exp, found {mods}"
        py = ROOT/"baldro_nb"/(mods[0].replace(".", "/") + ".py")
        assert py.exists(), f"{nb.name} exports {py.name} but it is missing: run nbdev_export"
        assert f"File to edit: ../nbs/{nb.name}" in py.read_text(), f"{py.name} was not generated from {nb.name}"


def test_settings_pin_the_nbdev2_stack_and_keep_tags():
    c = _cfg()
    dev = c["dev_requirements"].split()
    for pin in ("nbdev==2.4.14", "fastcore<2", "execnb<0.2", "ghapi<2", "fastgit<0.1"):
        assert pin in dev, pin
    assert c["allowed_cell_metadata_keys"].strip() == "tags"


def test_environment_yml_installs_from_settings_ini():
    env = (ROOT/"environment.yml").read_text()
    assert "-e .[dev]" in env and "torch==2.13.0" in env
    # no second dependency list: every other package comes from settings.ini
    pip_lines = [l.strip()[2:] for l in env.split("pip:")[1].splitlines() if l.strip().startswith("- ")]
    assert sorted(pip_lines) == sorted(["torch==2.13.0", "-e .[dev]"]), pip_lines


def test_readme_has_exactly_two_setup_commands():
    text = (ROOT/"README.md").read_text()
    block = text.split("## Set up")[1].split("\n## ")[0]
    cmds = [l for l in re.findall(r"```(?:bash)?\n(.*?)```", block, re.S)]
    lines = [l for c in cmds for l in c.strip().splitlines() if l.strip() and not l.strip().startswith("#")]
    assert len(lines) == 2, lines
    assert "tools/test.sh" in lines[1] and "tools/test.sh" in (ROOT/".ci/run").read_text()


def test_papermill_sees_every_parameter_of_every_experiment_notebook():
    "papermill drops a parameter whose comment it cannot parse (one with `>=` or `=`): the runner then refuses the parameter."
    import ast, json
    from papermill import inspect_notebook
    for nb in sorted((ROOT/"nbs/experiments").glob("*.ipynb")):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        assigned = {t.id for n in ast.parse("".join(cell["source"])).body if isinstance(n, ast.Assign) for t in n.targets
                    if isinstance(t, ast.Name)}
        assert set(inspect_notebook(str(nb))) == assigned, (nb.name, assigned ^ set(inspect_notebook(str(nb))))
