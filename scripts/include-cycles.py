#!/usr/bin/env python3
"""Report include cycles between the modules of a source directory.

A file's module is the public header it stands for: x.h and x.c are module
x, x_internal.h is x's when x.h exists, and another file belongs to the
module of the first header it includes when it is a private header itself
(lc_internal.h -> lifecycle.h), when that header is a private one
("conn_in.c" -> conn_internal.h: module conn) or when it names the file's
prefix ("service_dir.c" -> service.h) or shares it ("ctl_cp.c" -> ctl_fs.h:
a group of files behind one header, which each includes first); anything
else (main.c) is a module of its own.
Module A depends on module B when a file of A includes a header of B. A
cycle is a set of modules that depend on each other, directly or through
others (a strongly connected component of more than one module). Only
quoted includes of headers in the directory count (<system> headers and
other directories, such as common/, are leaves).

usage: include-cycles.py [DIR...]   (default: agent)
Prints each cycle with the includes that make it; exits 1 if there is one.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return INCLUDE.findall(f.read())


def modules(d):
    files = sorted(f for f in os.listdir(d) if f.endswith((".c", ".h")))
    incs = {f: [i for i in includes(os.path.join(d, f)) if i in files] for f in files}
    memo = {}

    def module(f, seen=()):
        if f in memo:
            return memo[f]
        base = f.rsplit(".", 1)[0]
        first = incs[f][0] if incs[f] and incs[f][0] not in seen else None
        if f.endswith(".h") and not f.endswith("_internal.h"):
            m = base
        elif f.endswith("_internal.h") and base[: -len("_internal")] + ".h" in files:
            m = base[: -len("_internal")]  # x_internal.h of x.h
        elif f.endswith(".c") and base + ".h" in files:
            m = base  # x.c of x.h
        elif first and (f.endswith("_internal.h") or first.endswith("_internal.h") or
                        base.startswith(first[:-2] + "_") or
                        (f.endswith(".c") and "_" in base and
                         base.split("_")[0] == first[:-2].split("_")[0])):
            # a private header of another name (lc_internal.h -> lifecycle.h),
            # or x_y.c: its module's private or public header, x.h or x_z.h
            # (ctl_cp.c -> ctl_fs.h, the header of the file commands)
            m = module(first, seen + (f,))
        else:
            m = base  # a program (main.c) or a module without a header
        memo[f] = m
        return m

    edges = {}  # module -> {module: [(file, header)]}
    for f in files:
        a = module(f)
        edges.setdefault(a, {})
        for h in incs[f]:
            b = module(h)
            if b != a:
                edges[a].setdefault(b, []).append((f, h))
    return edges


def cycles(edges):
    """Tarjan's strongly connected components, the ones of two or more."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    dirs = argv[1:] or ["agent"]
    bad = 0
    for d in dirs:
        edges = modules(d)
        for comp in cycles(edges):
            bad = 1
            print("%s: include cycle between %s:" % (d, ", ".join(comp)))
            for a in comp:
                for b in comp:
                    for f, h in edges.get(a, {}).get(b, []):
                        print("  %s (%s) includes %s (%s)" % (f, a, h, b))
    if not bad:
        print("no include cycle between the modules of %s" % ", ".join(dirs))
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv))
