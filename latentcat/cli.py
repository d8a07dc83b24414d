"""The `latentcat` command line: thin typer commands over the library.

Every command reports a bad input as one line on stderr and exits with a non-zero code;
`latentcat --debug COMMAND ...` shows the full traceback instead.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from latentcat import __version__
from latentcat.atomic import check_replaceable, write_file
from latentcat.errors import LatentcatError, one_line
from latentcat.features import MIN_EPOCHS, SHARD_SIZE
from latentcat.limits import (MAX_IDS_FILE_BYTES, MAX_UPLOAD_BYTES, MEMORY_LIMIT_MIB, SERVE_TIMEOUT, TIMEOUT,
                              as_source_id, checked_input_file)

app = typer.Typer(
    name="latentcat",
    help="Similarity-search catalogue of Gaia variable sources (XP + dm-dt + folded-light-curve VAEs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latentcat {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """latentcat: find Gaia variable sources that look alike."""
    _state["debug"] = debug
    if threading.current_thread() is threading.main_thread():
        # SIGTERM stops a command as Ctrl-C does: cleanup runs (temporary files are removed)
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _fail(exc: BaseException) -> None:
    """Print one clear line for a user-facing error and exit non-zero."""
    if _state["debug"]:
        raise exc
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def command(name: Optional[str] = None):
    """Register a CLI command whose LatentcatError, or OSError naming a path, becomes one red line
    on stderr and exit code 2 (the traceback with ``--debug``): the one error handler of every command."""

    def register(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            try:
                result = func(*args, **kwargs)
                sys.stdout.flush()  # a full disk or closed pipe on stdout fails here, not at exit
                return result
            except LatentcatError as exc:
                _fail(exc)
            except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
                raise typer.Exit(code=1) from None
            except OSError as exc:  # a path the system refused (no permission, ...), or a full stdout
                if exc.filename:
                    _fail(LatentcatError(f"{exc.filename}: {exc.strerror or exc}"))
                if exc.errno in (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT):  # stdout could not be written
                    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no second flush error at exit
                    _fail(LatentcatError(f"cannot write the output: {exc.strerror or exc}"))
                _fail(LatentcatError(one_line(exc) or type(exc).__name__))

        return app.command(name)(run)

    return register


class OutputFormat(str, Enum):
    """How query commands print their answer."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


CATALOG_OPTION = typer.Option(
    None, "--catalog", envvar="LATENTCAT_CATALOG",
    help="Catalogue folder (default: $LATENTCAT_CATALOG, then ./catalog).",
)
FORMAT_OPTION = typer.Option(OutputFormat.table, "--format", "-f", help="Output format.")
OUTPUT_OPTION = typer.Option(None, "--output", help="Write the result to this file instead of the terminal "
                             "(never inside the catalogue folder; an existing file only with --force).")
FORCE_OPTION = typer.Option(False, "--force", help="Let --output replace an existing file.")


TIMEOUT_OPTION = typer.Option(
    TIMEOUT, "--timeout", min=0, help="Seconds the query or --where filter may run before it is stopped (0: no limit).")


def _open_catalog(path: Optional[Path], allow_external_access: bool = False, timeout: float = TIMEOUT,
                  memory_limit_mib: int = MEMORY_LIMIT_MIB):
    import latentcat

    return latentcat.open(path or Path("catalog"), allow_external_access=allow_external_access,
                          timeout=timeout or None, memory_limit_mib=memory_limit_mib)


def _catalogue_to_write(path: Optional[Path], output: Optional[Path], force: bool) -> Path:
    """The catalogue folder an analysis command writes into; its --output is refused before
    anything is computed or written."""
    with _open_catalog(path) as cat:
        cat_dir = cat.path
    if output is not None:
        _checked_output(output, cat_dir, force)
    return cat_dir


def _checked_output(output: Path, protect: Optional[Path], force: bool, option: str = "--output") -> Path:
    """``output`` (given as ``option``), refused when it lies inside the catalogue folder ``protect``
    or exists without ``force``."""
    output = Path(output)
    if not output.parent.is_dir():
        raise LatentcatError(f"{option} {output}: folder {output.parent} does not exist")
    if protect is not None:
        root, target = Path(protect).resolve(), output.resolve()
        if target == root or root in target.parents:
            raise LatentcatError(f"{option} {output}: inside the catalogue folder {protect}; write elsewhere")
    check_replaceable(output)
    if output.exists() and not force:
        raise LatentcatError(f"{option} {output}: the file exists; give --force to replace it")
    return output


