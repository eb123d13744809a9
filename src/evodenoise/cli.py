"""The ``evodenoise`` command line: parse, load, call the library, save, report.

Commands: ``denoise``, ``inpaint`` (both take any number of images or folders) and
``corrupt`` (make noisy / masked test inputs with the benchmark protocol).

Streams: images and JSON Lines go to stdout only when asked for (``-o -``, ``--json``); every
human message, warning, error and progress bar goes to stderr.

Exit codes: 0 every input succeeded (or was skipped), 1 at least one input failed,
2 usage error (bad option value, missing mask, unknown preset or device, output collisions),
130 interrupted (Ctrl-C; no partial output is left behind).
"""

from __future__ import annotations

import copy
import inspect
import signal
import sys
from typing import Annotated, Optional

import typer

from . import __version__
from .cli_options import (
    DataRange,
    Force,
    JsonOut,
    Quiet,
    Seed,
    Text,
    in_io,
    in_noise,
    preset_help,
    restore_options,
)
from .options import Options, UsageError
from .presets import DEFAULT_PRESETS

_EXAMPLES = """\
[bold]Examples[/bold]

  [dim]# one image; σ in 8-bit units; writes photo_denoised.png beside it[/dim]
  evodenoise denoise photo.png --sigma 25

  [dim]# unknown noise: σ is estimated from the image and reported[/dim]
  evodenoise denoise photo.png -o clean.png

  [dim]# a folder (and its subfolders) into another folder, resumable[/dim]
  evodenoise denoise scans/ --recursive --output-dir restored/ --skip-existing

  [dim]# fill holes: white/non-zero mask pixels are missing[/dim]
  evodenoise inpaint photo.png --mask holes.png

  [dim]# pipe: read stdin, write PNG to stdout[/dim]
  cat noisy.png | evodenoise denoise - -o - > clean.png

  [dim]# scripting: one JSON object per input on stdout, exit code 1 if any failed[/dim]
  evodenoise denoise shots/*.png --output-dir out/ --json > results.jsonl

  [dim]# measure on your own image: add noise, restore, compare[/dim]
  evodenoise corrupt clean.png --sigma 25 -o noisy.npy
  evodenoise denoise noisy.npy --sigma 25 --reference clean.png --compare look.png

Exit codes: 0 all inputs succeeded, 1 some input failed, 2 usage error, 130 interrupted.
"""

