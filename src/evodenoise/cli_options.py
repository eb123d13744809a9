"""The options of the command line, each declared once (Typer annotations).

``denoise`` and ``inpaint`` share one signature, :func:`restore_options`; ``cli.py`` declares
the commands with it and their own help texts.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .presets import PRESET_NOTES


def _panel(title: str):
    """``typer.Option`` in the help panel ``title``."""
    return lambda *decls, **kw: typer.Option(*decls, rich_help_panel=title, **kw)


in_io, in_noise, in_model, in_report = map(
    _panel, ("Inputs and outputs", "Noise and masks", "Model", "Reporting")
)
Text = Optional[str]  # noqa: UP045 (a runtime value Typer reads)

# options of every command
Force = Annotated[
    bool, in_io("--force", "-f", help="Overwrite existing outputs (inputs are never overwritten).")
]
DataRange = Annotated[
    float | None,
    in_noise(
        "--data-range",
        metavar="R",
        help="Value of white in float inputs (.npy, float TIFF), and so the unit of --sigma "
        "for them. \\[default: 255]; integer images use their bit depth.",
    ),
]
Seed = Annotated[
    int, in_model("--seed", help="Random seed, 0 to 2**63-1 (results are reproducible).")
]
JsonOut = Annotated[
    bool,
    in_report(
        "--json",
        help="Print one JSON object per input on stdout (JSON Lines), failures "
        "included; human output stays on stderr.",
    ),
]
Quiet = Annotated[bool, in_report("--quiet", "-q", help="Only print errors.")]


def preset_help(default: str) -> str:
    return (
        "Hyperparameter preset. "
        + "; ".join(f"[bold]{name}[/bold]: {PRESET_NOTES[name]}" for name in PRESET_NOTES)
        + f". Times grow with the number of pixels. \\[default: {default}]"
    )


def restore_options(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            show_default=False,
            help="Image files or folders ([bold]-[/bold] reads one image from stdin). Folders give "
            "their image files sorted by name; earlier outputs (*_denoised.*, *_inpainted.*) "
            "and *_mask.* files in them are left out.",
        ),
    ],
    mask: Annotated[Text, in_noise("--mask", "-m", metavar="FILE")] = None,
    mask_dir: Annotated[
        Text,
        in_noise(
            "--mask-dir",
            metavar="DIR",
            help="Masks paired with the inputs by file stem (STEM.* or STEM_mask.*).",
        ),
    ] = None,
    invert_mask: Annotated[
        bool, in_noise("--invert-mask", help="Mask polarity reversed: black/zero = missing.")
    ] = False,
    output: Annotated[
        Text,
        in_io(
            "--output",
            "-o",
            metavar="FILE",
            help="Output file for a single input: .png (8 or 16 bit like the input), .tif (the "
            "input's bit depth) or .npy (float, input scale). [bold]-[/bold] writes PNG to "
            "stdout. Parent folders are created.",
        ),
    ] = None,
    output_dir: Annotated[
        Text,
        in_io(
            "--output-dir",
            "-O",
            metavar="DIR",
            help="Write outputs here (created when missing; subfolders mirrored with --recursive) "
            "instead of beside each input.",
        ),
    ] = None,
    suffix: Annotated[Text, in_io("--suffix")] = None,
    fmt: Annotated[
        str, in_io("--format", metavar="png|tif|npy", help="Format of default output names.")
    ] = "png",
    force: Force = False,
    skip_existing: Annotated[
        bool, in_io("--skip-existing", help="Skip inputs whose output exists (resume a batch).")
    ] = False,
    recursive: Annotated[
        bool, in_io("--recursive", "-r", help="Also take images from subfolders of folder inputs.")
    ] = False,
    shard: Annotated[
        Text,
        in_io(
            "--shard",
            metavar="K/N",
            help="Process only inputs K, K+N, K+2N ... of the sorted input list (0 <= K < N): N "
            "processes or job-array tasks with K = 0 ... N-1 split a batch with no overlap "
            "and no gap.",
        ),
    ] = None,
    sigma: Annotated[Text, in_noise("--sigma", "-s", metavar="S|auto")] = None,
    gain: Annotated[
        Text,
        in_noise(
            "--gain",
            metavar="A",
            help="Photon-counting noise of a known level: input = A·Poisson(clean/A) + "
            "N(0, σ²) in the input's units (A: the value one photon adds; --sigma: the read "
            "noise, none if left out). The level function is then taken as given, not "
            "estimated.",
        ),
    ] = None,
    noise: Annotated[
        Text,
        in_noise(
            "--noise",
            metavar="MODEL",
            help="Noise model: [bold]auto[/bold] (the default: poisson-gaussian where no σ is "
            "given and the noise measures white and growing with the brightness, else "
            "gaussian), [bold]gaussian[/bold] (one σ) or [bold]poisson-gaussian[/bold] "
            "(variance growing with the brightness: photon counts, microscopy; its level "
            "function is estimated per channel and made white by the generalised Anscombe "
            "transform). Same as --set noise_model=MODEL.",
        ),
    ] = None,
    data_range: DataRange = None,
    reference: Annotated[
        Text,
        in_report(
            "--reference",
            metavar="CLEAN",
            help="Clean image: report PSNR (dB, peak = the data range, e.g. 255) and SSIM.",
        ),
    ] = None,
    reference_dir: Annotated[
        Text,
        in_report(
            "--reference-dir",
            metavar="DIR",
            help="Clean images paired with the inputs by file stem, for PSNR/SSIM in batches.",
        ),
    ] = None,
    preset: Annotated[Text, in_model("--preset", "-p", metavar="NAME", show_default=False)] = None,
    epochs: Annotated[
        int | None,
        in_model("--epochs", "-e", metavar="N", help="Override the preset's number of epochs."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        in_model(
            "--set",
            metavar="KEY=VALUE",
            help="Override any config field (repeatable), e.g. --set n_states=32 --set "
            "hidden=128,128 --set chunk_size=1024.",
        ),
    ] = None,
    seed: Seed = 0,
    device: Annotated[
        str,
        in_model(
            "--device",
            "-d",
            metavar="auto|cpu|cuda|cuda:N",
            help="Compute device; auto = CUDA when available, else CPU.",
        ),
    ] = "auto",
    max_memory: Annotated[
        Text,
        in_model(
            "--max-memory",
            metavar="SIZE",
            help="Memory the run may use: bytes or K/M/G/T (powers of 1024), e.g. 4G, 512M, "
            "1.5GB. \\[default: automatic, from free RAM or GPU memory]",
        ),
    ] = None,
    json: JsonOut = False,
    quiet: Quiet = False,
    verbose: Annotated[
        bool, in_report("--verbose", "-v", help="Print details: image info, device, full config.")
    ] = False,
    fail_fast: Annotated[
        bool,
        in_report(
            "--fail-fast",
            help="Stop at the first failed input (default: go on, exit 1 at the end).",
        ),
    ] = False,
    save_fields: Annotated[
        Text,
        in_report(
            "--save-fields",
            metavar="FILE.png",
            help="Write the learned generative fields (decoder output per single active latent) "
            "as a tiled image. With several inputs use {stem} in the name.",
        ),
    ] = None,
    save_log: Annotated[
        Text,
        in_report(
            "--save-log",
            metavar="FILE.json",
            help="Write the per-epoch free energy, σ (input units), mean active latents and "
            "learning rate. With several inputs use {stem} in the name.",
        ),
    ] = None,
    compare: Annotated[
        Text,
        in_report(
            "--compare",
            metavar="FILE.png",
            help="Write a side-by-side image: input, result and (with --reference) the "
            "reference, each with the same magnified detail where the result changed the "
            "input most; with a reference a caption gives PSNR, σ and time. With several "
            "inputs use {stem} in the name.",
        ),
    ] = None,
) -> None:
    """The signature of `denoise` and `inpaint` (see :func:`_restore_command`)."""