def _emit(table, fmt: OutputFormat, output: Optional[Path], protect: Optional[Path] = None, force: bool = False) -> None:
    """Print (or write to ``output``) an Arrow table as a terminal table, CSV, JSON or Parquet.

    A file is written under a temporary name beside ``output`` and renamed into place, never
    inside the catalogue folder ``protect`` and over an existing file only with ``force``.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if output is not None:
        output = _checked_output(output, protect, force)
    if fmt is OutputFormat.parquet:
        if output is None:
            raise LatentcatError("--format parquet needs --output FILE")
        write_file(output, lambda tmp: pq.write_table(table, tmp))
        return
    if fmt is OutputFormat.csv:
        import io

        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        text = sink.getvalue().decode()
    elif fmt is OutputFormat.json:
        text = json.dumps(table.to_pylist(), indent=1, default=str) + "\n"
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        view = Table(show_lines=False)
        for name in table.column_names:
            view.add_column(Text(name), no_wrap=True)
        for row in table.to_pylist():
            view.add_row(*(Text(_cell(v)) for v in row.values()))  # values are text, never rich markup
        if output is None:
            Console(width=None if sys.stdout.isatty() else 250).print(view)
        else:
            def draw(tmp: Path) -> None:
                with open(tmp, "w") as fh:
                    Console(file=fh, width=250).print(view)

            write_file(output, draw)
        return
    if output:
        write_file(output, lambda tmp: tmp.write_text(text))
    else:
        typer.echo(text, nl=False)


SIMILAR_TABLE_COLUMNS = ("rank", "source_id", "distance", "blocks", "best_class_name", "phot_g_mean_mag",
                         "bp_rp", "period", "g_amplitude", "n_obs")
"""Columns `latentcat similar` shows as a terminal table (csv/json/parquet carry them all)."""


LIKE_TABLE_COLUMNS = ("rank", "source_id", "score", "nearest_member", "blocks", "best_class_name",
                      "phot_g_mean_mag", "bp_rp", "period", "g_amplitude", "n_obs")
"""Columns `latentcat like` shows as a terminal table."""


def _emit_neighbours(table, fmt: OutputFormat, output: Optional[Path], protect: Optional[Path] = None,
                     force: bool = False, columns: tuple[str, ...] = SIMILAR_TABLE_COLUMNS) -> None:
    if fmt is OutputFormat.table:
        table = table.select([c for c in columns if c in table.column_names])
    _emit(table, fmt, output, protect, force)


def _read_ids(path: Path) -> np.ndarray:
    """The source_ids of a text file, one per line; blank lines, ``#`` comments and a first line
    ``source_id`` (a CSV header) are skipped."""
    path = checked_input_file(path, MAX_IDS_FILE_BYTES, "a file of source_ids")
    ids = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise LatentcatError(f"{path} line {number}: not text (give one source_id per line)") from None
            text = line.split("#", 1)[0].strip()
            if not text or (not ids and text.lower() == "source_id"):
                continue
            ids.append(as_source_id(text, f"{path} line {number}"))
    return np.array(ids, dtype=np.int64)


def _similar_many(cat, ids_file: Path, output: Optional[Path], fmt: OutputFormat, force: bool, **query) -> None:
    """`latentcat similar --ids-file`: the neighbours of every source of a file, streamed chunk by
    chunk to a Parquet or CSV file (written under a temporary name, then renamed) behind a
    progress bar on stderr."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if output is None:
        raise LatentcatError("--ids-file writes its answer to --output FILE (.parquet or .csv)")
    if fmt is OutputFormat.table:  # not chosen: by the file name
        fmt = OutputFormat.csv if output.suffix.lower() == ".csv" else OutputFormat.parquet
    if fmt not in (OutputFormat.parquet, OutputFormat.csv):
        raise LatentcatError(f"--ids-file writes parquet or csv, not {fmt.value}")
    output = _checked_output(output, cat.path, force)
    ids = _read_ids(ids_file)
    chunk = 1024
    tables = cat.iter_similar(ids, chunk_size=chunk, **query)  # every source_id is checked first
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        columns = (TextColumn("similar"), BarColumn(), MofNCompleteColumn(), TextColumn("queries"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        writer, done = None, 0
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("similar", total=len(ids))
            try:
                for table in tables:
                    if writer is None:
                        writer = (pq.ParquetWriter(tmp, table.schema) if fmt is OutputFormat.parquet
                                  else pacsv.CSVWriter(tmp, table.schema))
                    writer.write_table(table)
                    rows += table.num_rows
                    done = min(len(ids), done + chunk)
                    progress.update(task, completed=done)
            finally:
                if writer is not None:
                    writer.close()

    write_file(output, write)
    typer.echo(f"{len(ids)} source_ids, {rows} neighbours written to {output}", err=True)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return "" if value is None else str(value)



def _print_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@command()
def simulate(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the simulated archive files into."),
    n: int = typer.Option(10_000, "--n", help="Number of sources."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    epoch_format: str = typer.Option(
        "parquet", "--epoch-format", help="Epoch photometry as bulk 'parquet' or the archive's gzipped ECSV 'ecsv.gz'."
    ),
) -> None:
    """Simulate a Gaia-like survey of variable sources, written in the archive's own formats.

    Writes OUT/archive/ (epoch photometry, XP continuous spectra, gaia_source and
    vari_classifier_result, readable by `latentcat ingest`) and OUT/truth.parquet.
    """
    from latentcat.gaia.simulate import simulate_survey

    summary = simulate_survey(n=n, seed=seed, out=out, epoch_format=epoch_format)
    _print_json(summary)


@command()
def ingest(
    inputs: list[Path] = typer.Argument(..., help="Archive files, DataLink zips or folders of them, in any mix."),
    out: Path = typer.Option(..., "--out", "-o", help="Staging folder to write the canonical Parquet tables into."),
    keep_variability_rejected: bool = typer.Option(
        False, "--keep-variability-rejected", help="Keep epochs flagged rejected_by_variability (dropped by default)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes reading input files (one file per job)."),
    scheduler: str = typer.Option("processes", "--scheduler", help="processes (this machine) or dask (docs/dask.md)."),
    address: str = typer.Option("", "--address", help="A running Dask scheduler (tcp://host:8786); empty: a LocalCluster."),
) -> None:
    """Read Gaia DR3 products (any supported layout) into a canonical staging area.

    Each input file is read by one job (here, in --workers processes, or as a Dask task); the
    merge into the staging tables runs here.
    """
    from latentcat.gaia.ingest import ingest as run_ingest

    report = run_ingest(inputs, out, keep_variability_rejected=keep_variability_rejected,
                        scheduler=scheduler, address=address or None, n_workers=workers)
    _print_json(report)


@command()
def fetch(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the archive responses into."),
    ids: Optional[Path] = typer.Option(None, "--ids", help="Text/CSV file of Gaia DR3 source_ids (one per line or a source_id column)."),
    adql: Optional[str] = typer.Option(None, "--adql", help="ADQL query whose result has a source_id column."),
    chunk_size: int = typer.Option(5000, "--chunk-size", help="source_ids per DataLink request (archive limit 5000)."),
    retries: int = typer.Option(3, "--retries", help="Attempts per chunk before giving up."),
) -> None:
    """Download epoch photometry, XP spectra, classes and gaia_source rows from the Gaia archive."""
    from latentcat.gaia.fetch import fetch as run_fetch

    if (ids is None) == (adql is None):
        raise LatentcatError("give exactly one of --ids FILE or --adql QUERY")
    report = run_fetch(out=out, ids_file=ids, adql=adql, chunk_size=chunk_size, retries=retries)
    _print_json(report)


@command()
def features(
    stage_dir: Path = typer.Argument(..., help="Staging folder written by `latentcat ingest`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the feature shards."),
    shard_size: int = typer.Option(SHARD_SIZE, "--shard-size", help="Sources per shard."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes."),
    min_epochs: int = typer.Option(MIN_EPOCHS, "--min-epochs", help="Fewer cleaned G epochs than this: no light-curve features."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Keep shards finished by an earlier run."),
    scheduler: str = typer.Option("processes", "--scheduler", help="processes (this machine) or dask (docs/dask.md)."),
    address: str = typer.Option("", "--address", help="A running Dask scheduler (tcp://host:8786); empty: a LocalCluster."),
) -> None:
    """Compute dm-dt maps, periods, folded curves and XP vectors from a staging area."""
    from latentcat.features.extract import extract_features

    report = extract_features(
        stage_dir, out, shard_size=shard_size, n_workers=workers, resume=resume, min_epochs=min_epochs,
        scheduler=scheduler, address=address or None,
    )
    _print_json(report)


@command()
def train(
    features_dir: Path = typer.Argument(..., help="Feature shards written by `latentcat features`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained models."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML build configuration (its \\[models] table)."),
    modality: list[str] = typer.Option(["xp", "dmdt", "fold"], "--modality", "-m", help="Model(s) to train: xp, dmdt, fold."),
    device: Optional[str] = typer.Option(
        None, "--device", help="auto, cpu or cuda (default: the config's \\[models] device, else auto)."),
    resume: bool = typer.Option(
        False, "--resume", help="Keep each model already in --out that was trained with the same settings on the same sources."),
) -> None:
    """Train the XP, dm-dt and folded-light-curve VAEs."""
    from latentcat.config import load_build_config
    from latentcat.models.trainer import train as run_train

    build_config = load_build_config(config) if config else None
    train_config = build_config.train if build_config else None
    device = device or (build_config.device if build_config else "auto")
    report = run_train(features_dir, out, config=train_config, modalities=modality, device=device, resume=resume)
    _print_json(report)


@command()
def embed(
    features_dir: Path = typer.Argument(..., help="Feature shards written by `latentcat features`."),
    models: Path = typer.Option(..., "--models", help="Folder written by `latentcat train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the embedding shards."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(
        0, "--threads", help="torch CPU threads per worker (0: torch's default; with -j N local workers, cores / N each)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes encoding shards (one shard per job)."),
    scheduler: str = typer.Option("processes", "--scheduler", help="processes (this machine) or dask (docs/dask.md)."),
    address: str = typer.Option("", "--address", help="A running Dask scheduler (tcp://host:8786); empty: a LocalCluster."),
) -> None:
    """Encode every source into its 15 latent numbers (5 per modality; NULL where a modality is missing)."""
    from latentcat.models.embed import embed as run_embed

    report = run_embed(features_dir, models, out, device=device, threads=threads,
                       scheduler=scheduler, address=address or None, n_workers=workers)
    _print_json(report)


@command()
def build(
    config: Path = typer.Argument(..., help="Build configuration (TOML), e.g. build/demo.toml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Catalogue folder (default: \\[output] catalog of the config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build from its last finished stage."),
) -> None:
    """Run ingest -> features -> train -> embed -> catalogue (DuckDB + FAISS) -> analyse into a catalogue folder."""
    from latentcat.build import build as run_build
    from latentcat.config import load_build_config

    report = run_build(load_build_config(config), out=out, resume=resume)
    typer.echo(f"catalogue: {report['path']}")


@command()
def info(catalog: Optional[Path] = CATALOG_OPTION) -> None:
    """Describe a catalogue: table counts, index types and recall, how it was built."""
    with _open_catalog(catalog) as cat:
        _print_json(cat.info())


@command()
def sql(
    query: str = typer.Argument(..., help="DuckDB SQL over the catalogue's tables, views and macros."),
    catalog: Optional[Path] = CATALOG_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_OPTION,
    force: bool = FORCE_OPTION,
    allow_files: bool = typer.Option(
        False, "--allow-files",
        help="Let the query read other files and reach the network (DuckDB's external access: read_csv, "
             "read_parquet, httpfs). Off by default: a query then reaches nothing but the catalogue.",
    ),
    timeout: float = TIMEOUT_OPTION,
    memory_limit: int = typer.Option(MEMORY_LIMIT_MIB, "--memory-limit", min=64,
                                     help="MiB the query may use, and the largest answer it may give."),
) -> None:
    """Run a read-only SQL query on the catalogue: SELECT (WITH, SHOW, DESCRIBE, SUMMARIZE...), EXPLAIN,
    and CREATE/DROP of temporary views; any statement that could attach, detach or write is refused."""
    with _open_catalog(catalog, allow_files, timeout, memory_limit) as cat:
        _emit(cat.sql(query), fmt, output, cat.path, force)


@command()
def similar(
    source_id: Optional[int] = typer.Argument(None, help="Gaia DR3 source_id of the query source (or use --from-file)."),
    k: int = typer.Option(10, "-k", help="Number of neighbours."),
    modality: str = typer.Option("space", "--modality", "-m", help="space (the search space: latents and colour, on the parts the source has), all (the latent blocks it has), xp, dmdt, fold or a '+'-joined set."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL filter on metadata, applied before the top-k cut."),
    from_file: Optional[Path] = typer.Option(
        None, "--from-file",
        help="Find sources like the data in this file: a CSV with columns time,mag,mag_err (Gaia G), or a Gaia "
             "DataLink epoch-photometry / XP_CONTINUOUS file (G band only; BP/RP epochs are ignored and reported).",
    ),
    time_format: str = typer.Option(
        "gaia", "--time-format",
        help="Time system of a plain CSV: gaia (BJD-2455197.5, default), bjd, jd, mjd. Converted by offset only, "
             "no barycentric correction: give barycentric times.",
    ),
    ids_file: Optional[Path] = typer.Option(
        None, "--ids-file",
        help="A file of source_ids, one per line: the neighbours of each, streamed to --output (.parquet or .csv) "
             "with a progress bar; one table, query_id first.",
    ),
    meta: bool = typer.Option(True, "--meta/--no-meta", help="Join the neighbours' metadata (default), or give "
                              "only rank, source_id, distance and blocks: the fastest, for bulk queries."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Join only these source_meta columns, "
                                          "comma-separated (e.g. phot_g_mean_mag,bp_rp,best_class_name)."),
    file_source_id: Optional[int] = typer.Option(None, "--source-id", help="Which source of a DataLink file holding several."),
    bp_rp: Optional[float] = typer.Option(None, "--bp-rp", help="With --from-file: the source's Gaia BP-RP colour (mag), so the search space compares colour too."),
    catalog: Optional[Path] = CATALOG_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_OPTION,
    force: bool = FORCE_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Find the k sources most like SOURCE_ID (or like your own data, --from-file, or like each source
    of --ids-file): by default in the search space (the latent blocks and the BP-RP colour, scaled by
    the catalogue's stored rule)."""
    if sum(x is not None for x in (source_id, from_file, ids_file)) != 1:
        raise LatentcatError("give exactly one of SOURCE_ID, --from-file FILE or --ids-file FILE")
    if source_id is not None:
        source_id = as_source_id(source_id)
    if columns is not None:
        if not meta:
            raise LatentcatError("give --columns or --no-meta, not both")
        meta = [c.strip() for c in columns.split(",") if c.strip()]
    with _open_catalog(catalog, timeout=timeout) as cat:
        if ids_file is not None:
            _similar_many(cat, ids_file, output, fmt, force, k=k, modality=modality, where=where, with_meta=meta)
            return
        if from_file is None:
            _emit_neighbours(cat.similar(source_id, k=k, modality=modality, where=where, with_meta=meta), fmt,
                             output, cat.path, force)
            return
        from latentcat.query.by_example import similar_to_file

        table, info = similar_to_file(cat, from_file, k=k, modality=modality, where=where,
                                      time_format=time_format, source_id=file_source_id, bp_rp=bp_rp,
                                      with_meta=meta)
        for note in info.get("notes", []):
            typer.echo(f"note: {note}", err=True)
        typer.echo(
            f"query: {info.get('n_obs')} G epochs, period {_cell(info.get('period'))} d, "
            f"amplitude {_cell(info.get('amplitude'))} mag, compared on {info.get('blocks')}", err=True,
        )
        _emit_neighbours(table, fmt, output, cat.path, force)


@command()
def like(
    ids: Path = typer.Option(..., "--ids", help="A file of the set's source_ids, one per line."),
    top: int = typer.Option(100, "--top", help="Show the N sources most like the set."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL filter on the ranked sources' metadata."),
    modality: str = typer.Option("space", "--modality", "-m", help="space (the search space, on the parts every member has), all (the latent blocks), or named parts such as space:dmdt+fold+colour."),
    seed: int = typer.Option(0, "--seed", help="Seed of the self-check's held-out fifth of the set."),
    catalog: Optional[Path] = CATALOG_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_OPTION,
    force: bool = FORCE_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """More like these: rank every other source by its mean distance to its 5 nearest members of a set
    of sources, and check the ranking on a held-out fifth of the set (printed on stderr)."""
    with _open_catalog(catalog, timeout=timeout) as cat:
        if output is not None:
            _checked_output(output, cat.path, force)
        table = cat.like(_read_ids(ids), top=top, where=where, modality=modality, seed=seed)
        info = json.loads(table.schema.metadata[b"like_info"])
        aside = f", {len(info['set_aside'])} set aside (without those parts)" if info["set_aside"] else ""
        typer.echo(f"{info['used']} of {info['members']} members compared on {info['blocks']}{aside}; "
                   f"score: {info['rule']}; {info['ranked']} sources ranked", err=True)
        check = info["self_check"]
        if check is None:
            typer.echo("self-check: needs two members or more", err=True)
        else:
            typer.echo(f"self-check (seed {check['seed']}): of {check['held_out']} members held out, "
                       f"{check['recall']:.0%} rank in the top 1% ({check['top_1pct']} of {check['ranked']} sources; "
                       f"chance {check['chance']:.0%}), median rank {check['median_rank']:g}", err=True)
        _emit_neighbours(table, fmt, output, cat.path, force, columns=LIKE_TABLE_COLUMNS)


@command()
def add(
    catalog_dir: Path = typer.Argument(..., help="The catalogue folder to add to."),
    inputs: list[Path] = typer.Argument(..., help="Archive files or folders with the new sources (any ingest layout)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave sources already in the catalogue untouched (default: replace them)."),
) -> None:
    """Add sources to a catalogue with its own feature settings and trained models (no retraining).

    Atomic: readers see the old or the new catalogue. Prints the drift check: the new sources'
    reconstruction-loss percentiles against the catalogue's.
    """
    from latentcat.catalog.add import add_sources

    report = add_sources(catalog_dir, inputs, skip_existing=skip_existing)
    _print_json(report)


@command()
def classify(
    labels: str = typer.Option("labels.best_class_name", "--labels", help="table.column holding each source's class."),
    model: str = typer.Option("hgb", "--model", help="hgb (gradient-boosted trees, the default), rf or logreg (scikit-learn)."),
    modality: str = typer.Option("space", "--modality", "-m", help="space (each source on the search-space parts it has), all (on the latent blocks it has), xp, dmdt, fold."),
    min_per_class: int = typer.Option(10, "--min-per-class", help="Classes with fewer labelled sources are left out."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Confusion-matrix PNG (default: CATALOG/figures/confusion-MODEL_ID.png)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds and the model."),
    catalog: Optional[Path] = CATALOG_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Train a classifier on the labelled latents, print its cross-validated scores, store predictions."""
    import pyarrow as pa

    from latentcat.analyse import analyse
    from latentcat.plots import plot_confusion

    cat_dir = _catalogue_to_write(catalog, output, force)
    done = analyse(cat_dir, classifier={"labels": labels, "model": model, "modality": modality,
                                        "min_per_class": min_per_class}, seed=seed)
    result, n = done.classifier, done.rows["predictions"]
    figure = figure or cat_dir / "figures" / f"confusion-{result.model_id}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot_confusion(result.confusion, result.classes, out=figure,
                   title=f"{result.model_id}: cross-validated, macro F1 {result.macro_f1:.2f}")
    _emit(result.report, fmt, output, cat_dir, force)
    confusion = pa.table({"true \\ predicted": result.classes,
                          **{c: result.confusion[:, j].tolist() for j, c in enumerate(result.classes)}})
    if fmt is OutputFormat.table and output is None:
        _emit(confusion, fmt, None)
    left = ", ".join(f"{c} ({k})" for c, k in result.left_out.items()) or "none"
    typer.echo(f"model {result.model_id}: macro F1 {result.macro_f1:.3f}; classes left out (too few examples): {left}", err=True)
    if result.baseline:
        b = result.baseline
        typer.echo(f"on the {b['n']} labelled sources with light-curve features: macro F1 {b['macro_f1']:.3f}, "
                   f"the same classifier on the classic light-curve numbers alone {b['baseline_macro_f1']:.3f}", err=True)
    typer.echo(f"{n} predictions written to the predictions table; confusion matrix: {figure}", err=True)


@command()
def outliers(
    top: int = typer.Option(20, "--top", help="Show the N most unusual sources."),
    method: str = typer.Option("isolation_forest", "--method", help="isolation_forest (on the latents) or recon_loss (VAE reconstruction losses)."),
    modality: str = typer.Option("space", "--modality", "-m", help="space (each source on the search-space parts it has), all (on the latent blocks it has), xp, dmdt, fold."),
    seed: int = typer.Option(0, "--seed", help="Seed of the isolation forest."),
    catalog: Optional[Path] = CATALOG_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Rank every source by how unusual it is, store the scores, show the top ones with metadata."""
    from latentcat.analyse import analyse

    cat_dir = _catalogue_to_write(catalog, output, force)
    done = analyse(cat_dir, outliers=[(method, modality)], seed=seed)
    key = done.outliers[0][1].key
    with _open_catalog(cat_dir) as cat:
        shown = cat.sql(
            "SELECT o.rank, o.source_id, o.score, l.best_class_name, s.phot_g_mean_mag, s.bp_rp, "
            "f.period, f.g_amplitude, f.n_obs FROM outlier_scores o LEFT JOIN labels l USING (source_id) "
            "LEFT JOIN sources s USING (source_id) LEFT JOIN features f USING (source_id) "
            "WHERE o.method = $m ORDER BY o.rank LIMIT $n", {"m": key, "n": top})
    _emit(shown, fmt, output, cat_dir, force)


DISCOVER_SQL = (
    "SELECT l.best_class_name, s.phot_g_mean_mag, s.bp_rp, f.period, f.period_reliable, f.g_amplitude, f.n_obs "
    "FROM sources s LEFT JOIN labels l USING (source_id) LEFT JOIN features f USING (source_id) "
    "WHERE s.source_id = $id")


def _ask(prompt: str) -> str:
    """One answer from the terminal: y, n, s(kip) or q(uit); end of input counts as quit."""
    while True:
        try:
            answer = input(prompt).strip().lower()
        except EOFError:
            return "q"
        if answer in ("y", "yes", "n", "no", "s", "skip", "q", "quit"):
            return answer[0]
        typer.echo("answer y (interesting), n (not interesting), s (skip) or q (quit)")


@command()
def discover(
    labels: Path = typer.Option(Path("discoveries.csv"), "--labels", help="Answers file (CSV source_id,interesting): "
                                "resumed from when it exists, rewritten after every answer. Never inside the catalogue."),
    top: int = typer.Option(20, "--top", min=1, help="Show at most N sources this run."),
    oracle: Optional[Path] = typer.Option(None, "--oracle", help="Answer from this CSV (source_id,interesting) instead of "
                                          "asking; sources it does not list are skipped. For scripts and benchmarks."),
    modality: str = typer.Option("space", "--modality", "-m", help="space (the search-space parts every source has), named "
                                 "parts such as space:xp+dmdt+fold+colour, or latent blocks (all, fold, ...)."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL filter on the metadata of the sources shown."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Folder to draw each shown source and its 4 nearest "
                                           "neighbours into (SOURCE_ID.png)."),
    explorer: Optional[str] = typer.Option(None, "--explorer", help="Base URL of a running `latentcat serve` "
                                           "(e.g. http://127.0.0.1:8765): print each source's page link."),
    seed: int = typer.Option(0, "--seed", help="Seed of the isolation forest fitted where the catalogue stores no "
                             "isolation_forest:space outlier scores for the sources shown."),
    catalog: Optional[Path] = CATALOG_OPTION,
) -> None:
    """Active discovery: show unusual sources one at a time, ask whether each is interesting
    (y / n / s(kip) / q(uit)), and learn from every answer which sources to show next (the
    isolation forest's ranking, moved up near sources you called interesting and down near the
    others, in the search space)."""
    from latentcat.analysis.discover import read_answers

    answers = read_answers(oracle) if oracle is not None else None
    with _open_catalog(catalog) as cat:
        _checked_output(labels, cat.path, force=True, option="--labels")  # an existing file is resumed
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
        session = cat.discover(seed=seed, labels=labels if labels.exists() else None, modality=modality, where=where)
        before = len(session.answers)
        typer.echo(f"{session.n_ranked} sources on {session.parts}; {before} answered before (from {labels})", err=True)
        for n in range(1, top + 1):
            sid = session.next()
            if sid is None:
                typer.echo("every source has been shown", err=True)
                break
            row = cat.sql(DISCOVER_SQL, {"id": sid}).to_pylist()
            shown = {k: _cell(v) or "-" for k, v in (row[0] if row else {}).items()}
            flag = "" if row and row[0]["period_reliable"] else " (unreliable)"
            typer.echo(f"[{n}/{top}] {sid}  class {shown.get('best_class_name', '-')}  "
                       f"period {shown.get('period', '-')} d{flag}  G {shown.get('phot_g_mean_mag', '-')}  "
                       f"BP-RP {shown.get('bp_rp', '-')}  amplitude {shown.get('g_amplitude', '-')}  "
                       f"epochs {shown.get('n_obs', '-')}")
            if figures is not None:
                from latentcat.plots.catalog_figures import plot_similar_from_catalog

                plot_similar_from_catalog(cat, sid, k=4, out=figures / f"{sid}.png")
                typer.echo(f"  figure: {figures / f'{sid}.png'}")
            if explorer is not None:
                typer.echo(f"  explorer: {explorer.rstrip('/')}/?source_id={sid}")
            if answers is not None:
                answer = {True: "y", False: "n"}.get(answers.get(sid), "s")
            else:
                answer = _ask("  interesting? [y/n/s/q] ")
            if answer == "q":
                break
            if answer == "s":
                session.skip(sid)
            else:
                session.label(sid, answer == "y")
            session.save(labels)
        c = session.counts
        typer.echo(f"{len(session.answers) - before} shown this run; in all {c['interesting']} interesting, "
                   f"{c['not_interesting']} not interesting, {c['skipped']} skipped; answers in {labels}", err=True)


@command("map")
def map_(
    out: Path = typer.Option(Path("map.png"), "--out", "-o", help="PNG to write."),
    color_by: str = typer.Option("labels.best_class_name", "--color-by",
                                 help="labels.best_class_name, predictions, outlier_score, period or bp_rp."),
    highlight: list[int] = typer.Option([], "--highlight", help="source_id to mark (repeat the option for several)."),
    catalog: Optional[Path] = CATALOG_OPTION,
) -> None:
    """Draw the 2-D latent map of the whole catalogue (rasterised: fast at millions of sources)."""
    from latentcat.plots.catalog_figures import plot_catalog_map

    with _open_catalog(catalog) as cat:
        plot_catalog_map(cat, color_by=color_by, highlight=highlight, out=out)
    typer.echo(f"map written to {out}")


@command()
def plot(
    source_id: int = typer.Argument(..., help="Gaia DR3 source_id of the query source."),
    k: int = typer.Option(8, "-k", help="Number of neighbours to show."),
    modality: str = typer.Option("space", "--modality", "-m", help="space (the search space), all (the latent blocks), xp, dmdt or fold."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL filter on the neighbours' metadata."),
    out: Path = typer.Option(Path("similar.png"), "--out", "-o", help="PNG to write."),
    catalog: Optional[Path] = CATALOG_OPTION,
) -> None:
    """Draw a source and its nearest neighbours: folded light curve, XP spectrum and dm-dt map."""
    from latentcat.plots.catalog_figures import plot_similar_from_catalog

    with _open_catalog(catalog) as cat:
        plot_similar_from_catalog(cat, source_id, k=k, modality=modality, where=where, out=out)
    typer.echo(f"figure written to {out}")


@command()
def report(
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    top: int = typer.Option(8, "--top", help="Outliers to show with thumbnails."),
    catalog: Optional[Path] = CATALOG_OPTION,
) -> None:
    """Write a self-contained HTML report: summary, map, classifier scores, top outliers."""
    from latentcat.report import write_catalog_report

    with _open_catalog(catalog) as cat:
        write_catalog_report(cat, out, top_outliers=top)
    typer.echo(f"report written to {out}")


@command()
def serve(
    catalog: Optional[Path] = CATALOG_OPTION,
    port: int = typer.Option(8765, "--port", help="Port to listen on (0: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on: 127.0.0.1 (this machine only, the default); 0.0.0.0 opens it "
                                  "to the network, for the holders of its access token (printed at start)."),
    stage: Optional[Path] = typer.Option(None, "--stage", help="A `latentcat ingest` staging folder: source pages then "
                                         "show the raw G epochs, which the catalogue does not keep."),
    max_upload_mb: float = typer.Option(MAX_UPLOAD_BYTES / 2**20, "--max-upload-mb",
                                        help="Largest light-curve file accepted (MiB)."),
    timeout: float = typer.Option(SERVE_TIMEOUT, "--timeout", min=0.1,
                                  help="Seconds a page's query (a neighbour filter) may run before it is stopped."),
    answers: Optional[Path] = typer.Option(None, "--answers", help="Discovery answers file (CSV source_id,interesting): "
                                           "resumed from when it exists, rewritten after every answer given on the "
                                           "Discovery and Outliers pages. Never inside the catalogue."),
    token: Optional[str] = typer.Option(None, "--token", envvar="LATENTCAT_SERVE_TOKEN",
                                        help="Access token every request must carry (default: a random one when --host "
                                             "is not a loopback address; none on loopback)."),
    workers: int = typer.Option(1, "--workers", min=1, max=64,
                                help="Processes answering requests (uvicorn's workers), each with the catalogue open "
                                     "read-only; discovery sessions are shared between them through files."),
) -> None:
    """Start a local read-only web explorer of a catalogue: the map, a page per source with its
    neighbours, your own light curve's neighbours, outliers and classes (Ctrl-C stops it)."""
    from latentcat.serve import serve as run_serve

    if not 0 < max_upload_mb <= 1024:
        raise LatentcatError(f"--max-upload-mb must be between 0 and 1024, got {max_upload_mb}")
    if answers is not None:
        _checked_output(answers, catalog or Path("catalog"), force=True, option="--answers")  # an existing file is resumed
    run_serve(catalog or Path("catalog"), host=host, port=port, stage=stage,
              max_upload=int(max_upload_mb * 1024 * 1024), announce=typer.echo, timeout=timeout, answers=answers,
              token=token, workers=workers)


@command()
def demo(
    out: Path = typer.Option(Path("demo_catalog"), "--out", "-o", help="Catalogue folder to write."),
    n: int = typer.Option(20_000, "--n", help="Number of simulated sources."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Simulate a Gaia-like survey, build its catalogue (build/demo.toml) and show example queries."""
    import latentcat
    from latentcat.build import build as run_build
    from latentcat.demo import demo_config, example_queries

    run_build(demo_config(n, seed), out=out)
    with latentcat.open(out) as cat:
        for what, how, answer in example_queries(cat):
            typer.secho(f"\n# {what}\n$ {how}", bold=True)
            _emit(answer, OutputFormat.table, None)
    typer.echo(f"\nThe catalogue is in {out}/ : try `latentcat info --catalog {out}` or `duckdb {out}/catalog.duckdb`.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
