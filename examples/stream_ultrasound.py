"""Play a recorded ultrasound clip through edgemed's streaming API, like a live probe at 30 fps.

Uses the 30-frame ultrasound DICOM clip from ../shared/data/dicom (or any multi-frame file),
the shipped BUSI U-Net (converted on the fly if no bundle is given), and writes an overlay
per processed frame. Dropped frames are counted and reported, never hidden.

    python examples/stream_ultrasound.py [--bundle B] [--clip CLIP.dcm] [--fps 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import edgemed
from edgemed.io.overlay import write_segmentation

DEFAULT_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom" / "examples_ybr_color.dcm"


def shipped_unet_bundle(where: Path) -> Path:
    from edgemed.converters.convert import convert
    from edgemed.samples import samples_dir, shipped_model

    weights, card = shipped_model("unet_busi")
    return convert(weights, where / "unet_busi", task="segmentation", input_shape=tuple(card["input_shape"]),
                   arch=card["arch"], arch_args=card["arch_args"], labels=tuple(card["labels"]),
                   preprocess=tuple(card["preprocess"]), calib=samples_dir("busi"))


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path("stream-out"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or shipped_unet_bundle(Path(tmp))
        frames = edgemed.read_frames(args.clip)
        with edgemed.load(bundle, device="cpu") as pipe:
            latencies = []
            for r in pipe.stream(frames, fps=args.fps):
                if r.dropped:
                    print(f"frame {r.index}: dropped (engine behind the {args.fps:g} fps input)")
                    continue
                latencies.append(r.latency)
                write_segmentation(args.out, f"frame_{r.index:03d}", frames[r.index], r.mask)
            stats = pipe.last_stream_stats
    lat = np.array(latencies) * 1e3
    print(f"{stats['processed']} frames processed, {stats['dropped']} dropped of {stats['submitted']} "
          f"({stats['results_dropped']} results not taken in time); "
          f"latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; overlays in {args.out}")
    return stats


if __name__ == "__main__":
    main()
