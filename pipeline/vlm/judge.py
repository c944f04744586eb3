"""The VLM judge: scored (default) or generate mode, under a time budget, never raising per part.

**Scored mode.**  The assistant turn is pre-filled up to ``- your judgement->`` (after the image
type and pin count lines).  ``p_defect`` is the probability mass of the first tokens of
``defective`` (all its tokenisations: with and without a leading space, lower, capitalised, upper
case) over that of ``defective`` plus ``passed`` at that position; tokens the two words share are
left out.  ``p_defect >= threshold`` is a defect, and then the answer goes on under constraint:
``defective``, the defect mode when the recipe lists ``defect_modes`` (a choice among them), then
``- defect position->X:`` with one of the grid's column labels and ``, Y:`` with one of its row
labels, each chosen greedily by the logits restricted to the labels — so the address is always a
cell.  With ``one_pass`` (the default) all of it comes from **one forward pass**: the prompt's
constant prefix (instruction, golden image) is KV-cached once per recipe, and every possible
continuation follows the prompt as a token tree in the same pass
(:mod:`pipeline.vlm.onepass`, :mod:`pipeline.vlm.answer_tree`), captured in a CUDA graph on a
GPU.  ``one_pass: false`` takes the same choices step by step on a growing KV cache (each step
feeds only the new tokens; should a model not accept a cache step, it is recomputed from the full
sequence): the reference the one-pass scores are tested against.

**Generate mode.**  Greedy decoding of at most ``max_new_tokens`` — with ``one_pass`` on the
cached prefix with static buffers and an on-device decode loop (:mod:`pipeline.vlm.fastgen`,
CUDA graphs on a GPU), else transformers' ``generate`` — read by
:func:`pipeline.vlm.parser.parse_answer`; an answer it cannot read is ``uncertain`` with the raw
text kept.

**Time budget and failures.**  Inference runs on one worker thread.  :meth:`VlmJudge.judge` waits
at most ``timeout_ms``; past that it returns verdict ``error`` with reason ``vlm_timeout`` and the
station goes on.  A CUDA call cannot be interrupted, so the late inference runs to its end on the
worker and its result is dropped; until it ends, every further part gets ``error`` /
``vlm_busy`` at once instead of queueing behind it (no pile-up, no growing latency), and
:attr:`VlmJudge.busy` is true (the daemon can report the model as degraded).  Out of GPU memory
gives ``vlm_oom`` (the CUDA cache is emptied), anything else (a bad image, say)
``vlm_failed: <type>: <message>``.  None of these is ever a pass.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.base.errors import ConfigError
from pipeline.verdicts import Defect, JudgeResult, Verdict, make_address
from pipeline.vlm.answer_tree import AnswerTree, build_tree, walk
from pipeline.vlm.backends import LoadedModel, is_pixtral, load_model
from pipeline.vlm.fastgen import FastGenerate
from pipeline.vlm.onepass import CACHED_FAMILIES, OnePass
from pipeline.vlm.parser import DEFECT, PASS, parse_answer
from pipeline.vlm.pixels import QwenPixels
from pipeline.vlm.prompts import (
    Prompt,
    build_prompt,
    fit_image,
    to_pixtral_messages,
    to_tagged_messages,
)
from pipeline.vlm.settings import VlmSettings

log = logging.getLogger(__name__)

_END_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|end_of_text|>", "</s>")


class _Session:
    """One part's sequence on the model: feeds tokens, keeps the KV cache, returns next logits."""

    def __init__(self, engine: _Engine, inputs: dict[str, Any]) -> None:
        self.e = engine
        self.inputs = inputs
        self.ids: list[int] = inputs["input_ids"][0].tolist()
        self.pending: list[int] = []
        self.forwards = 0
        self.use_cache = engine.kv_cache_ok
        self.xmask = inputs.get("cross_attention_mask")  # mllama: extended with every new token
        out = self.e.forward(dict(inputs), past=None)
        self.past = out.past_key_values if self.use_cache else None
        self.logits = out.logits[0, -1].float()
        self.forwards = 1

    def push(self, ids: Sequence[int]) -> None:
        """Append tokens to the sequence (fed to the model when logits are next needed)."""
        self.pending.extend(int(i) for i in ids)

    def next_logits(self) -> Any:
        """Logits for the token after everything pushed so far."""
        if not self.pending:
            return self.logits
        new, self.pending = self.pending, []
        self.ids.extend(new)
        if self.xmask is not None:
            last = self.xmask[:, -1:].expand(-1, len(new), -1, -1)
            self.xmask = self.e.torch.cat([self.xmask, last], dim=1)
        out = None
        if self.use_cache:
            try:
                out = self.e.step(new, self.past, self.xmask)
                self.past = out.past_key_values
            except Exception as exc:  # a family that does not take cache steps: recompute
                log.warning("vlm: KV-cache step failed (%s); recomputing instead", exc)
                self.e.kv_cache_ok = False
                self.use_cache, self.past, out = False, None, None
        if out is None:
            out = self.e.forward(self.e.extend_inputs(self.inputs, self.ids, self.xmask), past=None)
        self.forwards += 1
        self.logits = out.logits[0, -1].float()
        return self.logits


