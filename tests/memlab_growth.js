// Who holds what grew between two heap snapshots, as memlab reads them.
//
//   node memlab_growth.js before.heapsnapshot after.heapsnapshot
//
// memlab (@memlab/heap-analysis) parses both files and computes dominators,
// retained sizes and shortest paths from the root. Objects in the second
// snapshot whose ids the first lacks are the growth; getDominatorNodes keeps
// those no other new object dominates; their immediate dominators are what
// holds the growth. Prints JSON: the holders, largest first, each with its
// retained size in both snapshots and its path from the root.
'use strict';
const {getFullHeapFromFile, getDominatorNodes} = require('@memlab/heap-analysis');

function pathFromRoot(node) {
  const path = [];
  let seen = new Set();
  while (node && node.pathEdge && !seen.has(node.id)) {
    seen.add(node.id);
    path.unshift({edge: String(node.pathEdge.name_or_index), node: node.name});
    node = node.pathEdge.fromNode;
  }
  return path;
}

(async () => {
  const [beforeFile, afterFile] = process.argv.slice(2);
  const before = await getFullHeapFromFile(beforeFile);
  const after = await getFullHeapFromFile(afterFile);
  const old = new Set();
  before.nodes.forEach(n => { old.add(n.id); });
  const grown = new Set();
  let grownBytes = 0;
  after.nodes.forEach(n => {
    if (!old.has(n.id) && n.self_size > 0) {
      grown.add(n.id);
      grownBytes += n.self_size;
    }
  });
  const holders = new Map();
  getDominatorNodes(grown, after).forEach(id => {
    const n = after.getNodeById(id);
    const d = n.dominatorNode;
    if (!d) return;
    let h = holders.get(d.id);
    if (!h) {
      const prior = before.getNodeById(d.id);
      h = {id: d.id, name: d.name, type: d.type, retained: d.retainedSize,
           retained_before: prior ? prior.retainedSize : 0, new_objects: 0, new_bytes: 0,
           new_classes: {}, path: pathFromRoot(d)};
      holders.set(d.id, h);
    }
    h.new_objects += 1;
    h.new_bytes += n.retainedSize;
    const cls = n.type === 'object' ? n.name : `(${n.type})`;
    h.new_classes[cls] = (h.new_classes[cls] || 0) + 1;
  });
  const list = [...holders.values()].sort((a, b) => b.new_bytes - a.new_bytes);
  process.stdout.write(JSON.stringify({
    nodes_before: before.nodes.length, nodes_after: after.nodes.length,
    grown_objects: grown.size, grown_bytes: grownBytes, holders: list.slice(0, 10),
  }, null, 1) + '\n');
})().catch(e => { console.error(e); process.exit(1); });
