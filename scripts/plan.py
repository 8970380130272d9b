#!/usr/bin/env python3
"""Merge list with dependency edges and per-package USE, from Portage's own resolver.

Runs inside a build root's environment (ROOT, PORTAGE_CONFIGROOT, PORTAGE_OVERRIDE_EPREFIX
set by binfarm), resolves TARGETS as `emerge --pretend` would, and prints JSON on stdout:

  {"targets": [...], "options": [...],
   "merge_list": [{"cpv", "slot", "subslot", "repo", "type" ("ebuild"|"binary"),
                   "use" (enabled flags of IUSE), "iuse", "build_id"}...],   # in merge order
   "edges": [{"from": CPV, "to": CPV, "kinds": ["buildtime", ...]}...]}     # from needs to

Edges are kept only between packages of the merge list (deps already installed in ROOT
are satisfied and not scheduled). Exit status 1 with the resolver's problems on stderr when
the targets cannot be resolved.

usage: plan.py [--usepkg] [--emptytree] TARGET...
"""

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--usepkg", action="store_true", help="consider existing binpkgs (emerge --usepkg)")
    parser.add_argument("--emptytree", action="store_true", help="plan the whole dependency closure (emerge -e)")
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args()

    # Portage prints progress on stdout; keep stdout for the JSON only.
    json_out = sys.stdout
    sys.stdout = sys.stderr

    os.environ.setdefault("NOCOLOR", "true")
    from _emerge.actions import load_emerge_config
    from _emerge.create_depgraph_params import create_depgraph_params
    from _emerge.depgraph import backtrack_depgraph
    from _emerge.Package import Package

    config = load_emerge_config()
    settings = config.target_config.settings
    trees = config.trees

    myopts = {"--pretend": True, "--buildpkg": True}
    options = ["--pretend", "--buildpkg"]
    if args.usepkg:
        myopts["--usepkg"] = True
        options.append("--usepkg")
    if args.emptytree:
        myopts["--emptytree"] = True
        options.append("--emptytree")
    params = create_depgraph_params(myopts, "")
    success, graph, _favorites = backtrack_depgraph(settings, trees, myopts, params, "", args.targets, None)
    if not success:
        graph.display_problems()
        print("plan.py: cannot resolve " + " ".join(args.targets), file=sys.stderr)
        return 1

    merge_list = [
        node
        for node in graph.altlist()
        if isinstance(node, Package) and node.operation == "merge"
    ]
    planned = set(merge_list)
    digraph = graph._dynamic_config.digraph

    packages = []
    edges = []
    for pkg in merge_list:
        iuse = sorted(pkg.iuse.all)
        packages.append(
            {
                "cpv": str(pkg.cpv),
                "slot": pkg.slot,
                "subslot": pkg.sub_slot,
                "repo": pkg.repo,
                "type": pkg.type_name,
                "use": sorted(f for f in pkg.use.enabled if f in pkg.iuse.all),
                "iuse": iuse,
                "build_id": getattr(pkg.cpv, "build_id", None),
            }
        )
        for child in digraph.child_nodes(pkg):
            if child not in planned or child is pkg:
                continue
            priorities = digraph.nodes[pkg][0].get(child, [])
            kinds = sorted({str(p) for p in priorities if str(p)})
            edges.append({"from": str(pkg.cpv), "to": str(child.cpv), "kinds": kinds})

    edges.sort(key=lambda e: (e["from"], e["to"]))
    json.dump(
        {"targets": args.targets, "options": options, "merge_list": packages, "edges": edges},
        json_out,
        indent=2,
    )
    json_out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
