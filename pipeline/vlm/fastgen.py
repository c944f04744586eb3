"""Generate mode on the cached prefix: the prompt's rest in one pass, then a captured decode loop.

Like scored mode (:mod:`pipeline.vlm.onepass`), the prompt up to the test image is computed once
per recipe.  Its keys and values are copied into a static cache (one buffer per layer, long enough
for the whole prompt and ``max_new_tokens``); a part runs the test image and the rest of the prompt
on top (writing their keys and values into the buffers), then greedy decode steps, each writing one
token.  Every step reads and writes device buffers only — the chosen token, its position, the
write index and the attention mask are updated on the device — so on a GPU both the prompt pass and
the decode step are CUDA graphs, replayed ``max_new_tokens - 1`` times without a host round trip;
the tokens come back in one copy and are cut at the first end token.  Greedy, so the tokens are
those of Hugging Face's ``generate`` with the same inputs (tested on a CPU).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.vlm.answer_tree import AnswerTree
from pipeline.vlm.onepass import OnePass, tree_mask

log = logging.getLogger(__name__)

_EMPTY_TREE = AnswerTree(nodes=[], root_children={}, modes=[], columns=[], rows=[])


def _static_kv_class() -> type:
    from transformers import DynamicCache

    class _StaticKV(DynamicCache):
        """Per-layer key/value buffers written at ``idx``; attention reads the whole buffer."""

        def __init__(self, bufs: list[tuple[Any, Any]], idx: Any) -> None:
            super().__init__()
            self.bufs, self.idx = bufs, idx

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            kb, vb = self.bufs[layer_idx]
            kb.index_copy_(2, self.idx, key_states.to(kb.dtype))
            vb.index_copy_(2, self.idx, value_states.to(vb.dtype))
            return kb, vb

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return int(self.bufs[0][0].shape[-2])

    return _StaticKV


class FastGenerate:
    """Greedy generation on the cached prefix with static buffers (see the module docstring)."""

    def __init__(self, op: OnePass, max_new: int) -> None:
        """``op``: the family helpers and prefix cache; ``max_new``: tokens per answer."""
        self.op = op
        self.torch = op.torch
        self.max_new = int(max_new)
        self.plan: Any = None
        self.st: dict[str, Any] = {}
        self.graphs: tuple[Any, Any] | None = None  # (prompt step or None, decode step)
        self.scope = "eager"
        self.timing: dict[str, float] = {}
        self._kv_cls = _static_kv_class()

    def ready(self) -> bool:
        """Whether a plan exists (parts may then use :meth:`run_tail`)."""
        return self.plan is not None and bool(self.plan.prefix_kv)

    def prepare(self, inputs: dict[str, Any]) -> None:
        """Plan, prefix and static buffers for this layout (re-made when it changes)."""
        torch, op = self.torch, self.op
        key = op._layout_key(inputs, _EMPTY_TREE)
        if self.plan is not None and self.plan.key == key:
            head, _ = op._split_images(inputs)
            if op._golden_digest(head) != self.plan.golden_digest:
                op._make_prefix(self.plan, inputs)
                for (kb, vb), (pk, pv) in zip(self.st["bufs"], self.plan.prefix_kv, strict=True):
                    kb[:, :, : pk.shape[2]].copy_(pk)
                    vb[:, :, : pv.shape[2]].copy_(pv)
            return
        t0 = time.perf_counter()
        plan = op._new_plan(key, inputs, _EMPTY_TREE)
        op._make_prefix(plan, inputs)
        op._make_static(plan, inputs, _EMPTY_TREE)
        p, n = plan.split, plan.n_lin
        total = p + n + self.max_new
        s = plan.static
        dev = s["emb"].device
        bufs = []
        for pk, pv in plan.prefix_kv:
            kb = pk.new_zeros((*pk.shape[:2], total, pk.shape[3]))
            vb = pv.new_zeros((*pv.shape[:2], total, pv.shape[3]))
            kb[:, :, :p].copy_(pk)
            vb[:, :, :p].copy_(pv)
            bufs.append((kb, vb))
        mask = torch.zeros(n, total, dtype=torch.bool)
        mask[:, : p + n] = tree_mask(p, n, _EMPTY_TREE, [])
        dmask0 = torch.zeros(1, 1, 1, total, dtype=torch.bool)
        dmask0[..., : p + n] = True
        last_pos = s["pos"][..., -1:]
        self.st = {
            "bufs": bufs,
            "suffix_mask": mask[None, None].to(dev),
            "suffix_idx": torch.arange(p, p + n, device=dev),
            "dmask0": dmask0.to(dev),
            "dmask": dmask0.to(dev).clone(),
            "pos0": (last_pos + 1).clone(),
            "pos": (last_pos + 1).clone(),
            "idx0": torch.tensor([p + n], device=dev),
            "idx": torch.tensor([p + n], device=dev),
            "tok": torch.zeros(1, 1, dtype=torch.long, device=dev),
            "out": torch.zeros(self.max_new, dtype=torch.long, device=dev),
            "step": torch.zeros(1, dtype=torch.long, device=dev),
            "one": torch.ones(1, dtype=torch.long, device=dev),
        }
        self.plan = plan
        self.graphs = None
        self.scope = "eager"
        if op.use_graphs:
            self._capture()
        self.timing["plan_s"] = round(time.perf_counter() - t0, 3)
        log.info("vlm: generate plan: %d cached prefix tokens, %d per part, %d new at most; %s",
                 p, n, self.max_new, self.scope)

    def _mask(self, m: Any) -> Any:
        op = self.op
        if op.attn_impl in ("sdpa", "flex_attention"):
            return m
        torch = self.torch
        dtype = self.plan.static["emb"].dtype
        return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(
            ~m, torch.finfo(dtype).min)

    def _lm_next(self, emb: Any, pos: Any, mask: Any, idx: Any) -> Any:
        out = self.op._lm()(
            inputs_embeds=emb, position_ids=pos, attention_mask=self._mask(mask),
            past_key_values=self._kv_cls(self.st["bufs"], idx), use_cache=True,
        )
        logits = self.op.core.lm_head(out.last_hidden_state[:, -1:])
        return logits.argmax(-1)  # (1, 1)

    def _prompt_step(self) -> None:
        """Test image + rest of the prompt; the first new token; decode state reset."""
        op, st, s = self.op, self.st, self.plan.static
        feats = st["feats"] if self.scope == "graphs:lm" else op._vision(s)
        emb = s["emb"].clone()
        emb[0, s["img_at"]] = feats.to(emb.dtype)
        tok = self._lm_next(emb, s["pos"], st["suffix_mask"], st["suffix_idx"])
        st["tok"].copy_(tok)
        st["out"][:1].copy_(tok.view(1))
        st["dmask"].copy_(st["dmask0"])
        st["pos"].copy_(st["pos0"])
        st["idx"].copy_(st["idx0"])
        st["step"].fill_(1)

    def _decode_step(self) -> None:
        """One token: attend to everything written so far and itself, write, advance."""
        st = self.st
        st["dmask"].index_fill_(-1, st["idx"], True)
        emb = self.op.core.get_input_embeddings()(st["tok"])
        tok = self._lm_next(emb, st["pos"], st["dmask"], st["idx"])
        st["tok"].copy_(tok)
        st["out"].index_copy_(0, st["step"], tok.view(1))
        st["pos"].add_(1)
        st["idx"].add_(1)
        st["step"].add_(st["one"])

    def _capture(self) -> None:
        """Capture the prompt step and the decode step in CUDA graphs.

        Scopes, first that captures: ``graphs:all`` (vision tower inside the prompt graph),
        ``graphs:lm`` (tower eager, into a static buffer), ``graphs:decode`` (prompt step eager,
        the decode step — where the time goes — still replayed).  A tower with host syncs
        (Pixtral's) only costs the tower's own eager time."""
        torch = self.torch
        t0 = time.perf_counter()
        notes: list[str] = []
        self.graphs, self.scope = None, "eager"
        for scope in ("graphs:all", "graphs:lm", "graphs:decode"):
            try:
                self.scope = scope
                if scope == "graphs:lm":
                    self.st["feats"] = self.op._vision(self.plan.static).detach().clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self._prompt_step()
                        self._decode_step()
                torch.cuda.current_stream().wait_stream(side)
                g1 = None
                g2 = torch.cuda.CUDAGraph()
                if scope != "graphs:decode":
                    g1 = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g1):
                        self._prompt_step()
                with torch.cuda.graph(g2, pool=g1.pool() if g1 is not None else None):
                    self._decode_step()
                self.graphs = (g1, g2)
                break
            except Exception as exc:  # a tower or step with host syncs: the next scope
                notes.append(f"{scope}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
                self.graphs, self.scope = None, "eager"
                torch.cuda.synchronize()
        if notes:
            log.info("vlm: generate capture: %s", "; ".join(notes))
        self.timing["capture_s"] = round(time.perf_counter() - t0, 2)

    def run(self, inputs: dict[str, Any]) -> list[int]:
        """Plan (if needed) and generate for these processor inputs."""
        self.prepare(inputs)
        _, tail = self.op._split_images(inputs)
        return self.run_tail(tail["pv"])

    def run_tail(self, pv: Any) -> list[int]:
        """Generate given only the test image's pixel values; the new tokens (all of them)."""
        t0 = time.perf_counter()
        buf = self.plan.static["pv"]
        pv = pv.to(buf.device, buf.dtype)
        if pv.shape == buf.shape:
            buf.copy_(pv)
        else:
            buf.zero_()
            buf[tuple(slice(0, n) for n in pv.shape)].copy_(pv)
        if self.graphs is not None:
            g1, g2 = self.graphs
            if g1 is None:
                self._prompt_step()
            else:
                if self.scope == "graphs:lm":
                    self.st["feats"].copy_(self.op._vision(self.plan.static))
                g1.replay()
            for _ in range(self.max_new - 1):
                g2.replay()
        else:
            self._prompt_step()
            for _ in range(self.max_new - 1):
                self._decode_step()
        toks = self.st["out"].tolist()
        self.timing["generate_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return toks


__all__ = ["FastGenerate"]
