"""Scored mode at the cost of one forward pass: constant prefix cached, answer tree, CUDA graph.

Every part of a recipe is asked the same way: the same text, the same golden image, a test image
of the same size.  :class:`OnePass` exploits that:

* **Prefix KV cache.**  The prompt up to the test image (system text, instruction, golden image's
  vision tokens) is computed once and its keys/values are kept; a part only runs the test image's
  vision tokens, the rest of the prompt and the answer tree on top.  Nothing is copied per part:
  :class:`_PrefixKV` hands each layer ``cat(prefix, new)`` and never grows.  Positions are the
  full sequence's own (Qwen-VL's 3-D M-RoPE positions from ``get_rope_index`` over the whole
  prompt): Hugging Face's plain cache reuse computes the positions of a suffix that holds an image
  as if it were text (``cache length + rope_deltas``), which is what moved its logits.
* **Answer tree in the same pass.**  The tokens of every possible answer after the judgement
  (:mod:`pipeline.vlm.answer_tree`) follow the prompt in the same forward pass under a tree-shaped
  attention mask, so ``p_defect``, the mode, the column and the row all come from that one pass.
* **Static shapes, captured.**  The token layout is fixed per recipe, so the whole per-part
  forward (test image's vision tower, language model, the logits kept) is captured once in a CUDA
  graph at warm-up and replayed per part (scope ``all``); where a vision tower cannot be captured
  it runs eagerly and the language model is replayed (scope ``lm``); ``eager`` otherwise.

Families: Qwen2-VL, Qwen2.5-VL and Llava/Pixtral take the cached path; others (Llama-3.2-Vision,
whose images enter through cross-attention) take the tree in one full forward pass without the
prefix cache (:meth:`OnePass.full_forward`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.vlm.answer_tree import AnswerTree

log = logging.getLogger(__name__)

CACHED_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "llava"}


def core_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def tree_mask(n_ctx: int, n_lin: int, tree: AnswerTree, fed: list[int]) -> Any:
    """Boolean (Q, K) mask: ``n_lin`` causal queries after ``n_ctx`` cached keys, then the tree.

    Tree node queries see the context, the whole linear part, their fed ancestors and themselves.
    """
    import torch

    q = n_lin + len(fed)
    k = n_ctx + q
    mask = torch.zeros(q, k, dtype=torch.bool)
    mask[:n_lin, :n_ctx] = True
    mask[:n_lin, n_ctx : n_ctx + n_lin] = torch.ones(n_lin, n_lin, dtype=torch.bool).tril()
    where = {node: i for i, node in enumerate(fed)}
    for i, node in enumerate(fed):
        row = n_lin + i
        mask[row, : n_ctx + n_lin] = True
        j = node
        while j >= 0:
            mask[row, n_ctx + n_lin + where[j]] = True
            j = tree.nodes[j].parent
    return mask


def to_attention_mask(mask: Any, attn_impl: str, dtype: Any, device: Any) -> Any:
    """A (1, 1, Q, K) mask in the form the attention implementation takes (bool or additive)."""
    import torch

    m = mask[None, None].to(device)
    if attn_impl in ("sdpa", "flex_attention"):
        return m
    add = torch.zeros(m.shape, dtype=dtype, device=device)
    return add.masked_fill(~m, torch.finfo(dtype).min)


def _prefix_kv_class() -> type:
    from transformers import DynamicCache

    class _PrefixKV(DynamicCache):
        """A read-only prefix cache: each layer gets ``cat(prefix, new)``; nothing is stored."""

        def __init__(self, kv: list[tuple[Any, Any]]) -> None:
            super().__init__()
            self.kv = kv

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            import torch

            pk, pv = self.kv[layer_idx]
            return torch.cat([pk, key_states], dim=-2), torch.cat([pv, value_states], dim=-2)

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return int(self.kv[0][0].shape[-2])

    return _PrefixKV


@dataclass
class Plan:
    """Everything fixed for one recipe layout (prompt text, image sizes, grid, mode list)."""

    key: tuple
    split: int  # first token of the test image
    n_lin: int  # suffix tokens (test image to the end of the pre-fill)
    fed: list[int]  # tree nodes fed
    keep: list[int]  # query rows whose logits are kept: root first, then decision nodes
    keep_nodes: list[int]  # -1 then the decision nodes, parallel to ``keep``
    child_tokens: Any  # (len(keep)-1, max children) long, padded with the first child
    golden_digest: str = ""
    prefix_kv: list = field(default_factory=list)
    static: dict[str, Any] = field(default_factory=dict)
    graph: Any = None
    scope: str = "eager"  # all | lm | eager
    capture_s: float = 0.0
    note: str = ""


class _ChildLogits:
    """{decision node: a vocabulary-sized row holding its children's logits, -inf elsewhere},
    each row built only when the walk asks for it (a handful of the tree's nodes per part)."""

    def __init__(self, plan: Plan, sub: Any, vocab: int) -> None:
        self.index = {node: i for i, node in enumerate(plan.keep_nodes[1:])}
        self.plan, self.sub, self.vocab = plan, sub, vocab

    def __getitem__(self, node: int) -> Any:
        import torch

        i = self.index[node]
        row = torch.full((self.vocab,), float("-inf"))
        row[self.plan.child_tokens[i]] = self.sub[i]
        return row


class OnePass:
    """Runs a scored prompt and its answer tree in one forward pass (see the module docstring)."""

    def __init__(self, model: Any, family: str, processor: Any, device: str, dtype: Any,
                 use_graphs: bool = True) -> None:
        """``model``: the loaded model; ``use_graphs``: capture CUDA graphs on a CUDA device."""
        import torch

        self.torch = torch
        self.model = model
        self.core = core_model(model)
        self.family = family
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.cached = family in CACHED_FAMILIES
        self.use_graphs = use_graphs and device.startswith("cuda")
        cfg = self.core.config
        self.text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.attn_impl = getattr(self.text_cfg, "_attn_implementation", None) or "sdpa"
        self.plan: Plan | None = None
        self.plans_made = 0  # layouts planned so far: 1 on a steady line, warm-up included
        self.timing: dict[str, float] = {}
        self._kv_cls = _prefix_kv_class()

    # --- family parts --------------------------------------------------------------------------

    def _lm(self) -> Any:
        return self.core.model.language_model

    def _image_token_id(self) -> int:
        cfg = self.core.config
        for name in ("image_token_id", "image_token_index"):
            v = getattr(cfg, name, None)
            if isinstance(v, int):
                return v
        raise ValueError("model config names no image token")

    def _image_features(self, pv: Any, meta: dict[str, Any]) -> Any:
        """Vision tower + projector of the images in ``pv``: (tokens, hidden)."""
        torch = self.torch
        m = self.core.model
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            kw = dict(meta.get("vision_kwargs") or {})
            out = m.get_image_features(pv, meta["grid"], **kw)
        else:
            cfg = self.core.config
            out = m.get_image_features(
                pixel_values=pv,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                image_sizes=meta["image_sizes"],
                return_dict=True,
            )
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, (list, tuple)):
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats], dim=0)
        return feats.reshape(-1, feats.shape[-1])

    def _positions(self, inputs: dict[str, Any]) -> Any:
        """Position ids of the whole prompt: (3, 1, L) for Qwen-VL, (1, L) otherwise."""
        torch = self.torch
        ids = inputs["input_ids"]
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            pos, _ = self.core.model.get_rope_index(
                ids,
                inputs.get("mm_token_type_ids"),
                image_grid_thw=inputs.get("image_grid_thw"),
                attention_mask=inputs.get("attention_mask"),
            )
            return pos
        return torch.arange(ids.shape[1], device=ids.device)[None]

    def _split_images(self, inputs: dict[str, Any]) -> tuple[dict, dict]:
        """(golden-side pixel inputs, test-image pixel inputs) of the processor's output."""
        pv = inputs["pixel_values"]
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            grid = inputs["image_grid_thw"]
            n_last = int(grid[-1].prod())
            head = {"pv": pv[: pv.shape[0] - n_last], "grid": grid[:-1]}
            tail = {"pv": pv[pv.shape[0] - n_last :], "grid": grid[-1:]}
            return head, tail
        sizes = inputs["image_sizes"]
        return (
            {"pv": pv[:-1], "image_sizes": sizes[:-1]},
            {"pv": pv[-1:], "image_sizes": sizes[-1:]},
        )

    # --- plan ----------------------------------------------------------------------------------

    def _layout_key(self, inputs: dict[str, Any], tree: AnswerTree) -> tuple:
        ids = tuple(inputs["input_ids"][0].tolist())
        shapes = tuple(
            (k, tuple(v.shape)) for k, v in sorted(inputs.items()) if hasattr(v, "shape")
        )
        return (ids, shapes, id(tree))

    def _golden_digest(self, head: dict[str, Any]) -> str:
        pv = head["pv"]
        if pv.numel() == 0:
            return "-"
        data = pv.detach().float().cpu().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def prepare(self, inputs: dict[str, Any], tree: AnswerTree) -> Plan:
        """The plan for this layout (made once, re-made when the layout or golden changes)."""
        key = self._layout_key(inputs, tree)
        plan = self.plan
        if plan is not None and plan.key == key:
            if self.cached and plan.golden_digest:
                head, _ = self._split_images(inputs)
                if self._golden_digest(head) != plan.golden_digest:
                    self._make_prefix(plan, inputs)
            return plan
        t0 = time.perf_counter()
        plan = self._new_plan(key, inputs, tree)
        if self.cached:
            self._make_prefix(plan, inputs)
            self._make_static(plan, inputs, tree)
            if self.use_graphs:
                self._capture(plan)
        self.plan = plan
        self.timing["plan_s"] = round(time.perf_counter() - t0, 3)
        log.info(
            "vlm: one-pass plan: %d cached prefix tokens, %d per part (%d answer-tree tokens); "
            "graph scope %s, captured in %.1f s%s",
            plan.split if self.cached else 0, plan.n_lin + len(plan.fed), len(plan.fed),
            plan.scope, plan.capture_s, f" ({plan.note})" if plan.note else "",
        )
        return plan

    def _new_plan(self, key: tuple, inputs: dict[str, Any], tree: AnswerTree) -> Plan:
        torch = self.torch
        self.plans_made += 1
        ids = inputs["input_ids"][0]
        img = self._image_token_id()
        where = (ids == img).nonzero().flatten().tolist()
        split = 0
        if self.cached and where:
            # the test image's tokens: the last run of image-related tokens
            if self.family in ("qwen2_vl", "qwen2_5_vl"):
                split = where[-self._test_image_tokens(inputs)]
            else:  # Pixtral: [IMG]…[IMG_BREAK]…[IMG_END]; LLaVA: a run of image tokens
                split = self._last_image_start(ids, img)
        n_lin = int(ids.shape[0]) - split
        fed = tree.fed()
        dec = tree.decision_nodes()
        pos_of = {node: n_lin + i for i, node in enumerate(fed)}
        keep = [n_lin - 1] + [pos_of[d] for d in dec]
        kids = [sorted(tree.nodes[d].children) for d in dec]
        width = max((len(k) for k in kids), default=1)
        child = torch.tensor([k + [k[0]] * (width - len(k)) for k in kids] or [[0]],
                             dtype=torch.long)
        return Plan(key=key, split=split, n_lin=n_lin, fed=fed, keep=keep,
                    keep_nodes=[-1, *dec], child_tokens=child)

    def _test_image_tokens(self, inputs: dict[str, Any]) -> int:
        grid = inputs["image_grid_thw"]
        merge = int(self.core.config.vision_config.spatial_merge_size)
        return int(grid[-1].prod()) // (merge * merge)

    def _last_image_start(self, ids: Any, img: int) -> int:
        """First token of the last image's block (stops at the previous image's end token)."""
        proc = self.processor
        inner = {img, getattr(proc, "image_break_token_id", None)} - {None}
        end = getattr(proc, "image_end_token_id", None)
        seq = ids.tolist()
        last = max(i for i, t in enumerate(seq) if t == img or (end is not None and t == end))
        i = last - 1 if seq[last] == end else last
        while i >= 0 and seq[i] in inner:
            i -= 1
        return i + 1

    def _full_positions(self, inputs: dict[str, Any], tree: AnswerTree, fed: list[int]) -> Any:
        torch = self.torch
        pos = self._positions(inputs)
        last = pos[..., -1:]
        depth = torch.tensor([tree.nodes[n].depth for n in fed], device=pos.device)
        tpos = last + depth.view(*([1] * (pos.dim() - 1)), -1)
        return torch.cat([pos, tpos.to(pos.dtype)], dim=-1)

    def _make_prefix(self, plan: Plan, inputs: dict[str, Any]) -> None:
        """Run the prompt up to the test image once and keep its keys and values."""
        from transformers import DynamicCache

        t0 = time.perf_counter()
        ids = inputs["input_ids"][:, : plan.split]
        head, _ = self._split_images(inputs)
        emb = self.core.get_input_embeddings()(ids)
        if head["pv"].numel():
            feats = self._image_features(head["pv"], head).to(emb.dtype)
            at = (ids[0] == self._image_token_id()).nonzero().flatten()
            emb = emb.clone()
            emb[0, at] = feats
        pos = self._positions(inputs)[..., : plan.split]
        cache = DynamicCache(config=self.text_cfg)
        self._lm()(inputs_embeds=emb, position_ids=pos, past_key_values=cache, use_cache=True)
        kv = [(lay.keys, lay.values) for lay in cache.layers]
        if plan.prefix_kv and all(a.shape == b.shape for (a, _), (b, _) in zip(plan.prefix_kv, kv,
                                                                              strict=True)):
            # a new golden on a captured plan: the graph reads these very tensors, so overwrite
            for (ok, ov), (nk, nv) in zip(plan.prefix_kv, kv, strict=True):
                ok.copy_(nk)
                ov.copy_(nv)
        else:
            plan.prefix_kv = kv
        plan.golden_digest = self._golden_digest(head)
        self.timing["prefix_ms"] = round((time.perf_counter() - t0) * 1000, 1)

    def _make_static(self, plan: Plan, inputs: dict[str, Any], tree: AnswerTree) -> None:
        """Static inputs of the per-part pass: text embeddings, positions, mask, pixel buffer."""
        torch = self.torch
        ids = inputs["input_ids"]
        fed_tok = torch.tensor([[tree.nodes[n].token for n in plan.fed]], dtype=torch.long,
                               device=ids.device)
        q_ids = torch.cat([ids[:, plan.split :], fed_tok], dim=1)
        emb = self.core.get_input_embeddings()(q_ids)
        pos = self._full_positions(inputs, tree, plan.fed)[..., plan.split :]
        mask = tree_mask(plan.split, plan.n_lin, tree, plan.fed)
        attn = to_attention_mask(mask, self.attn_impl, emb.dtype, emb.device)
        _, tail = self._split_images(inputs)
        img_at = (q_ids[0] == self._image_token_id()).nonzero().flatten()
        meta: dict[str, Any] = {}
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            grid = tail["grid"]
            meta["grid"] = grid
            # the tower's sizes, positions and windows made once, on the host where the tower
            # reads them back (attention split sizes): no device sync left in the pass
            from transformers.vision_utils import get_vision_position_ids

            meta["grid"] = grid.cpu()
            vis = self.core.model.visual
            vpos = get_vision_position_ids(grid.to(emb.device), vis.spatial_merge_size)
            n = int(grid.prod())
            kw = {"position_ids": vpos, "cu_seqlens": torch.tensor([0, n], dtype=torch.int32)}
            if self.family == "qwen2_5_vl":
                from transformers.vision_utils import get_vision_window_index

                index, cu_windows = get_vision_window_index(
                    grid.cpu(), vis.spatial_merge_size, vis.window_size, vis.patch_size)
                kw.update(window_index=index.to(emb.device), cu_window_seqlens=cu_windows)
            meta["vision_kwargs"] = kw
        else:
            sizes = tail["image_sizes"]
            if hasattr(sizes, "cpu"):  # pinned: the tower's host-to-device copy can be captured
                sizes = sizes.cpu()
                meta["image_sizes"] = sizes.pin_memory() if self.use_graphs else sizes
            else:
                meta["image_sizes"] = sizes
        plan.static = {
            "emb": emb,
            "pos": pos,
            "mask": attn,  # a 4-D mask goes through the models' mask builders as it is
            "img_at": img_at,
            "pv": tail["pv"].clone(),
            "meta": meta,
            "keep": torch.tensor(plan.keep, device=emb.device),
            "child": plan.child_tokens.to(emb.device),
            "out": None,
            "feats": None,
        }

    # --- the pass ------------------------------------------------------------------------------

    def _vision(self, st: dict[str, Any]) -> Any:
        meta = dict(st["meta"])
        if "vision_kwargs" in meta:  # popped by the tower: hand it a fresh dict each time
            meta["vision_kwargs"] = dict(meta["vision_kwargs"])
        return self._image_features(st["pv"], meta)

    def _language(self, plan: Plan, st: dict[str, Any], feats: Any) -> Any:
        emb = st["emb"].clone()
        emb[0, st["img_at"]] = feats.to(emb.dtype)
        out = self._lm()(
            inputs_embeds=emb,
            position_ids=st["pos"],
            attention_mask=st["mask"],
            past_key_values=self._kv_cls(plan.prefix_kv),
            use_cache=True,
        )
        h = out.last_hidden_state[0, st["keep"]]
        return self.core.lm_head(h).float()

    def _step(self, plan: Plan) -> Any:
        st = plan.static
        feats = self._vision(st) if plan.scope != "lm" else st["feats"]
        return self._language(plan, st, feats)

    def _capture(self, plan: Plan) -> None:
        """Capture the per-part pass in a CUDA graph: whole (``all``) or language model (``lm``)."""
        torch = self.torch
        st = plan.static
        t0 = time.perf_counter()
        notes = []
        for scope in ("all", "lm"):
            try:
                plan.scope = scope
                if scope == "lm":
                    st["feats"] = self._vision(st).detach().clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self._step(plan)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    st["out"] = self._step(plan)
                plan.graph = graph
                break
            except Exception as exc:  # a tower with host syncs, an op that cannot be captured
                notes.append(f"{scope}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                plan.graph = None
                torch.cuda.synchronize()
        if plan.graph is None:
            plan.scope = "eager"
        plan.note = "; ".join(notes)
        plan.capture_s = round(time.perf_counter() - t0, 2)

    def run(self, inputs: dict[str, Any], tree: AnswerTree) -> tuple[Any, Any]:
        """(logits at the judgement position, {decision node: logits of its children}) on the CPU.

        The second map's values are full-vocabulary CPU tensors holding the children's logits
        (-inf elsewhere), which is all :func:`pipeline.vlm.answer_tree.walk` reads.
        """
        if not self.cached:
            return self.full_forward(inputs, tree)
        self.prepare(inputs, tree)
        _, tail = self._split_images(inputs)
        return self.run_tail(tail["pv"])

    def ready(self) -> bool:
        """Whether a plan with a cached prefix exists (parts may then use :meth:`run_tail`)."""
        return self.cached and self.plan is not None and bool(self.plan.prefix_kv)

    def run_tail(self, pv: Any) -> tuple[Any, Any]:
        """The per-part pass on the current plan, given only the test image's pixel values."""
        plan = self.plan
        assert plan is not None
        st = plan.static
        t0 = time.perf_counter()
        buf = st["pv"]
        pv = pv.to(buf.device, buf.dtype, non_blocking=True)
        if pv.shape == buf.shape:
            buf.copy_(pv)
        else:  # Pixtral pads a batch to its largest image: the test image alone is smaller
            buf.zero_()
            buf[tuple(slice(0, n) for n in pv.shape)].copy_(pv)
        if plan.graph is not None:
            if plan.scope == "lm":
                st["feats"].copy_(self._vision(st))
            plan.graph.replay()
            out = st["out"]
        else:
            out = self._step(plan)
        res = self._unpack(plan, out)
        self.timing["pass_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return res

    def _unpack(self, plan: Plan, out: Any) -> tuple[Any, Any]:
        """Move what the walk needs to the host in one copy: the judgement position's logits
        and, per decision node, the logits of its children (full rows are built lazily)."""
        torch = self.torch
        child = plan.child_tokens.to(out.device)
        parts = [out[0].float()]
        if out.shape[0] > 1:
            parts.append(out[1:].gather(1, child[: out.shape[0] - 1]).float().flatten())
        host = torch.cat(parts).cpu()
        vocab = int(out.shape[1])
        root = host[:vocab]
        sub = host[vocab:].view(len(plan.keep_nodes) - 1, -1) if out.shape[0] > 1 else None
        return root, _ChildLogits(plan, sub, vocab)

    def full_forward(self, inputs: dict[str, Any], tree: AnswerTree) -> tuple[Any, Any]:
        """The prompt plus the answer tree in one forward pass of the whole model (no cache)."""
        torch = self.torch
        key = self._layout_key(inputs, tree)
        if self.plan is None or self.plan.key != key:
            self.plan = self._new_plan(key, inputs, tree)
        plan = self.plan
        t0 = time.perf_counter()
        ids = inputs["input_ids"]
        fed_tok = torch.tensor([[tree.nodes[n].token for n in plan.fed]], dtype=torch.long,
                               device=ids.device)
        kw = dict(inputs)
        kw["input_ids"] = torch.cat([ids, fed_tok], dim=1)
        n0, extra = ids.shape[1], len(plan.fed)
        for k, v in inputs.items():
            if k in ("input_ids", "attention_mask") or not hasattr(v, "shape") or v.dim() < 2:
                continue
            if v.shape[1] != n0:
                continue
            if k == "cross_attention_mask":  # mllama: tree tokens see what the last token sees
                kw[k] = torch.cat([v, v[:, -1:].expand(-1, extra, -1, -1)], dim=1)
            else:  # mm_token_type_ids: text
                kw[k] = torch.cat([v, v.new_zeros((v.shape[0], extra, *v.shape[2:]))], dim=1)
        mask = tree_mask(0, n0, tree, plan.fed)
        kw["attention_mask"] = to_attention_mask(mask, self.attn_impl, self.dtype, ids.device)
        if self.family in ("qwen2_vl", "qwen2_5_vl", "llava"):
            kw["position_ids"] = self._full_positions(inputs, tree, plan.fed)
        else:
            kw["position_ids"] = torch.arange(n0 + extra, device=ids.device)[None]
            kw["cache_position"] = torch.arange(n0 + extra, device=ids.device)
        keep = torch.tensor([n0 - 1 + 0] + [n0 + plan.fed.index(d)
                                            for d in plan.keep_nodes[1:]], device=ids.device)
        out = self.model(**kw, use_cache=False, logits_to_keep=keep)
        res = self._unpack(plan, out.logits[0].float())
        self.timing["pass_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return res


__all__ = ["CACHED_FAMILIES", "OnePass", "core_model", "tree_mask"]
