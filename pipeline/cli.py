"""``vidbatch``: a thin command line over ``pipeline.infer``, ``pipeline.train`` and
``pipeline.cluster``.

Every user-fixable problem is a :class:`~pipeline.errors.VidbatchError`; it is printed as
one message (no traceback) and sets the exit code (2 for bad input, 1 for a failed job).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline import demo_commands
from pipeline.errors import ConfigError, VidbatchError
from pipeline.search import commands as search_commands

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Batch video analysis on Ray: every manifest row -> one Parquet row.")


def _fail(e: VidbatchError) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(e.exit_code)


@app.command()
def submit(
    job: Annotated[Path, typer.Argument(help="YAML job spec, e.g. jobs/classify.yaml")],
    address: Annotated[str | None, typer.Option(
        envvar="RAY_ADDRESS", help="Where to run. http://HEAD:8265 submits through the Ray "
        "Jobs API; 'auto', HOST:6379 or ray://... attach to a cluster as its driver. "
        "Default: start a local Ray for this job.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="With an http:// address: stream the job's logs and exit with its "
        "result.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Validate spec and manifest, print the plan, run nothing.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a job into its existing output, skipping done videos.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the results already in output.path.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a spec value: --set model.weights=none (repeatable).")] = None,
    decode_only: Annotated[bool, typer.Option(
        "--decode-only", help="Decode what the model would get, write the rows, skip the "
        "model (same as --set mode=decode_only): checks a collection, measures decoding.")
    ] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print Ray's and the workers' own output here too (by "
        "default it goes to Ray's log files, which the dashboard shows).")] = False,
) -> None:
    """Run an inference job: every manifest row -> one Parquet row (ok or error)."""
    from pipeline.cluster import is_jobs_api
    from pipeline.infer.spec import load_jobspec
    from pipeline.infer.summary import render_summary

    if resume and overwrite:
        _fail(VidbatchError("--resume and --overwrite contradict each other; pick one"))
    policy = "resume" if resume else "overwrite" if overwrite else None
    try:
        spec = load_jobspec(job, [*(set_ or ()), *(["mode=decode_only"] if decode_only else [])])
        if is_jobs_api(address) and not dry_run:
            return _submit_remote(spec, address, policy, wait)
        if dry_run:
            return _dry_run(spec, policy)
        record, plan, console = _run_job(spec, policy, address, verbose)
    except VidbatchError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.secho(f"interrupted: the rows written so far stay in {spec.output.path}; "
                    "the same command with --resume finishes the rest", err=True,
                    fg=typer.colors.YELLOW)
        raise typer.Exit(130) from None
    typer.echo(render_summary(plan.output, record))
    if console.where_logs_went():
        typer.echo(console.where_logs_went())


def _run_job(spec, policy: str | None, address: str | None, verbose: bool):
    """The job on a local Ray or as a cluster's driver: ``(record, plan, console)``."""
    from pipeline.console import Console
    from pipeline.infer.progress import format_progress
    from pipeline.infer.run import execute, start  # imports Ray: not before the Jobs API

    console = Console(verbose)
    with console.session():
        plan, handle = start(spec, policy, address, console.line, console)
        record = execute(plan, log=console.line, handle=handle,
                         view=console.job_view(format_progress))
    return record, plan, console


def _dry_run(spec, policy: str | None) -> None:
    """Plan the job, check a sample of its paths, print both; start and write nothing."""
    from pipeline.infer.feeding import plan_feed
    from pipeline.infer.plan import check_paths, describe, plan_job

    plan = plan_job(spec, policy)
    typer.echo(describe(plan))
    if spec.mode == "infer":
        for line in plan_feed(plan).lines(spec.resources.decode_on):
            typer.echo(line)
    checked, missing = check_paths(plan)
    typer.echo(f"checked {checked} sampled paths: {checked - len(missing)} exist"
               + (f", missing: {', '.join(missing[:5])}" if missing else ""))
    typer.echo("dry run: nothing was started or written")


def _submit_remote(spec, address: str, policy: str | None, wait: bool) -> None:
    """Jobs API path: the spec is validated here; manifest and output are checked on the
    cluster, where their paths are meaningful."""
    from pipeline import cluster
    from pipeline.dashboard import dashboard_hint

    submission_id = cluster.submit_remote(spec, address, policy)
    typer.echo(f"submitted {submission_id} to {address}")
    typer.echo(dashboard_hint(f"{address.rstrip('/')}/#/jobs/{submission_id}"))
    if not wait:
        typer.echo(f"follow it with: vidbatch logs {submission_id} --follow --address {address}")
        return
    status = cluster.follow(address, submission_id, typer.echo)
    typer.echo(f"job {submission_id}: {status}")
    if status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def summary(location: Annotated[str, typer.Argument(
        metavar="OUTPUT", help="A job's output directory or URI")]) -> None:
    """Print the summary of a finished (or partly finished) job."""
    from pipeline.infer.summary import finished_record, render_summary
    from pipeline.output.outdir import OutputDir

    try:
        output = OutputDir.at(location)
        typer.echo(render_summary(output, finished_record(output)))
    except VidbatchError as e:
        _fail(e)


