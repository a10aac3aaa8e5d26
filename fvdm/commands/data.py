"""`fvdm data`: pack folders into webdataset shards, inspect shards, write moving digits as shards.

    fvdm data pack SRC DST [--shard-size 1GB] [--frames 16] [--stride 1] [--resize 64] [--format npy]
                   [--autoencoder NAME[:PATH] [--autoencoder-param K=V ...] [--keep-pixels]]
                   [--text-encoder NAME[:PATH] [--text-encoder-param K=V ...] [--missing-caption empty]]
    fvdm data inspect SHARDS [--grid grid.png] [--json]
    fvdm data make-digits DST [--split train] [--num-clips N] [--resolution 32] [--frames 16]
    fvdm data make-tiny-wan DST [--channels 16] [--layers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="pack, inspect and generate video datasets (webdataset shards)",
        description="Dataset tools: convert a folder of videos/frame folders into webdataset shards with a "
        "manifest, inspect shards (counts, checksums, a sample grid PNG), and write the built-in "
        "moving_digits dataset as shards.")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    pk = dsub.add_parser("pack", help="folder dataset -> webdataset shards + manifest.json",
                         description="Convert a video_folder dataset (video files and/or per-video frame "
                         "folders, class subfolders, same-name .txt caption sidecars) into tar shards of clips with "
                         "a manifest (counts, frame sizes, sha256 checksums); with --autoencoder/--text-encoder also "
                         "store each clip's latent and caption embedding, so training runs neither encoder.")
    pk.add_argument("src", help="folder of videos or frame folders (UCF101 layout: SRC/<class>/<video>)")
    pk.add_argument("dst", help="output folder for shard-*.tar and manifest.json")
    pk.add_argument("--shard-size", default="1GB", help="roll over to a new shard past this size (default 1GB)")
    pk.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    pk.add_argument("--stride", type=int, default=1, help="take every s-th frame (default 1)")
    pk.add_argument("--resize", type=int, default=None,
                    help="shorter side to R, then center crop RxR (default: keep; frames must be square)")
    pk.add_argument("--channels", type=int, choices=(1, 3), default=3)
    pk.add_argument("--format", dest="storage", choices=("npy", "mp4", "png", "jpg"), default="npy",
                    help="clip storage: npy (lossless uint8, default), mp4 (small), png/jpg frames")
    pk.add_argument("--clips-per-video", type=int, default=0,
                    help="non-overlapping clips taken per video (0 = all that fit)")
    pk.add_argument("--split-file", default=None, help="only videos listed here (UCF101 trainlist01.txt)")
    pk.add_argument("--labels", choices=("auto", "subfolder", "none"), default="auto")
    pk.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                    help="bad videos: skip with a counted warning (default) or stop with the file name")
    pk.add_argument("--autoencoder", metavar="NAME[:PATH]", default=None,
                    help="also store each clip's latent (float16 KEY.latent.npy), e.g. wan_vae:/models/Wan2.1-T2V-"
                    "1.3B-Diffusers; PATH fills the plugin's path field. Training then skips the encoder")
    pk.add_argument("--autoencoder-param", metavar="KEY=VALUE", action="append", default=[],
                    help="an autoencoder setting, VALUE parsed as YAML (repeatable; e.g. variant=tiny)")
    pk.add_argument("--keep-pixels", action="store_true",
                    help="with --autoencoder, keep the pixel clips too (previews/evaluation read real clips); "
                    "default: latents only")
    pk.add_argument("--text-encoder", metavar="NAME[:PATH]", default=None,
                    help="also store each clip's caption embedding (float16 KEY.text.npy, the prompt's own rows) "
                    "from the video's same-name .txt sidecar, e.g. umt5:/models/Wan2.1-T2V-1.3B-Diffusers")
    pk.add_argument("--text-encoder-param", metavar="KEY=VALUE", action="append", default=[],
                    help="a text encoder setting, VALUE parsed as YAML (repeatable; e.g. max_length=64)")
    pk.add_argument("--missing-caption", choices=("refuse", "empty"), default="refuse",
                    help="with --text-encoder, videos without a caption sidecar: refuse the pack (default) or "
                    "embed the empty prompt for them")
    pk.add_argument("--encode-batch", type=int, default=4, help="clips per encoder call (default 4)")
    pk.add_argument("--device", default="cpu",
                    help="device the autoencoder runs on (default cpu; the text encoder takes device=... as a "
                    "--text-encoder-param)")
    pk.add_argument("--no-progress", action="store_true")
    pk.set_defaults(func=_pack)

    ins = dsub.add_parser("inspect", help="count samples, verify checksums, save a sample grid PNG",
                          description="Read shards (paths, directories, globs, brace patterns, URLs): samples "
                          "per shard, member types, labels, errors, sha256 against manifest.json, and a grid PNG "
                          "(one row per sample).")
    ins.add_argument("shards", nargs="+")
    ins.add_argument("--grid", default="data_grid.png", help="grid PNG path (default data_grid.png; '' disables)")
    ins.add_argument("--grid-samples", type=int, default=8)
    ins.add_argument("--grid-frames", type=int, default=8)
    ins.add_argument("--no-verify", action="store_true", help="skip sha256 checks")
    ins.add_argument("--verify", action="store_true",
                     help="also decode every sample (not only the grid's); exit 1 on any bad member or checksum")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.set_defaults(func=_inspect)

    md = dsub.add_parser("make-digits", help="write the built-in moving_digits dataset as shards",
                         description="Generate moving_digits clips (deterministic in --seed) and write them as "
                         "webdataset shards (uint8 .npy, label .cls = first digit) with a manifest.")
    md.add_argument("dst")
    md.add_argument("--split", choices=("train", "val", "test"), default="train")
    md.add_argument("--num-clips", type=int, default=None, help="default 10000 train / 512 val, test")
    md.add_argument("--resolution", type=int, default=32)
    md.add_argument("--frames", type=int, default=16)
    md.add_argument("--channels", type=int, choices=(1, 3), default=1)
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--shard-size", default="64MB")
    md.add_argument("--format", dest="storage", choices=("npy", "mp4", "png", "jpg"), default="npy")
    md.add_argument("--no-progress", action="store_true")
    md.set_defaults(func=_make_digits)

    mw = dsub.add_parser("make-tiny-wan", help="write a tiny random Wan directory (transformer, vae, text encoder, "
                         "tokenizer)",
                         description="Build a diffusers-format Wan directory with random weights, offline, in "
                         "seconds: DST/transformer (fvdm size tiny), DST/vae, DST/text_encoder, DST/tokenizer. "
                         "Use it to try the whole pretrained path (training, sampling, LoRA, export) without a "
                         "download: backbone {name: wan, size: tiny, pretrained: DST}.")
    mw.add_argument("dst")
    mw.add_argument("--channels", type=int, default=16,
                    help="latent channels (transformer in/out = VAE z_dim); 16, Wan2.1's, lets wan_vae read the vae "
                    "with its default variant (other counts suit transformer-only tests)")
    mw.add_argument("--layers", type=int, default=2)
    mw.add_argument("--seed", type=int, default=0)
    mw.set_defaults(func=_make_tiny_wan)


def _summary(manifest: dict) -> str:
    skipped = manifest.get("skipped", {}).get("count", 0)
    stored = manifest.get("storage") or "no pixels"
    line = (f"wrote {manifest['num_samples']} clips in {manifest['num_shards']} shard(s), frame size "
            f"{manifest.get('frame_size')} ({stored}), {skipped} skipped")
    sizes = manifest.get("bytes_per_clip") or {}
    if manifest.get("latents") and "latent" in sizes:
        ratio = sizes["pixels_uint8"] / sizes["latent"]
        line += (f"; latents {manifest['latents']['latent_shape']} float16: {sizes['latent']:,} B/clip vs "
                 f"{sizes['pixels_uint8']:,} B uint8 pixels ({ratio:.3g}x smaller)")
    if manifest.get("text"):
        line += f"; text embeddings {sizes.get('text_mean', 0):,} B/clip on average"
    return line + "; manifest.json"


def _pack(args: argparse.Namespace) -> int:
    from fvdm.plugins.datasets.pack import pack_folder

    m = pack_folder(args.src, args.dst, shard_size=args.shard_size, frames=args.frames, stride=args.stride,
                    resize=args.resize, channels=args.channels, storage=args.storage,
                    clips_per_video=args.clips_per_video, split_file=args.split_file, labels=args.labels,
                    on_error=args.on_error, progress=not args.no_progress, autoencoder=args.autoencoder,
                    autoencoder_params=args.autoencoder_param, text_encoder=args.text_encoder,
                    text_encoder_params=args.text_encoder_param, keep_pixels=args.keep_pixels,
                    missing_caption=args.missing_caption, encode_batch=args.encode_batch, device=args.device)
    print(f"{args.dst}: " + _summary(m))
    for item in m.get("skipped", {}).get("items", [])[:10]:
        print(f"  skipped {item['source']}: {item['kind']}: {item['reason']}", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from fvdm.plugins.datasets.pack import inspect_shards

    rep = inspect_shards(args.shards if len(args.shards) > 1 else args.shards[0], grid=args.grid or None,
                         grid_samples=args.grid_samples, grid_frames=args.grid_frames, verify=not args.no_verify,
                         decode_all=args.verify)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        decoded = f", {rep.get('decoded', 0)} decoded" if args.verify else ""
        print(f"{rep['num_samples']} samples in {rep['num_shards']} shard(s){decoded}")
        for s in rep["shards"]:
            ok = {True: ", sha256 ok", False: ", SHA256 MISMATCH"}.get(s.get("sha256_ok"), "")
            print(f"  {s['name']}: {s['samples']} samples{ok}")
        print("members: " + ", ".join(f"{k}={v}" for k, v in sorted(rep["extensions"].items())))
        if rep["labels"]:
            print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(rep["labels"].items(), key=lambda kv: kv[0])))
        for e in rep["errors"]:
            print(f"  ERROR {e['source']}: {e['kind']}: {e['reason']}")
        if rep.get("grid"):
            print(f"sample grid: {rep['grid']}")
        if rep.get("note"):
            print(rep["note"])
    return 1 if rep["errors"] else 0


def _make_tiny_wan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fvdm.plugins.backbones.wan_tiny import make_tiny_wan_dir

    if Path(args.dst).exists() and any(Path(args.dst).iterdir()):
        raise ValueError(f"{args.dst} is not empty; give a new directory (nothing was written)")
    root = make_tiny_wan_dir(args.dst, channels=args.channels, layers=args.layers, seed=args.seed)
    # wan_vae checks a directory against Wan2.1's latent space (16 channels); say so rather than hand out a
    # spec that is refused later
    ae = (f"autoencoder {{name: wan_vae, path: {root}}}" if args.channels == 16 else
          f"no autoencoder (wan_vae reads a vae of 16 channels only; this one has {args.channels})")
    print(f"{root}: " + ", ".join(sorted(p.name + "/" for p in root.iterdir())) + "; use backbone {name: wan, size: "
          f"tiny, pretrained: {root}}}, {ae}, text_encoder {{name: umt5, path: {root}}}")
    return 0


def _make_digits(args: argparse.Namespace) -> int:
    from fvdm.plugins.datasets.pack import make_digits

    m = make_digits(args.dst, split=args.split, num_clips=args.num_clips, resolution=args.resolution,
                    num_frames=args.frames, channels=args.channels, seed=args.seed, shard_size=args.shard_size,
                    storage=args.storage, progress=not args.no_progress)
    print(f"{args.dst}: " + _summary(m))
    return 0
