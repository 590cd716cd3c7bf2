"""The ``meshforge`` command. Subcommands only parse options and call library functions.

Errors a user can cause (bad files, bad options) print one line to stderr and never a traceback; the
exit status is 0 when every input succeeded, 1 when any failed, 2 for usage errors, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ._version import __version__
from .devices import DEVICE_CHOICES, check_device, resolve_device
from .errors import MeshforgeError
from .io.files import write_atomic
from .types import Asset, Report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".tga")


def _device(text: str) -> str:
    """argparse type for ``--device``: :func:`meshforge.devices.check_device` (the service's spelling too)."""
    try:
        return check_device(text)
    except MeshforgeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _number(kind: type) -> Callable[[str], object]:
    """argparse type for an integer or real option: the value only; ranges are checked once, by
    :meth:`~meshforge.config.PipelineConfig.validate` (a bad value still exits 2, naming the range)."""

    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _add_option(p: argparse.ArgumentParser, name: str, *, default: object = None) -> None:
    """Add ``--name`` from :data:`meshforge.config.OPTIONS` (type, choices, help with range and default;
    ``default`` replaces the default shown, e.g. ``"the raw's"``). The parsed value is None when not given."""
    from .config import OPTIONS

    option = OPTIONS[name]
    helptext = option.describe(default)
    flag = "--" + name.replace("_", "-")
    if option.choices is not None:
        p.add_argument(flag, choices=option.choices, default=None, help=helptext)
    else:
        p.add_argument(flag, type=_number(option.kind), default=None, help=helptext)


def _add_finish_options(
    p: argparse.ArgumentParser,
    faces: object,
    texture_size: object,
    *,
    fmt: str,
    preset: bool,
    no_texture: bool,
    engine: object = None,
) -> None:
    """The finishing options ``generate``, ``optimize`` and ``export`` share (budgets, engine, formats,
    preview); ``faces``/``texture_size``/``engine`` are the defaults shown in ``--help`` (ranges are checked by
    the configs)."""
    from .config import PRESETS

    if preset:
        p.add_argument(
            "--preset",
            choices=tuple(PRESETS),
            default=None,
            help="named budget: "
            + ", ".join(f"{k} = {v['faces']} faces / {v['texture_size']}²" for k, v in PRESETS.items())
            + "; --faces and --texture-size override it (default: none)",
        )
    _add_option(p, "faces", default=faces)
    _add_option(p, "texture_size", default=texture_size)
    if no_texture:
        p.add_argument("--no-texture", action="store_true", help="vertex colours instead of baked textures (fast)")
    _add_option(p, "finish_engine", default=engine)
    p.add_argument("--format", default=None, help=fmt)
    p.add_argument("--preview", action="store_true", help="also write <stem>.preview.png (rendered views)")


def _add_t2i_options(g: argparse.ArgumentParser) -> None:
    """``generate``'s text-to-image options (:mod:`meshforge.t2i`)."""
    from .t2i import DEFAULT_MODEL, MAX_PROMPT_CHARS

    t = g.add_argument_group("text to image (needs the t2i extra: pip install 'meshforge[t2i]')")
    t.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help=f"make the picture from this prompt (at most {MAX_PROMPT_CHARS} characters; repeatable) (default: none)",
    )
    t.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="a text file of prompts, one per line ('#': comment) (default: none)",
    )
    t.add_argument(
        "-n",
        "--num-images",
        type=_positive_int,
        default=1,
        help="pictures per prompt, seeds seed..seed+n-1 (default: 1)",
    )
    t.add_argument(
        "--t2i-model",
        default=DEFAULT_MODEL,
        metavar="MODEL",
        help=f"diffusers text-to-image model: Hugging Face id or local folder (default: {DEFAULT_MODEL}, Apache-2.0; "
        "'meshforge models list' shows the known ones with their licences)",
    )
    t.add_argument("--t2i-steps", type=_positive_int, default=None, help="sampling steps (default: the model's)")
    t.add_argument("--t2i-guidance", type=_number(float), default=None, help="guidance scale (default: the model's)")
    t.add_argument(
        "--t2i-size",
        type=_positive_int,
        default=None,
        help="square picture size, a multiple of 16 (default: the model's)",
    )
    t.add_argument(
        "--negative-prompt", default=None, metavar="TEXT", help="what to avoid (models that take one) (default: none)"
    )
    t.add_argument(
        "--prompt-template",
        default=None,
        metavar="TEMPLATE",
        help="where the prompt goes, {prompt} marks it (default: one whole object, centred, plain background; "
        "'{prompt}' alone: the prompt as given)",
    )
    t.add_argument(
        "--allow-non-commercial",
        action="store_true",
        help="use a model whose licence forbids or restricts commercial use",
    )
    t.add_argument(
        "--t2i-offload",
        choices=("auto", "on", "off"),
        default="auto",
        help="model CPU offload on the GPU (auto: when the weights do not fit) (default: auto)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshforge", description="Single image → game-ready 3D asset.")
    parser.add_argument("--version", action="version", version=f"meshforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from .backends import REGISTRY
    from .config import PipelineConfig

    d = PipelineConfig()  # the defaults --help shows (a --config file may change them)
    g = sub.add_parser(
        "generate",
        help="turn pictures into GLB assets",
        description="For each input picture write <stem>.glb (and other formats) plus <stem>.report.json. "
        "With --prompt/--prompts, a text-to-image model (diffusers) first makes the picture: for each prompt "
        "<stem>.picture.png (the generated picture), <stem>.cutout.png and the asset, the stem made from the prompt.",
    )
    g.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders of images")
    _add_t2i_options(g)
    g.add_argument("-o", "--output", default=".", metavar="OUTDIR", help="output folder (default: .)")
    g.add_argument(
        "--backend",
        default="auto",
        help=f"reconstruction backend: auto, {', '.join(REGISTRY)}; auto picks the best one whose weights are "
        "present, else the weightless inflate (default: auto)",
    )
    g.add_argument(
        "--weights", default=None, help="weights folder or hub id for backends that need them (default: none)"
    )
    _add_option(g, "resolution")
    _add_finish_options(
        g,
        d.decimate.faces,
        d.bake.texture_size,
        fmt="comma-separated formats: glb,obj,ply,stl (default: glb)",
        preset=False,
        no_texture=True,
    )
    _add_option(g, "foreground_ratio")
    _add_option(g, "background")
    _add_option(g, "bg_engine")
    g.add_argument("--rembg-model", default=None, help="rembg model name (with --bg-engine rembg) (default: none)")
    g.add_argument("--device", type=_device, default="auto", help=f"compute device: {DEVICE_CHOICES} (default: auto)")
    _add_option(g, "seed")
    g.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="pipeline configuration (.toml or .json) (default: none, the built-in defaults shown here)",
    )
    g.add_argument(
        "--save-raw",
        action="store_true",
        help="also write <stem>.mfraw, the raw reconstruction: re-finish it with other budgets by "
        "'meshforge export' without running the network again",
    )
    g.add_argument(
        "--save-intermediates",
        action="store_true",
        help="also write <stem>.cutout.png (the prepared RGBA picture: alpha = the object mask)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    g.add_argument("--debug", action="store_true", help="print tracebacks of unexpected errors")
    g.set_defaults(func=_cmd_generate)

    m = sub.add_parser("models", help="list or download model weights")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    ml = msub.add_parser("list", help="each backend: weights present? where?")
    ml.add_argument("--weights", default=None, help="check this folder or hub id instead of the defaults")
    ml.add_argument("--json", action="store_true", help="print JSON")
    ml.set_defaults(func=_cmd_models_list)
    mp = msub.add_parser("pull", help="download a backend's official weights (Hugging Face cache)")
    mp.add_argument("name", choices=("triposr", "trellis2"))
    mp.add_argument("--revision", default=None, help="branch, tag or commit")
    mp.add_argument("--local-dir", default=None, metavar="DIR", help="download into DIR (then --weights DIR)")
    mp.set_defaults(func=_cmd_models_pull)
    mr = msub.add_parser(
        "random",
        help="write a random checkpoint folder in a backend's official layout (smoke tests, benchmarks)",
        description="Random weights with the official file layout and key names: 'tiny' runs the whole CPU "
        "pipeline in seconds; 'full' has the official sizes (about 4 B parameters for trellis2).",
    )
    mr.add_argument("name", choices=("trellis2", "t2i"))
    mr.add_argument("--size", choices=("tiny", "full"), default="tiny", help="model sizes (default: tiny)")
    mr.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write (then --weights DIR)")
    mr.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    mr.add_argument("--no-dinov3", action="store_true", help="trellis2: do not write the random DINOv3 image encoder")
    mr.add_argument(
        "--device",
        default="cpu",
        help="trellis2: build and initialise the models here (cuda writes a full checkpoint minutes faster; "
        "default %(default)s)",
    )
    mr.set_defaults(func=_cmd_models_random)

    i = sub.add_parser(
        "inspect",
        help="report on a mesh file (counts, topology, UVs, textures; metrics against a reference)",
        description=(
            "Diagnostics of one asset; with --reference also Chamfer distance, F-score, Hausdorff distance, "
            "normal consistency (distances relative to the reference's bounding-box diagonal) and colour PSNR."
        ),
    )
    i.add_argument("file", metavar="FILE", help="mesh file (.glb, .gltf, .obj, .ply, .stl)")
    i.add_argument("--reference", metavar="REF", default=None, help="reference mesh to measure against")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--preview", metavar="PNG", default=None, help="write a preview sheet")
    i.add_argument(
        "--samples", type=_positive_int, default=100_000, help="surface samples for metrics (default: 100000)"
    )
    i.set_defaults(func=_cmd_inspect)

    sv = sub.add_parser(
        "serve",
        help="run the HTTP job service and web studio (needs the serve extra)",
        description="Run the HTTP job service: POST /v1/jobs, GET /v1/jobs/{id}, API docs at /docs, studio at /.",
    )
    from .service.entry import add_arguments as _add_serve_arguments

    _add_serve_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

    wk = sub.add_parser(
        "worker",
        help="run service jobs from a broker, one process per device (needs the scale extra)",
        description="Run the service's jobs from the broker (MESHFORGE_SERVICE_BROKER_URL) on one device per "
        "process, with the shared ledger and object store; API servers run `meshforge serve --workers 0`.",
    )
    from .service.entry import add_worker_arguments as _add_worker_arguments

    _add_worker_arguments(wk)
    wk.set_defaults(func=_cmd_worker)

    o = sub.add_parser(
        "optimize",
        help="turn a dense mesh into a game-ready low-poly asset with baked maps",
        description=(
            "Decimate a dense GLB/glTF/OBJ/PLY/STL mesh to a face budget, unwrap it and bake the source's base "
            "colour, metallic-roughness, normals (and occlusion) onto it."
        ),
    )
    from .optimize import UP_AXES, OptimizeConfig

    od = OptimizeConfig()

    o.add_argument("input", metavar="INPUT", help="mesh file (.glb, .gltf, .obj, .ply, .stl)")
    o.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file (.glb/.obj/.ply/.stl), or a folder (a name without a suffix, or ending in '/')",
    )
    _add_finish_options(
        o,
        od.decimate.faces,
        od.bake.texture_size,
        fmt="comma-separated formats when OUT is a folder (default: glb)",
        preset=True,
        no_texture=False,
    )
    o.add_argument(
        "--up-axis",
        choices=UP_AXES,
        default=od.up_axis,
        help="the source's up axis; z (many scans, CAD and STL files) is rotated to glTF's +Y up, "
        f"(x, y, z) -> (x, z, -y) (default: {od.up_axis})",
    )
    o.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    o.add_argument("--debug", action="store_true", help="print tracebacks of unexpected errors")
    o.set_defaults(func=_cmd_optimize)

    e = sub.add_parser(
        "export",
        help="finish raw reconstructions (.mfraw from generate --save-raw) again, without the network",
        description=(
            "Clean, decimate, unwrap and bake a saved raw reconstruction into an asset with new budgets; no "
            "backend is loaded. Options not given keep the values the raw was generated with."
        ),
    )
    e.add_argument("inputs", nargs="+", metavar="RAW", help=".mfraw files written by generate --save-raw")
    e.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file (.glb/.obj/.ply/.stl) for one RAW, or a folder (a name without a suffix, or ending in '/')",
    )
    _add_finish_options(
        e,
        "the raw's",
        "the raw's",
        fmt="comma-separated formats when OUT is a folder (default: glb)",
        preset=True,
        no_texture=True,
        engine="the raw's",
    )
    e.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    e.add_argument("--debug", action="store_true", help="print tracebacks of unexpected errors")
    e.set_defaults(func=_cmd_export)
    return parser


