"""Read a .heapsnapshot back for the tests: the graph, by node index, and
the format's invariants (every edge points at a node, names are in the
string table, edge counts add up, ids are unique, all is reachable from
the root)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Node:
    index: int
    type: str
    name: str
    id: int
    size: int
    edges: list[tuple[str, str | int, int]] = field(default_factory=list)

    def child(self, graph: Graph, name: str | int, etype: str | None = None) -> Node:
        """The node this one refers to by the edge called ``name``."""
        for t, n, to in self.edges:
            if n == name and (etype is None or t == etype):
                return graph.nodes[to]
        raise KeyError(f"{self.name!r} has no edge {name!r}: {[n for _, n, _ in self.edges][:50]}")


class Graph:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        snap = data["snapshot"]
        meta = snap["meta"]
        nf, ef = len(meta["node_fields"]), len(meta["edge_fields"])
        assert meta["node_fields"][:5] == ["type", "name", "id", "self_size", "edge_count"]
        assert meta["edge_fields"] == ["type", "name_or_index", "to_node"]
        ntypes, etypes = meta["node_types"][0], meta["edge_types"][0]
        raw_nodes, raw_edges, strings = data["nodes"], data["edges"], data["strings"]
        count, ecount = snap["node_count"], snap["edge_count"]
        assert len(raw_nodes) == count * nf, "node_count disagrees with the nodes array"
        assert len(raw_edges) == ecount * ef, "edge_count disagrees with the edges array"
        assert all(isinstance(x, int) and 0 <= x < 2**32 for x in raw_nodes)
        assert all(isinstance(x, int) and 0 <= x < 2**32 for x in raw_edges)
        self.strings: list[str] = strings
        self.nodes: list[Node] = []
        e = 0
        for i in range(count):
            t, name, nid, size, n_edges = raw_nodes[i * nf : i * nf + 5]
            assert name < len(strings), f"node {i}: name index {name} out of range"
            node = Node(i, ntypes[t], strings[name], nid, size)
            for _ in range(n_edges):
                et, en, to = raw_edges[e * ef : e * ef + 3]
                assert to % nf == 0 and to // nf < count, f"edge {e} points at no node"
                etype = etypes[et]
                if etype in ("element", "hidden"):
                    label: str | int = en
                else:
                    assert en < len(strings), f"edge {e}: name index out of range"
                    label = strings[en]
                node.edges.append((etype, label, to // nf))
                e += 1
            self.nodes.append(node)
        assert e == ecount, "the nodes' edge counts do not add up to edge_count"
        ids = [n.id for n in self.nodes]
        assert len(set(ids)) == len(ids), "node ids are not unique"
        self.root = self.nodes[0]
        assert self.root.type == "synthetic"

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def reachable(self) -> int:
        seen = {0}
        stack = [0]
        while stack:
            for _, _, to in self.nodes[stack.pop()].edges:
                if to not in seen:
                    seen.add(to)
                    stack.append(to)
        return len(seen)

    def root_child(self, name: str) -> Node:
        for _, _, to in self.root.edges:
            if self.nodes[to].name == name:
                return self.nodes[to]
        raise KeyError(name)

    def module(self, name: str) -> Node:
        return self.root_child("(Modules)").child(self, name)

    def by_name(self, name: str) -> list[Node]:
        return [n for n in self.nodes if n.name == name]

    def retainers(self, node: Node) -> list[tuple[Node, str, str | int]]:
        return [(n, t, label) for n in self.nodes for t, label, to in n.edges if to == node.index]