app = typer.Typer(
    name="evodenoise",
    epilog=_EXAMPLES,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ============================================================================================
# outcomes to exit codes


def _guarded(fn, *args, **kwargs) -> None:
    """Run a command body and map its outcome to the exit code: its own (0 or 1), usage
    errors 2 (one line), interruption 130."""
    try:
        code = fn(*args, **kwargs)
    except UsageError as e:
        _stderr(f"error: {e}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _stderr("\ninterrupted; no partial output was written")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _once(kwargs: dict, single: list[tuple[str, str]]) -> dict:
    """Options that take one value: the value, or a usage error when given more than once
    (the last one silently winning would run with a mask, a reference ... not meant)."""
    for name, flag in single:
        values = kwargs[name]
        if values is not None and len(values) > 1:
            shown = ", ".join(repr(v) for v in values[:3]) + (" ..." if len(values) > 3 else "")
            raise UsageError(f"{flag} given {len(values)} times ({shown}); give it once")
        kwargs[name] = None if values is None else values[0]
    return kwargs


def _stderr(line: str) -> None:
    """One message on stderr (control characters escaped); silent when stderr is gone."""
    from .report import one_line

    try:
        if sys.stderr is not None:
            lead = "\n" if line.startswith("\n") else ""
            sys.stderr.write(lead + one_line(line.strip()) + "\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _restore_command(command: str, doc: str, helps: dict[str, str]) -> None:
    """Declare `command` with the shared options; ``helps`` sets the help texts that differ."""
    signature = inspect.signature(restore_options, eval_str=True)
    params, single = [], []
    for p in signature.parameters.values():
        base, info = p.annotation.__origin__, p.annotation.__metadata__[0]
        if p.name in helps:
            info = copy.copy(info)
            info.help = helps[p.name]
        if base == Text:  # taken as a list, so that an option given twice is seen (below)
            base = Optional[list[str]]  # noqa: UP045 (a runtime value Typer reads)
            decls = [d for d in (info.default, *info.param_decls) if isinstance(d, str)]
            single.append((p.name, next(d for d in decls if d.startswith("--"))))
        params.append(p.replace(annotation=Annotated[base, info]))

    def body(**kwargs) -> None:
        from .runner import run_batch

        _guarded(lambda: run_batch(Options(command=command, **_once(kwargs, single))))

    body.__signature__ = signature.replace(parameters=params)
    body.__name__, body.__doc__ = command, doc
    app.command(name=command, epilog=_EXAMPLES)(body)


_SUFFIX_HELP = "Appended to the input's stem for default output names. \\[default: {}]"

_restore_command(
    "denoise",
    """Remove Gaussian noise from images (zero-shot: the model learns from each image itself).

    Writes [bold]{stem}_denoised.png[/bold] beside each input unless -o/--output-dir say otherwise; never overwrites without --force and never overwrites an input. Bit depth (8/16) and alpha are kept.

    Units: --sigma is in the input's units, 0-255 for 8-bit images. Float inputs (.npy, float TIFF) are on a 0-255 scale unless --data-range says otherwise.
    """,
    {
        "mask": "Also fill missing values (noisy + missing input): mask image of the same size, "
        "[bold]white/non-zero = missing[/bold], black/zero = observed.",
        "sigma": "Noise standard deviation in the input's units: 0-255 for 8-bit images, 0-65535 "
        "for 16-bit, --data-range for float. Must be > 0. Leave out (or [bold]auto[/bold]) "
        "and σ is estimated from the image (the one `evodenoise noise` prints) and reported.",
        "suffix": _SUFFIX_HELP.format("_denoised"),
        "preset": preset_help(DEFAULT_PRESETS["denoise"]),
    },
)

_restore_command(
    "inpaint",
    """Fill in missing pixels/values marked by a mask (zero-shot).

    Mask polarity: [bold]white/non-zero = missing[/bold], black/zero = observed (--invert-mask swaps); the mask must have the image's size.

    Writes [bold]{stem}_inpainted.png[/bold] beside each input unless -o/--output-dir say otherwise. Observed values are kept as they are (unless --sigma says they are noisy too).
    """,
    {
        "mask": "Mask image of the same size as the input(s): [bold]white/non-zero = missing[/bold]"
        ", black/zero = observed (--invert-mask swaps). A colour mask for a colour image "
        "marks each channel's values.",
        "sigma": "The observed values are also noisy with this σ (input units: 0-255 for 8-bit); "
        "then every value is restored, not only the missing ones. Leave out for clean "
        "observed values (σ is learned).",
        "suffix": _SUFFIX_HELP.format("_inpainted"),
        "preset": preset_help(DEFAULT_PRESETS["inpaint"]),
    },
)


@app.command(
    epilog="""\
[bold]Examples[/bold]

  [dim]# noise exactly as the benchmarks add it (float, unclipped): keep it in .npy[/dim]
  evodenoise corrupt clean.png --sigma 25 --seed 0 -o noisy.npy

  [dim]# drop 50 % of the values; writes holes.png and holes_mask.png[/dim]
  evodenoise corrupt clean.png --missing 0.5 -o holes.png
"""
)
def corrupt(
    clean: Annotated[str, typer.Argument(metavar="CLEAN", help="Clean image to corrupt.")],
    output: Annotated[
        str,
        in_io(
            "--output",
            "-o",
            metavar="OUT",
            help="Corrupted image: .npy or .tif keep the noise as float, unclipped (the benchmark "
            "protocol); .png clips and rounds it. [bold]-[/bold] = PNG to stdout.",
        ),
    ],
    sigma: Annotated[
        float | None,
        in_noise(
            "--sigma",
            "-s",
            metavar="S",
            help="Add Gaussian noise of this standard deviation (input units: 0-255 for 8-bit).",
        ),
    ] = None,
    missing: Annotated[
        float | None,
        in_noise(
            "--missing",
            metavar="P",
            help="Drop each value independently with probability P (0 < P < 1); dropped values "
            "become 0 and the mask (white = missing) is written too.",
        ),
    ] = None,
    mask_out: Annotated[
        Text,
        in_io(
            "--mask-out", metavar="FILE", help="Where to write the mask. \\[default: OUT_mask.png]"
        ),
    ] = None,
    per_pixel: Annotated[
        bool,
        in_noise(
            "--per-pixel",
            help="Drop whole pixels (all channels together) instead of single values.",
        ),
    ] = False,
    seed: Seed = 0,
    data_range: DataRange = None,
    force: Force = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Make test inputs: add noise and/or drop values with the benchmark protocol."""
    from .corrupt_cmd import run_corrupt

    _guarded(
        run_corrupt,
        clean,
        output,
        sigma,
        missing,
        mask_out,
        per_pixel,
        seed,
        data_range,
        force,
        json_out,
        quiet,
    )


@app.command(
    epilog="""\
[bold]Examples[/bold]

  [dim]# σ of a camera photo, per channel group (luminance, chroma), in 8-bit units[/dim]
  evodenoise noise photo.png

  [dim]# many images, one JSON object each[/dim]
  evodenoise noise shots/*.png --json > noise.jsonl
"""
)
def noise(
    inputs: Annotated[
        list[str], typer.Argument(metavar="INPUT", help="Images to measure.", show_default=False)
    ],
    data_range: DataRange = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Estimate each image's noise without restoring it: σ per channel group, or, for
    photon-counting noise, the variance's level function per channel.

    The estimates are the ones denoise uses by default: scikit-image's wavelet estimator,
    at the finest scale where the noise is white and on 2x2-block means where it is
    correlated between neighbours, as in camera photos (the finest scale sees a third to a
    half of it; 1.4 times the block-means estimate is assumed there), and, where the noise
    is white and grows with the brightness, a line fitted to local variance against local
    mean.
    """
    from .noise_cmd import run_noise

    _guarded(run_noise, inputs, data_range, json_out, quiet)


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"evodenoise {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Zero-shot image denoising and inpainting with an evolutionary binary-latent VAE.

    No training data, no pre-trained weights: a sparse binary code of each image's patches is learned from the image itself. Reads 8/16-bit PNG and TIFF, JPEG, float .npy/TIFF; --sigma is in the image's units (0-255 for 8-bit). Run [bold]evodenoise COMMAND --help[/bold] for the options.
    """


def _on_signal(signum, frame) -> None:
    """SIGINT and SIGTERM: the first interrupts the run (no partial files are left); from
    then on both are ignored at the OS level (a Python handler would be dropped when the
    interpreter shuts down), so a second signal cannot change the exit code 130."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``evodenoise``)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not in the main thread
            pass
    # click's UsageError (vendored inside newer Typer): the public BadParameter's base class.
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        rc = app(args=argv, prog_name="evodenoise", standalone_mode=False)
    except usage_error as e:  # Typer's own parse errors: one line, exit 2
        where = e.ctx.command_path if e.ctx is not None else "evodenoise"
        first = (e.format_message().strip().splitlines() or ["usage error"])[0]
        _stderr(f"{where}: error: {first} (see '{where} --help')")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _stderr("\ninterrupted; no partial output was written")
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
