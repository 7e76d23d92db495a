"""The search commands, as plain typer functions for ``pipeline.cli`` to register:
``app.command("index")(index)``, ``app.command("similar")(similar)``,
``app.command("near-duplicates")(near_duplicates)``.

Each is a thin shell over :mod:`pipeline.search`'s logic; a user's mistake is a
:class:`~pipeline.errors.VidbatchError`, printed as one line with exit code 2 before
anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from pipeline.errors import ConfigError, VidbatchError
from pipeline.search import DEFAULT_K, DEFAULT_THRESHOLD

Output = Annotated[str, typer.Argument(
    help="A classify or audio job's output folder or URI (its output.path)")]
IndexAt = Annotated[str | None, typer.Option(
    "--index", help="Where the index lives (folder or URI); default OUTPUT/_vidbatch_index")]


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except VidbatchError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(e.exit_code) from None


def index(
    output: Output,
    index_at: IndexAt = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Add the ok rows of data files the index has not seen")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Rebuild the index (deletes only the index's own files)")] = False,
) -> None:
    """Build a vector index (FAISS) of the ok rows' embeddings, centred on their mean."""
    from pipeline.output.outdir import OutputDir
    from pipeline.search.build import build_index
    from pipeline.search.layout import index_dir

    def go():
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        out = OutputDir.at(output)
        folder = index_dir(out, index_at)
        policy = "resume" if resume else "overwrite" if overwrite else "error"
        done = build_index(out, folder, policy)
        typer.echo(f"{folder}: {done['rows']} vectors ({done['kind']}), {done['added']} "
                   f"added in {done['seconds']:.1f} s")

    _run(go)


def similar(
    output: Output,
    video: Annotated[str, typer.Argument(help="A video_id or path of the output's ok rows")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many neighbours")] = 10,
    where: Annotated[str | None, typer.Option(
        help="SQL condition on the rows, e.g. \"pred_label = 'cat'\"")] = None,
    index_at: IndexAt = None,
) -> None:
    """List the videos nearest to VIDEO, with their cosine similarity (of centred
    embeddings: 1 is the same content) and labels."""
    from pipeline.output.outdir import OutputDir
    from pipeline.search.index import load
    from pipeline.search.layout import index_dir
    from pipeline.search.neighbours import similar as nearest

    def go():
        table = nearest(load(index_dir(OutputDir.at(output), index_at)), video, k, where)
        columns = [c for c in ("rank", "similarity", "video_id", "pred_label", "label",
                               "path") if c in table.column_names]
        typer.echo("\t".join(columns))
        for row in table.select(columns).to_pylist():
            typer.echo("\t".join(f"{v:.4f}" if isinstance(v, float) else str(v)
                                 for v in row.values()))

    _run(go)


def near_duplicates(
    output: Output,
    threshold: Annotated[float, typer.Option(
        help="Centred cosine at and above which two videos are near-duplicates (see "
             "docs/search.md for what it separates)")] = DEFAULT_THRESHOLD,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours looked at per video")
                 ] = DEFAULT_K,
    index_at: IndexAt = None,
    out: Annotated[str | None, typer.Option(
        help="Folder or URI for groups.parquet; default OUTPUT/_vidbatch_near_duplicates")
    ] = None,
) -> None:
    """Write groups of near-duplicate videos (Parquet: group_id, video_id, path,
    pred_label, is_representative, similarity to the representative)."""
    from pipeline.output.outdir import OutputDir
    from pipeline.search.index import load
    from pipeline.search.layout import GROUPS, claim, groups_dir, index_dir, write_parquet
    from pipeline.search.near_dups import find_groups

    def go():
        source = OutputDir.at(output)
        folder = groups_dir(source, out)
        # Checked first, replaced last: an error leaves the previous groups as they were.
        claim(folder, (GROUPS,), "resume", "near-duplicate groups")
        groups = find_groups(load(index_dir(source, index_at)), threshold, k)
        write_parquet(folder, GROUPS, groups)
        count = len(set(groups["group_id"].to_pylist()))
        typer.echo(f"{count} groups of near-duplicates ({groups.num_rows} videos, "
                   f"similarity >= {threshold}) -> {folder.display(GROUPS)}")

    _run(go)