@app.command()
def report(
    location: Annotated[str, typer.Argument(
        metavar="OUTPUT", help="A job's output directory or URI, or a training run's folder")],
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Where the HTML goes (a path or URI). Default: "
        "_vidbatch_report.html in the job's output, report.html in a training run")] = None,
    thumbnails: Annotated[int | None, typer.Option(
        help="Frames to decode for the contact sheets (default 36) or a shots job's "
        "strips (default 240); 0: none")] = None,
) -> None:
    """Write one self-contained HTML report (charts, thumbnails) of a job or training run."""
    from pipeline.report.build import make_report

    try:
        dest = make_report(location, output, thumbnails, log=typer.echo)
    except VidbatchError as e:
        _fail(e)
    typer.echo(f"report: {dest}")


# Search over a job's embeddings (pipeline/search/commands.py: thin shells like these).
app.command("index")(search_commands.index)
app.command("similar")(search_commands.similar)
app.command("near-duplicates")(search_commands.near_duplicates)

JobsAddress = Annotated[str, typer.Option(
    "--address", envvar="RAY_ADDRESS", help="The cluster's dashboard / Jobs API URL.")]
DEFAULT_JOBS = "http://127.0.0.1:8265"


def _jobs_call(fn, *args):
    from pipeline.cluster import is_jobs_api

    if not is_jobs_api(args[0]):
        _fail(VidbatchError(f"--address must be the Jobs API URL (http://HEAD:8265), not "
                            f"{args[0]!r}"))
    try:
        return fn(*args)
    except VidbatchError as e:
        _fail(e)
    except Exception as e:  # the Jobs API's own errors: unknown id, cluster gone, ...
        _fail(VidbatchError(f"{type(e).__name__}: {e}"))


@app.command()
def status(submission_id: Annotated[str | None, typer.Argument(
               help="Submission id; without it, all jobs")] = None,
           address: JobsAddress = DEFAULT_JOBS) -> None:
    """Status of a job submitted with --address http://... (or of all jobs)."""
    from pipeline.cluster import job_info

    if submission_id is None:
        return list_(address)
    typer.echo(json.dumps(_jobs_call(job_info, address, submission_id), indent=2, default=str))


@app.command("list")
def list_(address: JobsAddress = DEFAULT_JOBS) -> None:
    """Jobs known to the cluster."""
    from pipeline.cluster import list_jobs

    for j in _jobs_call(list_jobs, address):
        typer.echo(f"{j['id']}\t{j['status']}\t{j['job'] or j['entrypoint']}")


@app.command()
def logs(submission_id: Annotated[str, typer.Argument(help="Submission id")],
         address: JobsAddress = DEFAULT_JOBS,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job "
                                              "ends; exit with its result.")] = False) -> None:
    """A job's driver logs."""
    from pipeline import cluster

    if follow:
        final = _jobs_call(cluster.follow, address, submission_id, typer.echo)
        typer.echo(f"job {submission_id}: {final}")
        raise typer.Exit(0 if final == "SUCCEEDED" else 1)
    typer.echo(_jobs_call(cluster.logs, address, submission_id), nl=False)


@app.command()
def stop(submission_id: Annotated[str, typer.Argument(help="Submission id")],
         address: JobsAddress = DEFAULT_JOBS) -> None:
    """Stop a running job."""
    from pipeline.cluster import stop as stop_job

    stopped = _jobs_call(stop_job, address, submission_id)
    typer.echo(f"{submission_id}: {'stop requested' if stopped else 'was not running'}")


@app.command()
def up(num_cpus: Annotated[int | None, typer.Option(help="CPUs to offer (default: all)")]
       = None,
       port: Annotated[int, typer.Option(help="Dashboard / Jobs API port")] = 8265,
       insecure_no_auth: Annotated[bool, typer.Option(
           "--insecure-no-auth", help="Start the head even though RAY_AUTH_MODE=disabled is "
           "set: anyone who reaches its ports can run code.")] = False) -> None:
    """Start a persistent local Ray head (dashboard on 127.0.0.1) for several jobs."""
    from pipeline.cluster import up as start_head
    from pipeline.dashboard import dashboard_hint

    try:
        url = start_head(num_cpus, port, insecure_no_auth)
    except VidbatchError as e:
        _fail(e)
    typer.echo(f"Ray head started; Jobs API: {url}")
    typer.echo(dashboard_hint(url))
    typer.echo(f"submit with: vidbatch submit --address {url} JOB.yaml --wait")
    typer.echo("or run a job as a driver on it: vidbatch submit --address auto JOB.yaml")
    typer.echo("stop it with: vidbatch down")


