#!/usr/bin/env python3
"""Import circles between files of src/ (issue 12): file-level import graph of src/: `use crate::a::b::{..}` and `crate::a::b::x` paths,
resolved to the longest existing module file; prints strongly connected components >1."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split('/')
            if parts[-1] in ('mod',): parts = parts[:-1]
            if parts == ['lib'] or parts == ['main']: parts = []
            files[tuple(parts)] = p
def resolve(path):
    path = tuple(path)
    while path and path not in files: path = path[:-1]
    return path if path in files else None
def expand(prefix, body):
    # body: a::b::{c, d::e} style
    out = []
    body = body.strip()
    m = re.match(r'^([\w:]*?)\{(.*)\}$', body, re.S)
    if m:
        pre = [x for x in m.group(1).split('::') if x]
        depth = 0; cur = ''; items = []
        for ch in m.group(2):
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0: items.append(cur); cur = ''
            else: cur += ch
        items.append(cur)
        for it in items:
            if it.strip(): out += expand(prefix + pre, it)
    else:
        out.append(prefix + [x for x in body.split(' as ')[0].split('::') if x])
    return out
edges = {k: set() for k in files}
for mod, p in files.items():
    src = open(p).read()
    # strip tests module
    i = src.find('#[cfg(test)]')
    if i >= 0: src = src[:i]
    me = list(mod)
    base = me
    for m in re.finditer(r'\buse\s+((?:crate|super|self)::[^;]+);', src, re.S):
        for path in expand([], m.group(1)):
            if path[0] == 'crate': path = path[1:]
            elif path[0] == 'super':
                b = list(base)
                while path and path[0] == 'super': b = b[:-1]; path = path[1:]
                path = b + path
            elif path[0] == 'self': path = list(base) + path[1:]
            t = resolve(path)
            if t is not None and t != mod: edges[mod].add(t)
    for m in re.finditer(r'\bcrate::((?:\w+::)+)', src):
        t = resolve([x for x in m.group(1).split('::') if x])
        if t is not None and t != mod: edges[mod].add(t)
# ignore edges into a parent mod.rs that only re-exports? keep all.
idx = {}; low = {}; st = []; on = set(); out = []; n = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(comp)
for v in files:
    if v not in idx: sc(v)
for c in out:
    print('circle:', ', '.join(files[x] for x in c))
    for a in c:
        for b in edges[a]:
            if b in c: print('   ', files[a], '->', files[b])
print(len(out), 'circles')