def _expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files as given; folders expanded to their image files (sorted). Returns (paths, problems)."""
    paths: list[Path] = []
    problems: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{p}: folder holds no image files")
            paths.extend(found)
        else:
            paths.append(p)
    return paths, problems


def _cmd_generate(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm import tqdm

    from .backends import load_backend, resolve_name
    from .config import PipelineConfig
    from .export import FORMATS, safe_stem
    from .export._png import encode_png
    from .pipeline import STAGES, generate
    from .pipeline import run as run_picture
    from .preprocess.background import CutoutRefused
    from .raw import RAW_SUFFIX, dumps_raw
    from .t2i import prompt_stem, text_to_image_stage

    formats = [f.strip().lower() for f in (args.format or "glb").split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        print(f"error: unknown format {', '.join(bad) or '(none)'} (choices: {', '.join(FORMATS)})", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    suffix = out_dir.suffix.lower().lstrip(".")
    if suffix in FORMATS and not args.output.endswith(("/", os.sep)) and not out_dir.is_dir():
        print(
            f"error: -o {args.output}: generate writes into a folder, not a .{suffix} file "
            f"(use -o {out_dir.parent} --format {suffix}, or end the folder's name with '/')",
            file=sys.stderr,
        )
        return 2
    cfg = PipelineConfig.load(args.config) if args.config else PipelineConfig()
    cfg = cfg.with_options(
        resolution=args.resolution,
        faces=args.faces,
        texture_size=args.texture_size,
        textures=False if args.no_texture else None,
        foreground_ratio=args.foreground_ratio,
        background=args.background,
        seed=args.seed,
        save_intermediates=True if args.save_intermediates else None,
        finish_engine=args.finish_engine,
    )
    if args.bg_engine or args.rembg_model:
        pre = dataclasses.replace(
            cfg.preprocess,
            engine=args.bg_engine or cfg.preprocess.engine,
            rembg_model=args.rembg_model or cfg.preprocess.rembg_model,
        )
        cfg = dataclasses.replace(cfg, preprocess=pre)
        cfg.validate()

    from .t2i import T2IConfig, check_prompt

    paths, problems = _expand_inputs(args.inputs)
    prompts: list[str] = list(args.prompt)
    if args.prompts:
        try:
            lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{args.prompts}: cannot read the prompts file ({getattr(exc, 'strerror', None) or exc})")
            lines = []
        prompts += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not lines and not problems:
            problems.append(f"{args.prompts}: the prompts file holds no prompt")
    if not paths and not prompts and not problems:
        print("error: give pictures (INPUT...) or --prompt/--prompts", file=sys.stderr)
        return 2
    good_prompts: list[str] = []
    for text in prompts:
        try:
            good_prompts.append(check_prompt(text))
        except MeshforgeError as exc:
            problems.append(str(exc))
    t2i_cfg = T2IConfig(
        model=args.t2i_model,
        steps=args.t2i_steps,
        guidance=args.t2i_guidance,
        seed=cfg.seed,
        size=args.t2i_size,
        negative_prompt=args.negative_prompt,
        allow_non_commercial=args.allow_non_commercial,
        offload=args.t2i_offload,
        **({"template": args.prompt_template} if args.prompt_template is not None else {}),
    )
    if good_prompts:
        t2i_cfg.validate()  # a bad value: one line, exit 2 (main)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    items: list[Path | tuple[str, int]] = list(paths)
    items += [(prompt, i) for prompt in good_prompts for i in range(args.num_images)]
    if not items:
        return 1
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create output folder {out_dir}: {exc.strerror}", file=sys.stderr)
        return 1

    name, note = resolve_name(args.backend, args.weights)
    if note and not args.quiet:
        print(f"note: {note}", file=sys.stderr)
    # one rule for every entry point: an explicit CUDA device that is not there is an error, not the CPU
    device = resolve_device(args.device)
    t2i = None
    if good_prompts:  # the text-to-image model: loaded once, before the backend (its errors come first)
        from .t2i import load_text_to_image

        try:
            t2i = load_text_to_image(t2i_cfg, device)
        except MeshforgeError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        for warning in t2i.warnings:
            if not args.quiet:
                print(f"warning: {warning}", file=sys.stderr)
    backend = load_backend(name, weights=args.weights, device=device)

    failed, done, total = len(problems), 0, len(items)
    started = time.monotonic()
    used_stems: set[str] = set()
    show_bar = not args.quiet and sys.stderr.isatty()  # no progress-bar debris in logs and pipes
    outer = tqdm(items, desc="images", unit="img", disable=not show_bar or len(items) < 2, file=sys.stderr)
    for index, item in enumerate(outer, start=1):
        item_started = time.monotonic()
        tag = f"[{index}/{total}] " if total > 1 else ""  # a batch says where it is
        prompt: str | None = None
        k = 0
        if isinstance(item, tuple):  # a prompt: named from the prompt (and its number when -n > 1)
            prompt, k = item
            base = prompt_stem(prompt) + (f"-{k + 1}" if args.num_images > 1 else "")
            path = Path(base)
        else:
            path = item
            base = safe_stem(path.stem)  # the name every output file of this input shares
        stem = base
        n = 2
        while stem in used_stems:
            stem, n = f"{base}-{n}", n + 1
        used_stems.add(stem)
        stages = (("text_to_image",) if prompt is not None else ()) + STAGES
        inner = tqdm(
            total=len(stages),
            desc=path.name,
            unit="stage",
            leave=False,
            file=sys.stderr,
            disable=not show_bar or len(paths) > 1,
        )

        def progress(stage: str, index: int, total: int, _bar: tqdm = inner, _shift: int = len(stages) - 7) -> None:
            _bar.set_postfix_str(stage)
            _bar.n = index + _shift
            _bar.refresh()

        report = None
        try:
            if prompt is not None:
                assert t2i is not None
                report = Report()
                progress("text_to_image", -1, len(stages))
                picture = text_to_image_stage(t2i, prompt, t2i_cfg, report, seed=t2i_cfg.seed + k)
                write_atomic(out_dir / f"{stem}.picture.png", encode_png(picture.rgba))
                result = run_picture(picture, backend, cfg, on_progress=progress, report=report)
            else:
                result = generate(path, backend, cfg, on_progress=progress)
            keep_cutout = cfg.save_intermediates or prompt is not None
            extra = {f"{stem}.cutout.png": encode_png(result.prepared.rgba)} if keep_cutout else {}
            if args.save_raw:
                extra[f"{stem}{RAW_SUFFIX}"] = dumps_raw(result.raw)
            _write_outputs(result.asset, result.report, formats, out_dir, stem, preview=args.preview, extra=extra)
        except MeshforgeError as exc:
            failed += 1
            message = tag + (_name_prompt(prompt, exc) if prompt is not None else _name_input(path, exc))
            if isinstance(exc, CutoutRefused) and (cfg.save_intermediates or prompt is not None):
                try:  # let the user see what was refused
                    write_atomic(out_dir / f"{stem}.cutout.png", encode_png(exc.cutout.rgba))
                    message += f" (the refused cut-out is {out_dir / (stem + '.cutout.png')})"
                except OSError:
                    pass
            if prompt is not None and report is not None and report.stages and report.stages[0].name == "text_to_image":
                # the picture was made: say where it is, and keep the report of what ran (timings included)
                message += f" (the picture is {out_dir / (stem + '.picture.png')})"
                partial = report.to_dict()
                partial["outcome"] = f"refused: {' '.join(str(exc).split())}"
                try:
                    write_atomic(
                        out_dir / f"{stem}.report.json", (json.dumps(partial, indent=2, default=str) + "\n").encode()
                    )
                except OSError:
                    pass
            _say_error(outer, message)
            continue
        except MemoryError:
            failed += 1
            _say_error(outer, f"{tag}{path.name}: out of memory (try a lower --resolution or --texture-size)")
            continue
        except Exception as exc:  # an internal error: still one line, and the batch goes on
            failed += 1
            if args.debug:
                traceback.print_exc()
            _say_error(outer, f"{tag}{path.name}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
            continue
        finally:
            inner.close()
        done += 1
        if not args.quiet:
            rep = result.report
            summary = (
                f"{tag}{path.name} -> {out_dir / (stem + '.' + formats[0])}: "
                f"{_faces(result.asset.mesh.n_faces, cfg.decimate.faces)}, "
            )
            if total > 1:  # the item's wall time (writing included) and the batch's estimated time left
                elapsed = time.monotonic() - started
                eta = f", ETA {elapsed / index * (total - index):.0f} s" if index < total else ""
                outer.write(f"{summary}ok ({time.monotonic() - item_started:.1f} s{eta})", file=sys.stderr)
            else:
                print(f"{summary}{rep.total_seconds:.2f} s", file=sys.stderr)
            for warning in rep.warnings:
                print(f"warning: {path.name}: {warning}", file=sys.stderr)
    outer.close()
    if total > 1 and not args.quiet:
        print(f"done {done}, failed {failed} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 1 if failed else 0


def _say_error(bar: object, message: object) -> None:
    from tqdm import tqdm

    text = " ".join(str(message).split())  # always a single line
    tqdm.write(f"error: {text}", file=sys.stderr)  # on a line of its own, even while a bar is drawn


def _cmd_serve(args: argparse.Namespace) -> int:
    from .service.entry import run_from_args

    return run_from_args(args)


def _cmd_worker(args: argparse.Namespace) -> int:
    from .service.entry import worker_main

    return worker_main(
        args.devices, args.data_dir, backend=args.backend, weights=args.weights, log_level=args.log_level
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_command

    try:
        return inspect_command(
            args.file, reference=args.reference, as_json=args.json, preview=args.preview, n_samples=args.samples
        )
    except MeshforgeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


def _cmd_models_list(args: argparse.Namespace) -> int:
    from .backends.weights import format_models, list_models
    from .t2i import format_t2i, t2i_statuses

    statuses = list_models(args.weights)
    t2i = t2i_statuses()
    if args.json:
        entries = [{"kind": "backend", **s.to_dict()} for s in statuses]
        entries += [{"kind": "text-to-image", "backend": None, **t} for t in t2i]
        print(json.dumps(entries, indent=2))
    else:
        print(format_models(statuses) + "\n\ntext-to-image models (--t2i-model):\n" + format_t2i(t2i))
    return 0


def _cmd_models_pull(args: argparse.Namespace) -> int:
    from .backends.weights import pull

    note = ""
    try:
        if args.name == "trellis2":  # two repositories and a gated encoder: the backend's own pull
            from .backends.trellis2.hub import pull as pull_trellis2

            folder, note = pull_trellis2(revision=args.revision, local_dir=args.local_dir)
        else:
            folder = pull(args.name, revision=args.revision, local_dir=args.local_dir)
    except MeshforgeError as exc:  # no network / offline / digest mismatch: one line, exit 1
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(folder)
    if note:
        print(note, file=sys.stderr)
    return 0


def _cmd_models_random(args: argparse.Namespace) -> int:
    def said(ref: str, n_parameters: int) -> None:
        print(f"wrote {ref} ({n_parameters:,} parameters)", file=sys.stderr)

    try:
        if args.name == "t2i":
            from .t2i.random_pipeline import write_random_t2i

            folder = write_random_t2i(args.output, args.size, args.seed, on_model=said)
        else:
            from .backends.trellis2.random_weights import write_random_checkpoint
            from .devices import resolve_device

            folder = write_random_checkpoint(
                args.output,
                args.size,
                args.seed,
                with_dinov3=not args.no_dinov3,
                on_model=said,
                device=resolve_device(args.device),
            )
    except (MeshforgeError, ImportError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from .optimize import OptimizeConfig, optimize

    target = _output_target(args.output, args.format, [Path(args.input)])
    if isinstance(target, str):
        print(f"error: {target}", file=sys.stderr)
        return 2
    out_dir, stems, formats = target
    stem = stems[0]
    cfg = OptimizeConfig().with_options(
        preset=args.preset,
        faces=args.faces,
        texture_size=args.texture_size,
        up_axis=args.up_axis,
        finish_engine=args.finish_engine,
    )
    path = Path(args.input)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        result = optimize(path, cfg)
        _write_outputs(result.asset, result.report, formats, out_dir, stem, preview=args.preview)
    except MeshforgeError as exc:
        print(f"error: {_name_input(path, exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"error: {path}: out of memory (try a smaller --faces or --texture-size)", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {path}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
        return 1
    if not args.quiet:
        rep = result.report
        print(
            f"{path.name} -> {out_dir / (stem + '.' + formats[0])}: {result.source.n_faces()} → "
            f"{_faces(result.asset.mesh.n_faces, cfg.decimate.faces)}, {rep.total_seconds:.2f} s",
            file=sys.stderr,
        )
        for warning in rep.warnings:
            print(f"warning: {path.name}: {warning}", file=sys.stderr)
    return 0


def _output_target(output: str, fmt: str | None, inputs: Sequence[Path]) -> tuple[Path, list[str], list[str]] | str:
    """Where ``-o OUT`` puts each input's files: ``(folder, stem per input, formats)``, or a usage error.

    OUT is a file (``.glb``/``.obj``/...: one input, that format) or a folder (no suffix, a trailing '/',
    or an existing folder: ``<stem>.<format>`` per input, formats from ``--format``, default glb).
    """
    from .export import FORMATS, safe_stem

    out = Path(output)
    suffix = out.suffix.lower().lstrip(".")
    is_folder = not suffix or output.endswith(("/", os.sep)) or out.is_dir()
    if not is_folder and suffix not in FORMATS:
        return (
            f"-o {output}: unknown output format '.{suffix}' (choices: "
            f"{', '.join('.' + f for f in FORMATS)}; or a folder: a name without a suffix, or ending in '/')"
        )
    if not is_folder:
        if fmt:
            return "--format only applies when OUT is a folder"
        if len(inputs) > 1:
            return (
                f"-o {output}: {len(inputs)} inputs need an output folder (a name without a suffix, or ending in '/')"
            )
        return out.parent, [out.stem], [suffix]
    formats = [f.strip().lower() for f in (fmt or "glb").split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        return f"unknown format {', '.join(bad) or '(none)'} (choices: {', '.join(FORMATS)})"
    stems: list[str] = []
    for path in inputs:  # distinct names for inputs that share a stem
        base = stem = safe_stem(path.stem)
        n = 2
        while stem in stems:
            stem, n = f"{base}-{n}", n + 1
        stems.append(stem)
    return out, stems, formats


def _cmd_export(args: argparse.Namespace) -> int:
    """``meshforge export RAW... -o OUT``: :func:`meshforge.pipeline.finish` on saved raws, no backend."""
    from .config import PipelineConfig
    from .pipeline import finish
    from .raw import load_raw
    from .types import Report

    paths = [Path(p) for p in args.inputs]
    target = _output_target(args.output, args.format, paths)
    if isinstance(target, str):
        print(f"error: {target}", file=sys.stderr)
        return 2
    out_dir, stems, formats = target
    # the options' ranges, checked once before any file (a usage error, exit 2, like generate's)
    PipelineConfig().with_options(
        preset=args.preset, faces=args.faces, texture_size=args.texture_size, finish_engine=args.finish_engine
    )
    failed = 0
    for index, (path, stem) in enumerate(zip(paths, stems), start=1):
        tag = f"[{index}/{len(paths)}] " if len(paths) > 1 else ""
        try:
            raw = load_raw(path)
            base = PipelineConfig.from_dict(raw.config) if raw.config else PipelineConfig()  # the raw's own
            # a texture size (or preset) asked for bakes textures even from a raw generated with --no-texture
            textures = False if args.no_texture else (True if args.texture_size or args.preset else None)
            cfg = base.with_options(
                preset=args.preset,
                faces=args.faces,
                texture_size=args.texture_size,
                textures=textures,
                finish_engine=args.finish_engine,
            )
            report = Report()
            report.config = cfg.to_dict()
            report.info["source"] = {"raw": path.name}
            result = finish(raw, cfg, report=report)
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_outputs(result.asset, result.report, formats, out_dir, stem, preview=args.preview)
        except MeshforgeError as exc:
            failed += 1
            print(f"error: {tag}{_name_input(path, exc)}", file=sys.stderr)
            continue
        except OSError as exc:
            failed += 1
            print(f"error: {tag}{path}: {exc.strerror or exc}", file=sys.stderr)
            continue
        except MemoryError:
            failed += 1
            print(f"error: {tag}{path}: out of memory (try a smaller --faces or --texture-size)", file=sys.stderr)
            continue
        except Exception as exc:
            failed += 1
            if args.debug:
                traceback.print_exc()
            print(
                f"error: {tag}{path}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr
            )
            continue
        if not args.quiet:
            rep = result.report
            print(
                f"{tag}{path.name} -> {out_dir / (stem + '.' + formats[0])}: "
                f"{_faces(result.asset.mesh.n_faces, cfg.decimate.faces)}, no backend loaded, "
                f"{rep.total_seconds:.2f} s",
                file=sys.stderr,
            )
            for warning in rep.warnings:
                print(f"warning: {path.name}: {warning}", file=sys.stderr)
    return 1 if failed else 0


def _faces(n_faces: int, budget: int) -> str:
    """``"168 faces (budget 100 not reachable)"``: the count reached, and whether it met the budget (the
    report's warnings say why not)."""
    return f"{n_faces} faces" + (f" (budget {budget} not reachable)" if n_faces > budget else "")


def _name_prompt(prompt: str, exc: BaseException) -> str:
    """The error message led by the prompt, quoted (cut to 60 characters); stages name the picture by its
    stem (:func:`meshforge.t2i.prompt_stem`), which is dropped."""
    from .t2i import prompt_stem

    text = " ".join(str(exc).split())
    text = text.removeprefix(f"{prompt_stem(prompt)}:").lstrip()
    shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    return f"{json.dumps(shown, ensure_ascii=False)}: {text}"


def _name_input(path: Path, exc: BaseException) -> str:
    """The error message led by the input's path (stages name the picture by its stem only)."""
    text = " ".join(str(exc).split())
    label = str(path)
    if text.startswith(f"{label}:"):
        return text
    for prefix in (f"{path.name}:", f"{path.stem}:"):
        if text.startswith(prefix):
            text = text[len(prefix) :].lstrip()
            break
    return f"{label}: {text}"


def _write_outputs(
    asset: Asset,
    report: Report,
    formats: Sequence[str],
    out_dir: Path,
    stem: str,
    *,
    preview: bool,
    extra: dict[str, bytes] | None = None,
) -> None:
    """Export every format (+ preview, + ``extra`` files by name) and the report, each written atomically
    into ``out_dir``."""
    from .export import export_files

    files: dict[str, bytes] = dict(extra or {})
    for fmt in formats:
        files.update(export_files(asset, fmt, stem))
    if preview:
        files[f"{stem}.preview.png"] = _preview_png(asset)
    rep = report.to_dict()
    rep["outputs"] = sorted(files)
    files[f"{stem}.report.json"] = (json.dumps(rep, indent=2, default=str) + "\n").encode()
    for fname, data in files.items():
        write_atomic(out_dir / fname, data)


def _preview_png(asset: object) -> bytes:
    from .eval.diagnostics import preview_sheet
    from .export._png import encode_png

    return encode_png(preview_sheet(asset, size=256))  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshforge`` console script."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except MeshforgeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