@app.command()
def down() -> None:
    """Stop Ray on this machine (`ray stop`): the head `vidbatch up` started, and any other."""
    from pipeline.cluster import down as stop_head

    stop_head()
    typer.echo("Ray stopped")


@app.command()
def schema(task: Annotated[str, typer.Option(help="Analysis task")] = "classify",
           arch: Annotated[str | None, typer.Option(
               help="Model architecture (default: the task's default)")] = None) -> None:
    """Print the output Parquet schema of a task."""
    from pipeline.tasks.registry import TASKS

    if task not in TASKS:
        _fail(VidbatchError(f"--task: unknown {task!r}; choose one of {sorted(TASKS)}"))
    archs = TASKS[task].architectures
    arch = arch or (archs[0] if archs else "")
    if archs and arch not in archs:
        _fail(VidbatchError(f"--arch: unknown {arch!r} for task {task}; choose one of "
                            f"{sorted(archs)}"))
    fields = TASKS[task].schema(arch)
    typer.echo(json.dumps({f.name: str(f.type) for f in fields}, indent=2))


@app.command()
def evaluate(
    output: Annotated[str, typer.Argument(help="Output folder or URI of a detect or audio "
                                          "job")],
    labels: Annotated[str, typer.Option(help="detect: box labels (video_id, frame, label, "
                                        "x1, y1, x2, y2, optional object), as for training;"
                                        " audio: video_id, label, optional onset_s")],
) -> None:
    """Score a job against labels. detect: mAP, box IoU, ID switches; audio: top-1, top-5,
    the confusion matrix, and how near the word's windows are to its onset."""
    from pipeline.output.outdir import OutputDir
    from pipeline.output.store import read_job_record
    from pipeline.tasks.registry import DEFAULT_TASK, get_task

    try:
        record = read_job_record(OutputDir.at(output))
        if record is None:
            raise ConfigError(f"{output} holds no finished vidbatch job (no "
                              "_vidbatch_job.json); give the output.path of a detect or "
                              "audio job")
        result = get_task(record.get("task", DEFAULT_TASK)).evaluate(output, labels)
    except VidbatchError as e:
        _fail(e)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def train(
    job: Annotated[Path, typer.Argument(help="YAML training spec, e.g. jobs/train.yaml")],
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run <storage_path>/<name> from its last checkpoint.")
    ] = False,
    address: Annotated[str | None, typer.Option(
        envvar="RAY_ADDRESS", help="Ray cluster to train on ('auto', HOST:6379). Default: "
        "start a local Ray for this run.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a spec value: --set optim.epochs=3 (repeatable).")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print Ray's and the workers' own output here too (by "
        "default it goes to Ray's log files, which the dashboard shows).")] = False,
) -> None:
    """Train or fine-tune a task's model (a ResNet classifier, detector or audio ResNet)
    with Ray Train; the best checkpoint feeds `submit`."""
    from pipeline.console import Console
    from pipeline.train.plan import load_training
    from pipeline.train.run import train as run

    console = Console(verbose)
    try:
        spec = load_training(job, set_ or ())
        with console.session():
            _, text = run(spec, resume, address, console.line, console)
    except VidbatchError as e:
        _fail(e)
    typer.echo(text)
    if console.where_logs_went():
        typer.echo(console.where_logs_went())


def _demo_commands() -> dict:
    """The demo data commands: the main demo's and each task's (``Task.demos``)."""
    from pipeline.tasks.registry import TASKS

    commands = dict(demo_commands.COMMANDS)
    for task in TASKS.values():
        taken = set(commands) & set(task.demos)
        if taken:
            raise RuntimeError(f"task {task.name}: demo commands {sorted(taken)} are taken")
        commands.update(task.demos)
    return commands


for _name, _fn in _demo_commands().items():
    app.command(_name)(_fn)


@app.command()
def token() -> None:
    """Print the token that Ray's dashboard asks for ("Authentication Token Required"),
    found where Ray looks for it; where it came from goes to stderr."""
    from pipeline.dashboard import find_token

    try:
        value, source = find_token()
    except VidbatchError as e:
        _fail(e)
    typer.echo(value)
    typer.echo(f"(from {source}: paste it into the dashboard's token dialog; keep it "
               "private, it lets whoever has it run code on that Ray)", err=True)


def main() -> None:
    """The ``vidbatch`` command: :data:`app`, then a quick exit.

    With torch and torchvision loaded, the interpreter spends most of its exit in the
    garbage collector's passes over every object while it tears modules down; frozen
    objects are skipped (benchmarks/README.md has the timing). Objects are still freed and
    ``atexit`` still runs (outputs are closed by then); only cycles among them are left to
    the process's end.
    """
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
