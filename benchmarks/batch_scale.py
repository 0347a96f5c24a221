"""Throughput of dataset-scale jobs on 1 and 2 local worker processes (and optionally Ray).

The dataset is `--copies` hard links (a copy where linking fails) of the real AEA sample
(../shared/data/aea/recording.vrs) and one truncated file, indexed with the real
`dance dataset index` (which must list it as corrupt). Then each job runs through the real CLI
with `--workers 1` and `--workers 2`, each with a fresh `--state` folder, in this one run, so
the speed-up compares figures taken under the same load:

- `dance encode --index` with `aria-image` at `--ratio 800`, every RGB frame (one task per
  recording);
- `dance eval image --index --codec aria-image --ratio 150 --frames 0:2` (one task per
  recording; the codec's highest level is ~408:1 on these frames, so it codes at that level and
  the baselines at its bytes).

Wall seconds are those of the whole command (start-up, spawning workers, loading the codec in
each of them, the merge), since that is what a user waits for. The results of every run must
equal those of `--workers 1` (encode: the JSON totals and every container's bytes and level;
eval: the report without its timing fields), and the script says so. `--ray` adds a run on a
local Ray head (2 CPUs, its own auth token, 127.0.0.1) when the ray package is importable.

    python benchmarks/batch_scale.py [--copies 4] [--eval-frames 0:2] [--jobs encode,eval] [--ray]
                                     [--report r.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dance.batch import local_ray_head  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "aea" / "recording.vrs"
DANCE = [sys.executable, "-m", "pipeline.cli"]
TIMING = {"encode_mp_per_s", "encode_seconds", "seconds", "wall_s"}
CORRUPT_BYTES = 100_000          # a cut-off copy: its records run past the end of the file


def make_dataset(folder: Path, copies: int) -> str:
    """`copies` links of the sample plus one truncated file; returns how they were made."""
    how = "hard links"
    for number in range(copies):
        destination = folder / f"rec{number:03d}.vrs"
        try:
            os.link(SAMPLE, destination)
        except OSError:           # another filesystem, or links not allowed
            shutil.copyfile(SAMPLE, destination)
            how = "copies"
    with open(SAMPLE, "rb") as source:
        (folder / "broken.vrs").write_bytes(source.read(CORRUPT_BYTES))
    return how


def dance(args: list, env: dict | None = None) -> tuple[float, str]:
    """Run the real CLI (its progress bars on our stderr); (wall seconds, stdout)."""
    start = time.perf_counter()
    result = subprocess.run([*DANCE, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: `dance {' '.join(map(str, args))}` exited with {result.returncode}")
    return wall, result.stdout


def tasks_done(state: Path) -> int:
    """Tasks the run finished: one result file each in its state folder (dance/batch.py)."""
    return len(list((state / "tasks").glob("*.json")))


def encode_job(index: Path, work: Path, name: str, placement: list, env, args) -> dict:
    summary = work / f"{name}.json"
    wall, _ = dance(["encode", "--index", index, "-c", "aria-image", "--ratio", "800",
                     "-o", work / f"{name}-coded", "--state", work / f"{name}-state",
                     "--json", summary, *placement], env)
    document = json.loads(summary.read_text())
    containers = [(i["recording"], i["frame"], i["bytes"], i["level"]) for i in document["items"]]
    return {"job": "encode aria-image --ratio 800", "wall_s": wall,
            "units": document["totals"]["items"], "unit": "frames",
            "tasks": tasks_done(work / f"{name}-state"),
            "result": {"totals": document["totals"], "items": containers}}


def eval_job(index: Path, work: Path, name: str, placement: list, env, args) -> dict:
    frames = args.eval_frames
    report = work / f"{name}.json"
    wall, _ = dance(["eval", "image", "--index", index, "--codec", "aria-image", "--ratio", "150",
                     "--frames", frames, "--state", work / f"{name}-state", "--report", report,
                     "--plot", work / f"{name}.png", "--figure", work / f"{name}-fig.png",
                     *placement], env)
    document = json.loads(report.read_text())
    return {"job": f"eval image aria-image --ratio 150 --frames {frames}", "wall_s": wall,
            "units": document["frames"], "unit": "frames",
            "tasks": tasks_done(work / f"{name}-state"), "result": without_timing(document)}


def without_timing(value):
    """A report without the fields that differ from run to run."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    return [without_timing(v) for v in value] if isinstance(value, list) else value


