"""``station replay``: recorded frames, a folder, a video or a manifest through the pipeline.

Machine output only on stdout: one JSON object per part (unless ``--out FILE``), then one
``{"summary": …}`` line.  Human text (the one-line summary, warnings, the progress bar when stderr
is a terminal) goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from camera.replay import open_replay_source
from pipeline.base.frames import Frame
from pipeline.inspector import Inspector
from station.machine_output import machine_stdout, print_json_line
from station.progress import progress_bar
from station.recipe_tools import inspector_from_args
from station.replay_runner import PartOutcome, replay, write_json_line
from station.report import ReportBuilder, rate_text


def add_inspector_args(p: argparse.ArgumentParser) -> None:
    """Options shared by replay and eval: where the recipe comes from, policy, VLM."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-c", "--config", help="station YAML (recipe, policy, vlm)")
    g.add_argument("--recipe", help="recipe folder")
    p.add_argument("--policy", help="decision policy: any, all (alias both) or a judge's name "
                                    "(default: config's, any)")
    p.add_argument("--vlm", metavar="MODEL_DIR", help="enable the VLM judge with this model")
    p.add_argument("--limit", type=int, help="stop after N parts")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``replay`` to the CLI."""
    p = sub.add_parser("replay", help="run recorded frames through the same pipeline")
    p.add_argument("source", help="recording folder, image folder, video file or manifest CSV")
    add_inspector_args(p)
    p.add_argument("--report", metavar="DIR",
                   help="write report.json, report.md and report.html into DIR")
    p.add_argument("--out", metavar="FILE", help="per-part JSON lines to FILE instead of stdout")
    p.add_argument("--json", action="store_true",
                   help="accepted for symmetry: stdout is always JSON lines (parts, then the "
                        "summary)")
    p.add_argument("--publish", metavar="ENDPOINT",
                   help="also publish results as events on this ZeroMQ PUB endpoint")
    p.add_argument("--state", metavar="DIR",
                   help="--publish: journal folder (seq continues there; default: temporary)")
    p.set_defaults(func=run)


def run_replay(
    frames: Iterable[Frame],
    inspector: Inspector,
    *,
    out: Any,
    report_dir: str | None,
    title: str,
    limit: int | None = None,
    total: int | None = None,
    extra: Callable[[PartOutcome], None] | None = None,
    desc: str = "replay",
) -> dict[str, Any]:
    """Replay ``frames`` writing JSON lines to ``out``; returns (and writes) the report."""
    rec = inspector.recipe
    builder = ReportBuilder(rec.grid, rec.settings.thresholds, recipe_hash=rec.short_hash,
                            recipe_name=rec.settings.name)
    with progress_bar(min(total, limit) if total and limit else total or limit,
                      desc) as bar:
        for outcome in replay(frames, inspector, limit=limit):
            if out is not None:
                write_json_line(outcome, out)
            builder.add(outcome)
            if extra:
                extra(outcome)
            bar.update()
    if report_dir:
        return builder.write(report_dir, title=title)
    return builder.summary()


def _publisher(stack: contextlib.ExitStack, endpoint: str, state: Path, station_id: str):
    """A journaled EventPublisher on a PUB socket bound to ``endpoint`` (closed by ``stack``)."""
    import zmq

    from station.events import EventPublisher
    from station.journal import Journal

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.bind(endpoint)
    stack.callback(sock.close)
    time.sleep(0.3)  # let subscribers that wait for the bind connect before the first part
    return EventPublisher(Journal(state / "journal"), station=station_id, send=sock.send_multipart)


def run(args: argparse.Namespace) -> int:
    """Replay a source; exit 0 when it ran (the verdicts are data, not errors)."""
    with contextlib.ExitStack() as stack:
        stdout = stack.enter_context(machine_stdout())
        inspector, cfg = inspector_from_args(args)
        source = open_replay_source(args.source)
        stack.callback(source.close)
        publisher = None
        if args.publish:
            state = args.state or stack.enter_context(tempfile.TemporaryDirectory())
            publisher = _publisher(stack, args.publish, Path(state),
                                   cfg.station.id if cfg else "replay")
        out = stack.enter_context(Path(args.out).open("w")) if args.out else stdout
        total = len(source) if hasattr(source, "__len__") else None
        summary = run_replay(
            source, inspector, out=out, report_dir=args.report,
            title=f"Replay of {args.source}", limit=args.limit, total=total,
            extra=(lambda o: publisher.publish_result(o.result.to_payload(),
                                                      frame=o.to_json()["frame"]))
            if publisher else None,
        )
        print_human_summary(summary, args.report)
        print_json_line({"summary": summary}, stdout)
    return 0


def print_human_summary(s: dict[str, Any], report_dir: str | None) -> None:
    """One line of counts (and the warnings) on stderr, for the person at the terminal."""
    verdicts = ", ".join(f"{k} {v}" for k, v in s["verdicts"].items()) or "no parts"
    line = f"{s['parts']} parts: {verdicts}"
    if "misses" in s:
        line += (f"; {s['misses']} misses, {s['false_rejects']} false rejects "
                 f"({rate_text(s['false_reject_rate'])})")
    if "recorded" in s:
        line += f"; agreement with the recording {s['recorded']['agreement']}"
    if "f1" in s:
        line += f"; F1 {s['f1']} (box recall {s['box_recall']})"
    if report_dir:
        line += f"; report: {Path(report_dir) / 'report.html'}"
    print(line, file=sys.stderr)
    for w in s["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
