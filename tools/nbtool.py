#!/usr/bin/env python3
"""Edit notebooks as text without losing what makes them notebooks.

`nbs/` is the source of truth. This developer tool converts a notebook to a "percent" text file and back,
keeping cell ids (so nbdev's `# %% ... #cellid` markers stay stable) and cell tags (papermill's
`parameters`, nbconvert's `remove_cell`). Outputs are dropped on the way back; run the notebook (nbdev_test,
papermill or JupyterLab) to refill them.

    python tools/nbtool.py nb2py nbs/00_core.ipynb /tmp/00_core.py   # notebook -> text
    python tools/nbtool.py py2nb /tmp/00_core.py nbs/00_core.ipynb   # text -> notebook

Text format: a cell starts with a line `# %%` (code) or `# %% [markdown]`, optionally followed by
`id=<cell id>` and `tags=<json list>`. Markdown lines are written with a leading `# `.
"""
import json, re, sys, uuid
from pathlib import Path
import nbformat

_HDR = re.compile(r'^# %%(?P<md> \[markdown\])?(?P<rest>.*)$')


def nb2py(src, dst):
    nb = nbformat.read(src, as_version=4)
    out = []
    for c in nb.cells:
        hdr = '# %%' + (' [markdown]' if c.cell_type == 'markdown' else '')
        if c.get('id'): hdr += f' id={c.id}'
        tags = c.get('metadata', {}).get('tags')
        if tags: hdr += ' tags=' + json.dumps(tags)
        out.append(hdr)
        if c.cell_type == 'markdown': out += [('# ' + l) if l else '#' for l in c.source.split('\n')]
        else: out += c.source.split('\n')
        out.append('')
    Path(dst).write_text('\n'.join(out))


def _new_cell(kind, src, cid, tags):
    src = '\n'.join(src).strip('\n')
    c = nbformat.v4.new_markdown_cell(src) if kind == 'markdown' else nbformat.v4.new_code_cell(src)
    c.id = cid or uuid.uuid4().hex[:8]
    if tags: c.metadata['tags'] = tags
    return c


def py2nb(src, dst):
    cells, cur = [], None
    for line in Path(src).read_text().split('\n'):
        m = _HDR.match(line)
        if m:
            if cur: cells.append(_new_cell(*cur))
            rest = m['rest']
            cid = re.search(r'id=(\S+)', rest)
            tags = re.search(r'tags=(\[.*\])', rest)
            cur = ('markdown' if m['md'] else 'code', [], cid and cid[1], tags and json.loads(tags[1]))
            continue
        if cur is None:
            if line.strip(): raise SystemExit(f'{src}: text before the first "# %%" cell marker: {line!r}')
            continue
        if cur[0] == 'markdown': line = line[2:] if line.startswith('# ') else line.lstrip('#')
        cur[1].append(line)
    if cur: cells.append(_new_cell(*cur))
    old = nbformat.read(dst, as_version=4) if Path(dst).exists() else None
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = (old.metadata if old else
                   {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}})
    nbformat.validate(nb)
    nbformat.write(nb, dst)


if __name__ == '__main__':
    if len(sys.argv) != 4 or sys.argv[1] not in ('nb2py', 'py2nb'):
        raise SystemExit(__doc__)
    {'nb2py': nb2py, 'py2nb': py2nb}[sys.argv[1]](sys.argv[2], sys.argv[3])