JOBS = {"encode": encode_job, "eval": eval_job}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="recordings in the index (default 4)")
    parser.add_argument("--eval-frames", default="0:2", metavar="START:STOP",
                        help="frames of each recording the eval job scores (default 0:2)")
    parser.add_argument("--jobs", default="encode,eval", metavar="encode,eval",
                        help="which jobs to run (default both)")
    parser.add_argument("--ray", action="store_true", help="also run each job on a local Ray head")
    parser.add_argument("--report", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    if not SAMPLE.is_file():
        sys.exit(f"error: {SAMPLE}: sample recording not found (needs ../shared beside the repo)")
    if args.copies < 1:
        sys.exit(f"error: --copies {args.copies}: need at least 1")
    chosen = args.jobs.split(",")
    if not chosen or any(j not in JOBS for j in chosen):
        sys.exit(f"error: --jobs {args.jobs}: a comma-separated choice of {', '.join(JOBS)}")
    if args.ray:
        try:
            import ray  # noqa: F401 - only whether it is installed
        except ImportError:
            sys.exit("error: --ray needs the ray package: pip install 'dance[scale]'")

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="batch_scale-") as temporary:
        work = Path(temporary)
        data = work / "data"
        data.mkdir()
        how = make_dataset(data, args.copies)
        index = work / "index.parquet"
        _, summary = dance(["dataset", "index", data, "-o", index])
        print(f"dataset: {args.copies} {how} of {SAMPLE.name} + 1 truncated file\n"
              f"  {summary.strip()}", file=sys.stderr)
        if f"{args.copies} ok, 1 corrupt" not in summary:
            sys.exit("error: the index does not list the truncated file as corrupt")

        jobs = {name: JOBS[name] for name in chosen}
        rows = []
        for kind, job in jobs.items():
            for workers in ("1", "2"):
                print(f"-- {kind}, --workers {workers}", file=sys.stderr)
                rows.append({**job(index, work, f"{kind}-w{workers}", ["--workers", workers],
                                   None, args), "workers": workers})
        if args.ray:
            with local_ray_head() as (address, env):
                for kind, job in jobs.items():
                    print(f"-- {kind}, --ray {address}", file=sys.stderr)
                    rows.append({**job(index, work, f"{kind}-ray", ["--ray", address], env, args),
                                 "workers": "ray (2 CPUs)"})
    return report(rows, args, load)


def report(rows: list[dict], args: argparse.Namespace, load: float) -> int:
    """The table, the 2-vs-1 speed-ups, and whether every run's results equal --workers 1's."""
    reference = {r["job"]: r for r in rows if r["workers"] == "1"}
    print("\n| job | workers | tasks | wall s | throughput |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['job']} | {r['workers']} | {r['tasks']} | {r['wall_s']:.1f} | "
              f"{r['units'] / r['wall_s']:.2f} {r['unit']}/s |")
    print()
    same = True
    for job, one in reference.items():
        two = next(r for r in rows if r["job"] == job and r["workers"] == "2")
        print(f"speed-up 2 vs 1 workers, {job}: {one['wall_s'] / two['wall_s']:.2f}x")
        for other in (r for r in rows if r["job"] == job and r is not one):
            equal = other["result"] == one["result"]
            same &= equal
            print(f"  results of {other['workers']} {'equal' if equal else 'DIFFER from'} "
                  f"those of 1 worker")
    print(f"1-minute load average: {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          f"({os.cpu_count()} cores)")
    if args.report:
        args.report.write_text(json.dumps([{k: v for k, v in r.items() if k != "result"}
                                           for r in rows], indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
