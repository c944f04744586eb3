"""The scored answer as a token tree: every continuation the judge may choose, laid out at once.

After the pre-filled ``- your judgement->`` the answer can only go a few ways: ``defective`` (the
pass path needs no more tokens), then — when the recipe lists ``defect_modes`` — one of those
modes, then ``- defect position->X:`` with one of the grid's column labels and ``, Y:`` with one
of its row labels.  :class:`AnswerTree` holds all of these as one trie of tokens (shared
beginnings stored once).  Because the trie is fixed for a recipe's grid, every position whose
next-token logits the judge may need can be computed in **one** forward pass with a tree-shaped
attention mask (each node sees the prompt and its own ancestors only, at the position it would
have in a plain sequence); :func:`walk` then makes the same greedy constrained choices a
step-by-step decoder would make, from those logits.

The choices (as in the step-by-step judge): ``p_defect`` is the softmax mass of the first tokens
of the defect word over that of both words, at the judgement position; at every node with more
than one child the child with the highest logit wins, its probability being its share of the
softmax restricted to the children; a label's probability is the product over its decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """One token of the tree (``parent`` -1: the judgement position, which is not a node)."""

    token: int
    parent: int
    depth: int  # 1 for the root's children
    children: dict[int, int] = field(default_factory=dict)  # token -> node index
    ends: list[tuple[str, int]] = field(default_factory=list)  # (segment, choice) ending here


@dataclass
class AnswerTree:
    """The trie of defect answers for one grid (and mode list); see the module docstring."""

    nodes: list[Node]
    root_children: dict[int, int]
    modes: list[str]
    columns: list[str]
    rows: list[str]

    def fed(self) -> list[int]:
        """Indices of the nodes fed to the model: all but the leaves (no logits needed after)."""
        return [i for i, n in enumerate(self.nodes) if n.children]

    def decision_nodes(self) -> list[int]:
        """Fed nodes whose logits decide something (more than one child)."""
        return [i for i, n in enumerate(self.nodes) if len(n.children) > 1]

    def path(self, node: int) -> list[int]:
        """Tokens from the root's child down to ``node`` (inclusive)."""
        out: list[int] = []
        while node >= 0:
            out.append(self.nodes[node].token)
            node = self.nodes[node].parent
        return out[::-1]


def build_tree(
    ids: Callable[[str], list[int]],
    *,
    defect_word: str,
    columns: Sequence[str],
    rows: Sequence[str],
    modes: Sequence[str] = (),
) -> AnswerTree:
    """The answer trie, tokenized piece by piece exactly as the step-by-step judge feeds it.

    ``ids``: text -> token ids without special tokens.  Each column candidate is its label plus
    the first token of ``", Y:"``, each row candidate its label plus the first token of a newline
    (so ``1`` and ``10`` differ), each mode its text plus a newline.  Raises ValueError when two
    labels tokenize the same.
    """
    newline = ids("\n")[:1]
    col_end = ids(", Y:")

    def cands(labels: Sequence[str], end: list[int], what: str) -> list[list[int]]:
        out = [ids(str(lab).strip() if what == "mode" else str(lab)) + end for lab in labels]
        if len({tuple(c) for c in out}) != len(out):
            raise ValueError(f"two {what} labels tokenize the same: {list(labels)}")
        return out

    col_c = cands(columns, col_end[:1], "column")
    row_c = cands(rows, newline, "row")
    mode_c = cands(modes, newline, "mode") if modes else []
    nodes: list[Node] = []
    root: dict[int, int] = {}

    def add(parent: int, tokens: list[int]) -> int:
        for t in tokens:
            kids = root if parent < 0 else nodes[parent].children
            if t not in kids:
                depth = 1 if parent < 0 else nodes[parent].depth + 1
                nodes.append(Node(token=t, parent=parent, depth=depth))
                kids[t] = len(nodes) - 1
            parent = kids[t]
        return parent

    def mark(node: int, seg: str, k: int) -> None:
        if (seg, k) not in nodes[node].ends:
            nodes[node].ends.append((seg, k))

    def address_from(node: int) -> None:
        for ci, col in enumerate(col_c):
            c_end = add(node, col)
            mark(c_end, "column", ci)
            r_start = add(c_end, col_end[1:])
            for ri, row in enumerate(row_c):
                mark(add(r_start, row), "row", ri)

    if mode_c:
        trunk = add(-1, ids(f"{defect_word}\n- defect mode->"))
        for mi, mode in enumerate(mode_c):
            m_end = add(trunk, mode)
            mark(m_end, "mode", mi)
            address_from(add(m_end, ids("- defect position->X:")))
    else:
        address_from(add(-1, ids(f"{defect_word}\n- defect position->X:")))
    return AnswerTree(nodes, root, list(modes), [str(c) for c in columns], [str(r) for r in rows])


@dataclass
class Walk:
    """The choices made on a tree: address and mode with their probabilities."""

    mode: int | None
    mode_p: float | None
    column: int
    row: int
    column_p: float
    row_p: float
    path: list[int]  # tokens of the chosen answer after the judgement position


def walk(tree: AnswerTree, logits_at: Callable[[int, list[int]], Any]) -> Walk:
    """Greedy constrained choice down the tree.

    ``logits_at(node, path)``: the next-token logits after ``node`` (-1: the judgement position),
    ``path`` being the tokens chosen so far after the judgement position; it is only called at
    nodes with more than one child, in path order (a step-by-step decoder can feed ``path``).
    """
    import torch

    node, kids = -1, tree.root_children
    path: list[int] = []
    probs: dict[str, float] = {"mode": 1.0, "column": 1.0, "row": 1.0}
    chosen: dict[str, int] = {}
    seg = "mode" if tree.modes else "column"
    while kids:
        toks = sorted(kids)
        if len(toks) == 1:
            tok = toks[0]
        else:
            logits = logits_at(node, path)
            sub = logits[torch.tensor(toks, device=logits.device)].float()
            p = torch.softmax(sub, dim=0)
            k = int(torch.argmax(p))
            tok = toks[k]
            probs[seg] *= float(p[k])
        node = kids[tok]
        path.append(tok)
        for s, k in tree.nodes[node].ends:
            if s not in chosen:
                chosen[s] = k
                seg = {"mode": "column", "column": "row"}.get(s, s)
        if "row" in chosen:
            break
        kids = tree.nodes[node].children
    return Walk(
        mode=chosen.get("mode"),
        mode_p=probs["mode"] if tree.modes else None,
        column=chosen["column"],
        row=chosen["row"],
        column_p=probs["column"],
        row_p=probs["row"],
        path=path,
    )


__all__ = ["AnswerTree", "Node", "Walk", "build_tree", "walk"]
