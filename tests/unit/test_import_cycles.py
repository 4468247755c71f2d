"""No two modules of the package import each other, even through others:
one of them would hold something that belongs to the other."""

from __future__ import annotations

import grimp


def test_the_package_has_no_import_cycles():
    graph = grimp.build_graph("marathon")
    cycles = sorted({
        tuple(sorted((a, b)))
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if graph.chain_exists(importer=b, imported=a)
    })
    assert cycles == []
