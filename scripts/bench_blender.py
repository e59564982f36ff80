"""Time the add-on's scene updates with the bpy wheel: `.venv-blender/bin/python scripts/bench_blender.py`.

Decoding a streamed 3DGS PLY (reader thread), creating the Gaussian object, updating it in place, a count
change, Geometry Nodes evaluation of the display, and one pump() call applying a pending snapshot. Medians of
--repeats runs; numbers go to docs/PERFORMANCE.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="distillery-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy
import numpy as np

from addon import runtime, scene_sync
from addon.client import ply, splat


def cloud(n: int, degree: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = {k: rng.normal(size=n).astype(np.float32) for k in ply.gaussian_names(degree)}
    for i in range(3):
        a[f"scale_{i}"] = np.log(rng.uniform(0.005, 0.02, n)).astype(np.float32)
    return a


def alternating(scene, job_id: str, choices: list[dict]):
    """A callable that applies the given snapshots in turn to job `job_id`'s object."""
    turn = [0]

    def apply() -> None:
        scene_sync.apply_snapshot(scene, job_id, "gaussians", choices[turn[0] % len(choices)], name="bench")
        turn[0] += 1

    return apply


def evaluator(obj, dg, choices: list[dict]):
    turn = [0]

    def run() -> None:
        scene_sync.set_gaussians(obj.data, choices[turn[0] % len(choices)])
        turn[0] += 1
        dg.update()

    return run


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def big_file_rows(megabytes: float) -> list[tuple[str, float]]:
    """Reading a large 3DGS PLY file (SH degree 3) as the import's worker thread does: seconds, and the peak
    of Python-tracked memory (numpy arrays included) relative to the file size."""
    import tracemalloc

    n = int(megabytes * 1e6 / (4 * len(ply.gaussian_names(3))))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.ply"
        ply.write_gaussians(path, cloud(n, 3, 7))
        size = path.stat().st_size
        tracemalloc.start()
        t0 = time.perf_counter()
        arrays = ply.read_gaussians(path)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(arrays["x"]) == n
    return [(f"read a {size / 1e6:.0f} MB PLY file ({n} Gaussians, SH3), worker thread", seconds * 1e3, "ms"),
            ("  its peak traced memory, in file sizes", peak / size, "x")]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--big-mb", type=float, default=100.0, help="size of the large PLY file read at the end")
    args = p.parse_args()
    n, r = args.count, args.repeats
    scene = bpy.context.scene
    rows = []
    for degree in (0, 3):
        blobs = [ply.write_gaussians(None, cloud(n, degree, s)) for s in range(2)]
        arrays = [splat.with_display(ply.read_gaussians(b)) for b in blobs]  # what the reader thread posts
        if degree == 0:
            live = arrays  # previews are SH0
        rows.append((f"decode PLY bytes (SH{degree}, {len(blobs[0]) / 1e6:.1f} MB) + display maths, reader thread",
                     timed(lambda b=blobs[0]: splat.with_display(ply.read_gaussians(b)), r)))

        def create(a=arrays[0], d=degree):
            obj = scene_sync.apply_snapshot(scene, f"bench-{d}", "gaussians", a, name="bench")
            scene_sync.remove_objects(f"bench-{d}")
            return obj

        rows.append((f"create object + attributes (SH{degree})", timed(create, r)))
        scene_sync.apply_snapshot(scene, f"bench-{degree}", "gaussians", arrays[0], name="bench")
        update = alternating(scene, f"bench-{degree}", [arrays[1], arrays[0]])
        rows.append((f"update in place, same count (SH{degree})", timed(update, r)))
        smaller = splat.with_display({k: v[: n - 1000] for k, v in arrays[0].items() if k not in splat.NAMES})
        resize = alternating(scene, f"bench-{degree}", [smaller, arrays[1]])
        rows.append((f"update with a count change (SH{degree})", timed(resize, r)))
        scene_sync.remove_objects(f"bench-{degree}")

    obj = scene_sync.apply_snapshot(scene, "bench-gn", "gaussians", live[0], name="bench")
    cam = bpy.data.objects.new("bench-camera", bpy.data.cameras.new("bench-camera"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -3.0, 0.5)
    scene.camera = cam
    dg = bpy.context.evaluated_depsgraph_get()
    for mode in ("points", "camera", "ellipsoids"):  # ellipsoids (the default) last: the pump below uses it
        scene_sync.set_display(obj, mode)
        dg.update()

        evaluate = evaluator(obj, dg, live)
        rows.append((f"update + Geometry Nodes evaluation, SH0 ({mode})", timed(evaluate, r)))

    import addon

    addon.register()
    item = scene.distillery.history.add()
    item.job_id, item.prompt, item.state = "bench-gn", "bench", "running"
    rt = runtime.RUNTIME
    pump_times = []
    for i in range(r):
        rt.mailbox.post_geometry("bench-gn", {"kind": "gaussians", "payload": live[i % 2], "step": i,
                                              "final": False})
        t0 = time.perf_counter()
        runtime.pump()
        pump_times.append(time.perf_counter() - t0)
    assert obj.get(scene_sync.STEP_KEY) == r - 1
    rows.append(("pump() applying a pending snapshot (ellipsoids)", statistics.median(pump_times) * 1e3))

    def pump_and_evaluate() -> None:  # what the main thread spends per live update, drawing aside
        rt.mailbox.post_geometry("bench-gn", {"kind": "gaussians", "payload": live[pump_and_evaluate.i % 2],
                                              "step": 0, "final": False})
        pump_and_evaluate.i += 1
        runtime.pump()
        dg.update()

    pump_and_evaluate.i = 0
    rows.append(("pump() + Geometry Nodes evaluation (ellipsoids): main thread per live update",
                 timed(pump_and_evaluate, r)))
    addon.unregister()
    rows += big_file_rows(args.big_mb)

    width = max(len(row[0]) for row in rows)
    print(f"{n} Gaussians, bpy {bpy.app.version_string}, medians of {r} runs")
    for k, v, *unit in rows:
        print(f"{k:<{width}}  {v:8.1f} {unit[0] if unit else 'ms'}")


if __name__ == "__main__":
    main()
