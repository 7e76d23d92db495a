"""``vidbatch``: a thin command line over ``pipeline.run`` and friends.

Every user-fixable problem is a :class:`~pipeline.errors.VidbatchError`; it is printed as
one message (no traceback) and sets the exit code (2 for bad input, 1 for a failed job).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import VidbatchError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Batch video classification and embedding on Ray.")


def _fail(e: VidbatchError) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(e.exit_code)


@app.command()
def submit(
    job: Annotated[Path, typer.Argument(help="YAML job spec, e.g. jobs/classify.yaml")],
    address: Annotated[str | None, typer.Option(
        envvar="RAY_ADDRESS", help="Ray cluster to run on ('auto', HOST:6379, ray://...). "
        "Default: start a local Ray for this job.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Validate spec and manifest, print the plan, run nothing.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a job into its existing output, skipping done videos.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the results already in output.path.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a spec value: --set model.weights=none (repeatable).")] = None,
) -> None:
    """Run an inference job: every manifest row -> one Parquet row (ok or error)."""
    from pipeline.jobspec import load_jobspec
    from pipeline.run import check_paths, describe, execute, plan_job

    if resume and overwrite:
        _fail(VidbatchError("--resume and --overwrite contradict each other; pick one"))
    policy = "resume" if resume else "overwrite" if overwrite else None
    try:
        spec = load_jobspec(job, set_ or ())
        plan = plan_job(spec, policy)
        if dry_run:
            typer.echo(describe(plan))
            checked, missing = check_paths(plan)
            typer.echo(f"checked {checked} sampled paths: {checked - len(missing)} exist"
                       + (f", missing: {', '.join(missing[:5])}" if missing else ""))
            typer.echo("dry run: nothing was started or written")
            return
        record = execute(plan, address=address, log=typer.echo)
    except VidbatchError as e:
        _fail(e)
    typer.echo(render_summary(plan.output, record))


def render_summary(output: Path, record: dict) -> str:
    """The human summary of a finished job, from its files (not from driver memory)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    c = record["counts"]
    table = pads.dataset(str(output), format="parquet").to_table(
        columns=["video_id", "status", "error", "decoder", "pred_label", "pred_score"])
    lines = [
        f"job {record['job']}: {c['rows']} rows for {c['manifest_rows']} manifest rows -> "
        f"{c['ok']} ok, {c['error']} error; {c['processed_this_run']} processed in "
        f"{record['wall_s']:.1f} s ({record['videos_per_s'] or 0:.2f} videos/s, Ray start-up "
        "included)",
        f"output: {output} ({len(list(output.glob('*.parquet')))} Parquet files + "
        "_vidbatch_job.json)",
    ]
    decoders = table.filter(pc.equal(table["status"], "ok")).group_by("decoder").aggregate(
        [("video_id", "count")]).to_pylist()
    if decoders:
        lines.append("decoders: " + ", ".join(f"{d['decoder']} {d['video_id_count']}"
                                              for d in decoders))
    errors = table.filter(pc.equal(table["status"], "error")).to_pylist()
    for row in errors[:8]:
        lines.append(f"  error {row['video_id']}: {row['error'][:160]}")
    if len(errors) > 8:
        lines.append(f"  ... and {len(errors) - 8} more error rows")
    if not record["model"]["predictions_meaningful"]:
        lines.append("note: weights: none -> random weights; pred_label/pred_score are "
                     "meaningless. Use a checkpoint from `vidbatch train` or torchvision "
                     "weights for real predictions.")
    return "\n".join(lines)


@app.command()
def summary(output: Annotated[Path, typer.Argument(help="A job's output directory")]) -> None:
    """Print the summary of a finished (or partly finished) job."""
    from pipeline.sink import JOB_RECORD, read_job_record

    try:
        record = read_job_record(output)
    except VidbatchError as e:
        _fail(e)
    if record is None or "rows" not in record.get("counts", {}):
        _fail(VidbatchError(f"{output / JOB_RECORD} not found or the job did not finish; "
                            "run `vidbatch submit JOB --resume` to finish it"))
    typer.echo(render_summary(output, record))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Where the demo videos go")] = Path("data/demo"),
    manifest: Annotated[Path, typer.Option(help="Manifest to write")] = Path(
        "manifests/demo.csv"),
) -> None:
    """Generate the demo videos (some deliberately broken) and their manifest."""
    import os

    from pipeline.synth import make_demo_set, write_manifest

    rows = make_demo_set(out)
    prefix = os.path.relpath(out.resolve(), manifest.resolve().parent) + "/"
    write_manifest(manifest, rows, prefix=prefix)
    typer.echo(f"wrote {len(rows)} manifest rows to {manifest} (videos in {out})")


@app.command()
def schema(arch: Annotated[str, typer.Option(help="Model architecture")] = "r3d_18") -> None:
    """Print the output Parquet schema."""
    from pipeline.models import ARCHS
    from pipeline.sink import output_schema

    if arch not in ARCHS:
        _fail(VidbatchError(f"--arch: unknown {arch!r}; choose one of {sorted(ARCHS)}"))
    typer.echo(json.dumps({f.name: str(f.type) for f in output_schema(ARCHS[arch].embed_dim)},
                          indent=2))


if __name__ == "__main__":
    app()