class _Engine:
    """Turns prompts into answers with one loaded model (used from one thread at a time)."""

    def __init__(self, loaded: LoadedModel, settings: VlmSettings) -> None:
        import torch

        self.torch = torch
        self.loaded = loaded
        self.s = settings
        self.model = loaded.model
        self.processor = loaded.processor
        self.tok = loaded.tokenizer
        self.family = loaded.family
        self.device = loaded.device
        self.pixtral = is_pixtral(loaded.folder.config)
        self.kv_cache_ok = True
        self.logits_to_keep_ok = True
        self._gen_config: Any = None
        # generate on a GPU: static KV cache + compiled decode step (CUDA graphs) when asked for,
        # or by default with cuda_graphs; the warm-up pays the compilation
        wanted = settings.compile_generate or (
            settings.cuda_graphs and str(loaded.device).startswith("cuda")
        )
        self.compile_generate = (
            settings.mode == "generate" and wanted
            and self._allow_compile(quiet=not settings.compile_generate)
        )
        try:
            self.float_dtype = next(
                p.dtype
                for p in self.model.parameters()
                if p.is_floating_point() and p.dtype != torch.uint8
            )
        except StopIteration:
            self.float_dtype = torch.float32
        self.pass_ids, self.defect_ids = self._judgement_token_sets()
        self.end_ids = self._end_ids()
        self._label_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple] = {}
        self._trees: dict[tuple[tuple[str, ...], tuple[str, ...]], AnswerTree] = {}
        self._sig: tuple | None = None
        self.timing: dict[str, float] = {}
        self.onepass: OnePass | None = None
        self.fastgen: FastGenerate | None = None
        if settings.mode == "scored" and settings.one_pass:
            self.onepass = OnePass(
                self.model, self.family, self.processor, self.device, self.float_dtype,
                use_graphs=settings.cuda_graphs,
            )
        elif settings.mode == "generate" and settings.one_pass and self.family in CACHED_FAMILIES:
            self.fastgen = FastGenerate(
                OnePass(self.model, self.family, self.processor, self.device, self.float_dtype,
                        use_graphs=settings.cuda_graphs),
                settings.max_new_tokens,
            )

        # Qwen-VL: the test image's pixel values made on the device, the images sized once
        self.pixels = QwenPixels.for_processor(self.family, self.processor, self.device)
        self.size_rule = self.pixels.target_size if self.pixels is not None else None

    def test_pixels(self, image: Image.Image) -> Any:
        """The test image's pixel values (on the device where :class:`QwenPixels` applies)."""
        if self.pixels is not None:
            return self.pixels(image)
        return self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]

    # --- tokens --------------------------------------------------------------------------

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        return list(self.tok.encode(text, add_special_tokens=False))

    def _judgement_token_sets(self) -> tuple[list[int], list[int]]:
        def first_tokens(word: str) -> set[int]:
            out = set()
            for w in {word, word.lower(), word.capitalize(), word.upper()}:
                for v in (w, " " + w):
                    t = self.ids(v)
                    if t:
                        out.add(t[0])
            return out

        p, d = first_tokens(self.s.pass_word), first_tokens(self.s.defect_word)
        shared = p & d
        p, d = p - shared, d - shared
        if not p or not d:
            raise ConfigError(
                f"vlm: the tokenizer of {self.loaded.folder.weights_dir} gives "
                f"{self.s.pass_word!r} and {self.s.defect_word!r} the same first token; "
                "scored mode cannot tell them apart (use other words or mode: generate)"
            )
        return sorted(p), sorted(d)

    def _end_ids(self) -> list[int]:
        ends: set[int] = set()
        eos = getattr(self.tok, "eos_token_id", None)
        if isinstance(eos, int):
            ends.add(eos)
        gen = getattr(self.model, "generation_config", None)
        g_eos = getattr(gen, "eos_token_id", None)
        if isinstance(g_eos, int):
            ends.add(g_eos)
        elif isinstance(g_eos, list):
            ends.update(int(x) for x in g_eos)
        vocab = self.tok.get_vocab()
        ends.update(vocab[t] for t in _END_TOKENS if t in vocab)
        return sorted(ends)

    def tree(self, columns: Sequence[str], rows: Sequence[str]) -> AnswerTree:
        """The answer tree for a grid (cached per grid): mode list, column and row labels."""
        key = (tuple(columns), tuple(rows))
        if key not in self._trees:
            self._trees[key] = build_tree(
                self.ids,
                defect_word=self.s.defect_word,
                columns=columns,
                rows=rows,
                modes=self.s.defect_modes,
            )
        return self._trees[key]

    # --- model calls ---------------------------------------------------------------------

    def encode(self, prompt: Prompt) -> dict[str, Any]:
        """Processor inputs for a prompt (chat template, then the pre-fill), on the device."""
        if self.family == "phi3_v":
            msgs = to_tagged_messages(prompt.messages)
            text = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        else:
            msgs = to_pixtral_messages(prompt.messages) if self.pixtral else prompt.messages
            text = self.processor.apply_chat_template(
                msgs, add_generation_prompt=True, tokenize=False
            )
        text += prompt.prefill
        inputs = self.processor(
            images=prompt.images, text=text, add_special_tokens=False, return_tensors="pt"
        )
        out = {}
        for k, v in inputs.items():
            if hasattr(v, "to"):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(self.float_dtype)
            out[k] = v
        return out

    def forward(self, inputs: dict[str, Any], past: Any) -> Any:
        """One forward pass returning only the last position's logits where the model allows."""
        kw = dict(inputs, use_cache=self.kv_cache_ok, past_key_values=past)
        if self.logits_to_keep_ok:
            try:
                return self.model(**kw, logits_to_keep=1)
            except TypeError as exc:
                if "logits_to_keep" not in str(exc):
                    raise
                self.logits_to_keep_ok = False
        return self.model(**kw)

    def step(self, new: list[int], past: Any, xmask: Any) -> Any:
        """Feed ``new`` tokens on top of the cache ``past``."""
        kw: dict[str, Any] = {
            "input_ids": self.torch.tensor([new], device=self.device),
        }
        if xmask is not None:
            kw["cross_attention_mask"] = xmask
        return self.forward(kw, past)

    def extend_inputs(self, inputs: dict[str, Any], ids: list[int], xmask: Any) -> dict[str, Any]:
        """The prompt's inputs with the sequence grown to ``ids`` (the no-cache fallback)."""
        torch = self.torch
        n0 = inputs["input_ids"].shape[1]
        extra = len(ids) - n0
        out = dict(inputs)
        out["input_ids"] = torch.tensor([ids], device=self.device)
        for k, v in inputs.items():
            if k == "input_ids" or not hasattr(v, "shape") or v.dim() < 2 or v.shape[1] != n0:
                continue
            if k == "cross_attention_mask":
                out[k] = xmask
            elif k == "attention_mask":
                out[k] = torch.cat([v, v.new_ones((v.shape[0], extra))], dim=1)
            else:  # mm_token_type_ids, token_type_ids: text
                pad = v.new_zeros((v.shape[0], extra, *v.shape[2:]))
                out[k] = torch.cat([v, pad], dim=1)
        return out

    # --- modes ---------------------------------------------------------------------------

    @staticmethod
    def _prompt_signature(prompt: Prompt) -> tuple:
        """What a cached prefix depends on: text, pre-fill, image sizes and the content of every
        image before the test image (their digests come with the prompt)."""
        return (repr(prompt.messages), prompt.prefill,
                tuple(im.size for im in prompt.images), tuple(prompt.reference_keys))

    def _one_pass(self, prompt: Prompt, tree: AnswerTree) -> tuple[Any, dict[int, Any], int]:
        """Root and decision logits from one forward pass; only the test image is preprocessed
        while the prompt's text, image sizes and golden image are those of the plan."""
        op = self.onepass
        assert op is not None
        self._last_prompt: Prompt = prompt
        t0 = time.perf_counter()
        sig = (self._prompt_signature(prompt), id(tree))
        t1 = time.perf_counter()
        self.timing["sig_ms"] = round((t1 - t0) * 1000, 2)
        if op.ready() and sig == self._sig:
            pv = self.test_pixels(prompt.images[-1])
            self.timing["preprocess_ms"] = round((time.perf_counter() - t1) * 1000, 2)
            root, table = op.run_tail(pv)
        else:
            inputs = self.encode(prompt)
            self.timing["preprocess_ms"] = round((time.perf_counter() - t1) * 1000, 2)
            root, table = op.run(inputs, tree)
            self._sig = sig if op.ready() else None
        plan = op.plan
        n_in = (plan.split + plan.n_lin) if plan is not None else 0
        return root, table, n_in

    def scored(self, prompt: Prompt, columns: Sequence[str], rows: Sequence[str]) -> JudgeResult:
        """Scored mode (see the module docstring)."""
        torch = self.torch
        s = self.s
        tree = self.tree(columns, rows)
        logits_at: Callable[[int, list[int]], Any]
        if self.onepass is not None:
            try:
                root, table, n_in = self._one_pass(prompt, tree)
            except Exception as exc:  # a family or backend the pass cannot take: step by step
                if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                    raise
                log.warning("vlm: one-pass scoring failed (%s: %s); scoring step by step",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self.onepass = None
                return self.scored(prompt, columns, rows)
            forwards, kv = 1, self.onepass.cached

            def logits_at(node: int, path: list[int]) -> Any:
                return root if node < 0 else table[node]
        else:
            inputs = self.encode(prompt)
            n_in = int(inputs["input_ids"].shape[1])
            sess = _Session(self, inputs)
            root = sess.logits
            fed = [0]

            def logits_at(node: int, path: list[int]) -> Any:
                if node < 0:
                    return sess.logits
                sess.push(path[fed[0]:])
                fed[0] = len(path)
                return sess.next_logits()

        probs = torch.softmax(root.float(), dim=0)
        p_pass = float(probs[self.pass_ids].sum())
        p_def = float(probs[self.defect_ids].sum())
        mass = p_pass + p_def
        p_defect = p_def / mass if mass > 0 else 0.5
        details: dict[str, Any] = {
            "mode": "scored",
            "p_defect": round(p_defect, 6),
            "p_mass": round(mass, 6),
            "threshold": s.threshold,
        }
        if p_defect < s.threshold:
            details.update(
                vlm_verdict=PASS,
                address=None,
                raw=prompt.prefill + s.pass_word,
                forwards=forwards if self.onepass is not None else sess.forwards,
                kv_cache=kv if self.onepass is not None else sess.use_cache,
                tokens_in=n_in,
            )
            return JudgeResult(judge="vlm", verdict=Verdict.PASS, details=details)
        w = walk(tree, logits_at)
        mode = s.defect_modes[w.mode].strip() if w.mode is not None else None
        if w.mode_p is not None:
            details["mode_p"] = round(w.mode_p, 6)
        col, row = tree.columns[w.column], tree.rows[w.row]
        address = make_address(col, row)
        mode_line = f"\n- defect mode->{mode}" if mode is not None else ""
        raw = f"{prompt.prefill}{s.defect_word}{mode_line}\n- defect position->{address}"
        details.update(
            vlm_verdict=DEFECT,
            address=address,
            defect_mode=mode,
            address_p=round(w.column_p * w.row_p, 6),
            column_p=round(w.column_p, 6),
            row_p=round(w.row_p, 6),
            raw=raw,
            forwards=forwards if self.onepass is not None else sess.forwards,
            kv_cache=kv if self.onepass is not None else sess.use_cache,
            tokens_in=n_in,
        )
        defect = Defect(
            address=address, column=col, row=row, score=round(p_defect, 6), mode=mode, judge="vlm"
        )
        return JudgeResult(judge="vlm", verdict=Verdict.DEFECT, defects=[defect], details=details)

    def _greedy_config(self) -> Any:
        """The model's generation config set to greedy decoding (no sampling flags left over)."""
        if self._gen_config is None:
            import copy

            from transformers import GenerationConfig

            base = getattr(self.model, "generation_config", None)
            gc = copy.deepcopy(base) if base is not None else GenerationConfig()
            gc.do_sample = False
            gc.num_beams = 1
            # neutral values: a checkpoint's sampling settings would only raise warnings
            gc.temperature, gc.top_p, gc.top_k = 1.0, 1.0, 50
            if hasattr(gc, "min_p"):
                gc.min_p = None
            gc.max_new_tokens = self.s.max_new_tokens
            gc.max_length = None
            gc.use_cache = True
            if self.compile_generate:
                gc.cache_implementation = "static"
                if self.device.startswith("cuda"):  # transformers compiles on accelerators only
                    from transformers import CompileConfig

                    gc.compile_config = CompileConfig(fullgraph=False, dynamic=False)
            if self.end_ids:
                gc.eos_token_id = list(self.end_ids)
                if gc.pad_token_id is None:
                    gc.pad_token_id = self.end_ids[0]
            self._gen_config = gc
        return self._gen_config

    def _allow_compile(self, quiet: bool = False) -> bool:
        """Whether generate may use a static cache and compile its decode step.

        transformers marks bitsandbytes models as not compileable; with bitsandbytes >= 0.46 the
        4-bit matmuls are torch custom ops and the static-cache decode compiles and runs (measured:
        docs/vlm-gpu-bench.md), so the quantizer is marked compileable here.  Not used with
        Unsloth (which compiles its own way; no gain was measured) nor for Llama-3.2-Vision (its
        cross-attention layers do not fit transformers' static cache).
        """
        if self.loaded.backend != "transformers":
            if not quiet:
                log.warning("vlm.compile_generate: only with the transformers backend; not used")
            return False
        if self.family == "mllama":
            if not quiet:
                log.warning("vlm.compile_generate: not possible for Llama-3.2-Vision; not used")
            return False
        q = getattr(self.model, "hf_quantizer", None)
        if q is not None and not q.is_compileable:
            cls = type(q)
            q.__class__ = type(f"Compileable{cls.__name__}", (cls,), {"is_compileable": True})
        return True

    def _fast_generate(self, prompt: Prompt) -> tuple[list[int], int]:
        """Greedy tokens (cut after the first end token) on the cached prefix; prompt length."""
        fg = self.fastgen
        assert fg is not None
        t0 = time.perf_counter()
        sig = self._prompt_signature(prompt)
        if fg.ready() and sig == self._sig:
            pv = self.test_pixels(prompt.images[-1])
            self.timing["preprocess_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            toks = fg.run_tail(pv)
        else:
            inputs = self.encode(prompt)
            self.timing["preprocess_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            toks = fg.run(inputs)
            self._sig = sig
        ends = set(self.end_ids)
        for i, t in enumerate(toks):
            if t in ends:
                toks = toks[: i + 1]
                break
        return toks, fg.plan.split + fg.plan.n_lin

    def generate(self, prompt: Prompt, columns: Sequence[str], rows: Sequence[str]) -> JudgeResult:
        """Generate mode: greedy free text, then the tolerant parser."""
        s = self.s
        new: list[int] | None = None
        if self.fastgen is not None:
            try:
                new, n_in = self._fast_generate(prompt)
            except Exception as exc:  # a family the static path cannot take: transformers'
                if isinstance(exc, self.torch.OutOfMemoryError):
                    raise
                log.warning("vlm: cached-prefix generate failed (%s: %s); using generate()",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self.fastgen = None
        if new is None:
            inputs = self.encode(prompt)
            n_in = int(inputs["input_ids"].shape[1])
            out = self.model.generate(**inputs, generation_config=self._greedy_config())
            new = out[0, n_in:].tolist()
        raw = self.tok.decode(new, skip_special_tokens=False)
        parsed = parse_answer(raw, columns, rows, pass_word=s.pass_word, defect_word=s.defect_word)
        details: dict[str, Any] = {
            "mode": "generate",
            "vlm_verdict": parsed.judgement,
            "p_defect": None,
            "address": make_address(*parsed.positions[0]) if parsed.positions else None,
            "defect_mode": parsed.mode,
            "raw": raw,
            "tokens_in": n_in,
            "tokens_out": len(new),
        }
        if parsed.invalid_positions:
            details["invalid_positions"] = parsed.invalid_positions
        if parsed.inferred:
            details["inferred"] = True
        if parsed.judgement is None:
            return JudgeResult(
                judge="vlm",
                verdict=Verdict.UNCERTAIN,
                reason=f"vlm_unreadable: {parsed.problem}",
                details=details,
            )
        if parsed.judgement == PASS:
            return JudgeResult(judge="vlm", verdict=Verdict.PASS, details=details)
        defects = [
            Defect(address=make_address(c, r), column=c, row=r, mode=parsed.mode, judge="vlm")
            for c, r in parsed.positions
        ]
        return JudgeResult(judge="vlm", verdict=Verdict.DEFECT, defects=defects, details=details)


def _error(reason: str, **details: Any) -> JudgeResult:
    return JudgeResult(judge="vlm", verdict=Verdict.ERROR, reason=reason, details=details)


class _Worker(threading.Thread):
    """One daemon thread that runs inference jobs (a hung CUDA call cannot block exit)."""

    def __init__(self) -> None:
        super().__init__(name="vlm-worker", daemon=True)
        self.jobs: queue.Queue[tuple[Future, Callable[[], Any]] | None] = queue.Queue()

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fut, fn = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)


class VlmJudge:
    """The VLM judge of one station (see the module docstring for modes, budget and failures)."""

    def __init__(
        self,
        settings: VlmSettings,
        *,
        loaded: LoadedModel | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """Load the model (unless ``loaded`` is given) and warm it up; ConfigError on failure."""
        self.settings = settings
        self.loaded = loaded if loaded is not None else load_model(settings, cache_dir=cache_dir)
        self._engine = _Engine(self.loaded, settings)
        self._one_shot: Image.Image | None = None
        if settings.one_shot:
            path = Path(str(settings.one_shot_image)).expanduser()
            try:
                with Image.open(path) as im:
                    self._one_shot = im.convert("RGB")
            except OSError as exc:
                raise ConfigError(f"vlm.one_shot_image: cannot read {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._inflight: Future | None = None
        self._worker = _Worker()
        self._worker.start()
        self.counters = {"parts": 0, "timeouts": 0, "busy": 0, "oom": 0, "failed": 0}
        self.warmup_s: float | None = None
        if settings.warmup:
            self.warmup()

    # --- public --------------------------------------------------------------------------

    @property
    def model_info(self) -> dict[str, Any]:
        """The model's description for events and reports (family, backend, 4-bit layers, …)."""
        info = {
            **self.loaded.info(),
            "mode": self.settings.mode,
            "compile_generate": self._engine.compile_generate,
            "warmup_s": self.warmup_s,
        }
        fg = self._engine.fastgen
        if fg is not None and fg.plan is not None:
            info["cached_generate"] = {
                "cached_prefix_tokens": fg.plan.split, "tokens_per_part": fg.plan.n_lin,
                "decode": fg.scope, **fg.timing,
            }
        op = self._engine.onepass
        if op is not None and op.plan is not None:  # what the warm-up built and what it cost
            plan = op.plan
            info["one_pass"] = {
                "cached_prefix_tokens": plan.split if op.cached else 0,
                "tokens_per_part": plan.n_lin + len(plan.fed),
                "graph": plan.scope,
                "capture_s": plan.capture_s,
                "plan_s": op.timing.get("plan_s"),
            }
        return info

    @property
    def model_name(self) -> str:
        """Short model description for events: ``<folder> (<family>, <backend>, 4-bit)``."""
        f = self.loaded.folder
        name = f.weights_dir.name + (f"+{f.adapter_dir.name}" if f.adapter_dir else "")
        bits = "4-bit" if self.loaded.n_4bit else "16-bit"
        return f"{name} ({self.loaded.family}, {self.loaded.backend}, {bits})"

    @property
    def busy(self) -> bool:
        """True while an inference (possibly one that already timed out) is running."""
        f = self._inflight
        return f is not None and not f.done()

    def prompt_text(
        self, *, columns: Sequence[str], rows: Sequence[str], image_type: str | None = None
    ) -> str:
        """The final user turn's text for a part (what the recorder stores as the prompt)."""
        from pipeline.vlm.prompts import instruction_text

        it = (image_type or self.settings.image_type).upper()
        return instruction_text(self.settings, image_type=it, columns=columns, rows=rows)

    def judge(
        self,
        images: Sequence[Image.Image | np.ndarray],
        *,
        columns: Sequence[str],
        rows: Sequence[str],
        image_type: str | None = None,
        timeout_ms: float | None = None,
    ) -> JudgeResult:
        """Judge one part within the time budget; never raises for a part's problem.

        ``images``: ``[golden, test]`` (pair, separate), ``[stacked]`` or ``[test]`` (single),
        already composed with the address overlay (PIL images or uint8 BGR/grey arrays).
        ``columns``/``rows``: the grid's labels.  ``image_type``: ``DST`` or ``RAW`` (default:
        the recipe's).  ``timeout_ms``: default ``vlm.timeout_ms``.
        """
        budget = float(timeout_ms if timeout_ms is not None else self.settings.timeout_ms)
        t0 = time.perf_counter()
        self.counters["parts"] += 1
        with self._lock:
            if self.busy:
                self.counters["busy"] += 1
                return _error("vlm_busy", ms=0.0, note="the previous inference is still running")
            fut: Future = Future()
            self._inflight = fut
            self._worker.jobs.put((fut, lambda: self._run(images, columns, rows, image_type)))
        try:
            result: JudgeResult = fut.result(timeout=budget / 1000.0)
        except FutureTimeout:
            self.counters["timeouts"] += 1
            ms = (time.perf_counter() - t0) * 1000.0
            log.warning("vlm: inference over its budget of %.0f ms; result will be dropped", budget)
            return _error("vlm_timeout", ms=round(ms, 1), timeout_ms=budget)
        return result

    def judge_now(
        self,
        images: Sequence[Image.Image | np.ndarray],
        *,
        columns: Sequence[str],
        rows: Sequence[str],
        image_type: str | None = None,
    ) -> JudgeResult:
        """Judge on the calling thread with no time budget (tools, benchmarks, warm-up)."""
        return self._run(images, columns, rows, image_type)

    def warmup(
        self,
        images: Sequence[Image.Image | np.ndarray] | None = None,
        *,
        columns: Sequence[str] | None = None,
        rows: Sequence[str] | None = None,
    ) -> JudgeResult:
        """One inference (compiles, allocates); ConfigError if it fails.

        Without ``images`` a synthetic part; with the recipe's own composed pair (the golden as
        both images will do) and grid labels, the one-pass plan of the real layout — its cached
        prefix and CUDA graph — is built here, at start-up, instead of at the first part.
        """
        t0 = time.perf_counter()
        if images is None:
            side = self.settings.max_image_side
            img = Image.new("RGB", (side, side), (0, 0, 0))
            images = [img] * self.settings.images_expected()
        res = self.judge_now(
            images,
            columns=list(columns) if columns else [str(i) for i in range(1, 10)],
            rows=list(rows) if rows else ["U", "C", "D"],
        )
        self.warmup_s = round(time.perf_counter() - t0, 2)
        log.info("vlm: warm-up inference %.1f s (compilation, prefix cache, graph capture)",
                 self.warmup_s)
        if res.verdict == Verdict.ERROR:
            if res.reason == "vlm_oom":
                raise ConfigError("vlm: out of GPU memory at the warm-up inference")
            raise ConfigError(f"vlm: the warm-up inference failed: {res.reason}")
        return res

    def close(self) -> None:
        """Stop the worker thread (waits briefly for a running inference)."""
        self._worker.jobs.put(None)
        self._worker.join(timeout=1.0)

    # --- internals -----------------------------------------------------------------------

    def _run(
        self,
        images: Sequence[Image.Image | np.ndarray],
        columns: Sequence[str],
        rows: Sequence[str],
        image_type: str | None,
    ) -> JudgeResult:
        torch = self._engine.torch
        t0 = time.perf_counter()
        try:
            if isinstance(images, (Image.Image, np.ndarray)):
                raise ValueError("images must be a list of images")
            prompt = build_prompt(
                self.settings,
                list(images),
                image_type=image_type,
                columns=[str(c) for c in columns],
                rows=[str(r) for r in rows],
                one_shot_image=self._one_shot,
                size_rule=self._engine.size_rule,
            )
            self._engine.timing["prompt_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            with torch.inference_mode():
                if self.settings.mode == "scored":
                    res = self._engine.scored(
                        prompt, [str(c) for c in columns], [str(r) for r in rows]
                    )
                else:
                    res = self._engine.generate(
                        prompt, [str(c) for c in columns], [str(r) for r in rows]
                    )
        except Exception as exc:
            ms = round((time.perf_counter() - t0) * 1000.0, 1)
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                self.counters["oom"] += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.error("vlm: out of memory: %s", exc)
                return _error("vlm_oom", ms=ms)
            self.counters["failed"] += 1
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            log.exception("vlm: inference failed")
            return _error(f"vlm_failed: {type(exc).__name__}: {first}", ms=ms)
        res.details["ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        return res


__all__ = ["VlmJudge", "fit_image"]
