"""R1-R4: batch scoring on Ray (`predict --engine ray`) against local `predict`, on IMDb test reviews.

R1  Ray output vs local predict on the same reviews: labels, probabilities, every input row exactly once.
R2  throughput of local predict and of 1 and 2 Ray workers (this machine's cores shared among them).
R3  a scoring worker SIGKILLed mid-job: the job completes with R1's guarantee, and the restart is in the log.
R4  a large input (the test set repeated, ids made unique, one Parquet file per repeat): driver and worker memory
    over time, and hours per million reviews projected to N machines from the measured rate.

Every run is the real command line (`sentiment-lab predict ... --json`) in its own process, so timings include
what a user waits for; the Ray runs start their own local Ray. Local and Ray label 256 reviews per call
(`--chunk-rows 256`), so both cut the same batches. Machine load (os.getloadavg) is recorded before and after
each run: the CPU may be shared.

    python benchmarks/ray_scoring.py runs/quickstart --n 5000 --r3-n 2000 --r4-n 25000 \\
        --out docs/measurements/ray_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sentiment_lab.cli"]
WORKER_TITLE = "ray::MapWorker(MapBatches(BatchScorer))"
BATCH = 256


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def save(results: dict, out: Path) -> None:
    out.write_text(json.dumps(results, indent=2) + "\n")


def write_input(frame: pd.DataFrame, folder: Path, repeats: int = 1, n: int | None = None) -> Path:
    """The reviews as Parquet: one file, or a folder of one file per repeat (ids made unique), cut to n rows."""
    folder.mkdir(parents=True, exist_ok=True)
    if repeats == 1:
        frame.iloc[:n].to_parquet(folder / "reviews.parquet", index=False)
        return folder / "reviews.parquet"
    left = n or len(frame) * repeats
    for k in range(repeats):
        part = frame.iloc[: min(left, len(frame))].assign(id=lambda f, k=k: f["id"].astype(str) + f"-r{k}")
        part.to_parquet(folder / f"part-{k:02d}.parquet", index=False)
        left -= len(part)
        if left <= 0:
            break
    return folder


def run_cli(args: list[str], log_file: Path | None = None, sample: bool = False) -> dict:
    """Run `sentiment-lab predict ... --json`; its summary, wall time, load, and (sample) RSS over time."""
    before = load()
    start = time.perf_counter()
    out = open(log_file, "w") if log_file else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([*CLI, *args, "--json"], stdout=subprocess.PIPE, stderr=out, text=True, cwd=REPO)
    series: list[dict] = []
    stop = threading.Event()
    if sample:
        threading.Thread(target=_sample_rss, args=(proc.pid, start, series, stop), daemon=True).start()
    stdout, _ = proc.communicate()
    stop.set()
    if log_file:
        out.close()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:] if log_file else ""
        sys.exit(f"command failed ({proc.returncode}): {' '.join(args)}\n{tail}")
    summary = json.loads(stdout[stdout.index("{") :])
    return {"summary": summary, "wall_s": wall, "load_before": before, "load_after": load(), "rss": series}


def _sample_rss(driver_pid: int, start: float, series: list[dict], stop: threading.Event) -> None:
    """Every 2 s: RSS of the driver, of the scoring workers, and of Ray's other processes (MiB).

    A worker's RSS counts the pages of Ray's shared object store it has read; `workers_private_mib` leaves them out.
    """
    while not stop.is_set():
        driver = workers = other = shared = 0.0
        n_workers = 0
        for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                rss = p.info["memory_info"].rss / 2**20
                rss_shared = p.info["memory_info"].shared / 2**20
            except (psutil.Error, TypeError, AttributeError):
                continue
            if p.info["pid"] == driver_pid:
                driver = rss
            elif WORKER_TITLE in cmd:
                workers += rss
                shared += rss_shared
                n_workers += 1
            elif cmd.startswith("ray::") or "raylet" in cmd or "gcs_server" in cmd:
                other += rss
        series.append(
            {
                "t": round(time.perf_counter() - start, 1),
                "driver_mib": round(driver),
                "workers_mib": round(workers),
                "workers_private_mib": round(workers - shared),
                "workers": n_workers,
                "ray_other_mib": round(other),
            }
        )
        stop.wait(2.0)


def predict_args(model: str, source: Path, target: Path, workers: int | None, extra: list[str]) -> list[str]:
    args = ["predict", model, "--input", str(source), "--output", str(target), "--chunk-rows", str(BATCH), *extra]
    if workers:
        args += ["--engine", "ray", "--workers", str(workers), "--overwrite"]
    return args


def compare(local: pd.DataFrame, ray_out: pd.DataFrame, ids: pd.Series) -> dict:
    """R1: every input row exactly once, same ids, labels and probabilities."""
    merged = local.merge(ray_out, on="row", suffixes=("_local", "_ray"), how="outer", indicator=True)
    both = merged[merged["_merge"] == "both"]
    diff = (both["prob_pos_local"] - both["prob_pos_ray"]).abs()
    return {
        "rows_in": len(ids),
        "rows_local": len(local),
        "rows_ray": len(ray_out),
        "ray_rows_unique": bool(ray_out["row"].is_unique),
        "ray_rows_are_the_input_rows": sorted(ray_out["row"]) == list(range(len(ids))),
        "ids_match_input": bool((ray_out.sort_values("row")["id"].to_numpy() == ids.astype(str).to_numpy()).all()),
        "only_local": int((merged["_merge"] == "left_only").sum()),
        "only_ray": int((merged["_merge"] == "right_only").sum()),
        "label_agreement": float((both["label_local"] == both["label_ray"]).mean()),
        "labels_differ": int((both["label_local"] != both["label_ray"]).sum()),
        "max_abs_prob_diff": float(diff.max()),
        "identical_probabilities": bool((diff == 0).all()),
    }


def memory(series: list[dict]) -> dict:
    """Peak RSS in the first and the last tenth of a run: flat memory means the two are close."""
    if not series:
        return {}
    tenth = max(1, len(series) // 10)
    return {
        key: [max(x[key] for x in series[:tenth]), max(x[key] for x in series[-tenth:])]
        for key in ("driver_mib", "workers_mib", "workers_private_mib")
    }


def rates(run: dict) -> dict:
    s = run["summary"]
    out = {
        "wall_s": round(run["wall_s"], 1),
        "predicted": s["predicted"],
        "load": [run["load_before"], run["load_after"]],
    }
    out["memory_first_last_tenth"] = memory(run["rss"])
    if "job_s" in s:  # Ray
        steady = s["job_s"] - (s["first_result_s"] or 0)
        out |= {
            "workers": s["workers"],
            "threads_per_worker": s["threads_per_worker"],
            "ray_init_s": round(s["ray_init_s"], 1),
            "first_result_s": round(s["first_result_s"] or 0, 1),
            "job_s": round(s["job_s"], 1),
            "reviews_per_s_job": round(s["predicted"] / s["job_s"], 1),
            "reviews_per_s_steady": round(s["predicted"] / steady, 1) if steady > 0 else None,
        }
    else:
        out |= {"scoring_s": round(s["seconds"], 1), "reviews_per_s": round(s["reviews_per_s"], 1)}
    return out


def r3_kill_worker(args, model: str, source: Path, work: Path, expected_s: float, log_file: Path) -> dict:
    """Start a 2-worker job, SIGKILL one scoring worker once both are scoring, let the job finish."""
    killed: dict = {}

    def killer() -> None:
        seen: dict[int, float] = {}
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
                # this job's workers only: those of the previous job may still be exiting
                if WORKER_TITLE in " ".join(p.info["cmdline"] or []) and p.info["create_time"] >= start:
                    seen.setdefault(p.info["pid"], time.time())
            ready = [pid for pid, t in seen.items() if time.time() - t > args.r3_warmup_s]
            if len(seen) >= 2 and ready:
                time.sleep(expected_s * 0.3)  # mid-job: about a third of the scoring done
                pid = ready[0]
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.update({"pid": pid, "at_s": round(time.time() - start, 1)})
                except ProcessLookupError:
                    killed["error"] = f"worker {pid} had already exited"
                return
            time.sleep(0.5)

    start = time.time()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    run = run_cli(predict_args(model, source, work / "r3-ray", 2, args.extra), log_file)
    thread.join(timeout=1)
    text = log_file.read_text()
    return {
        "run": run,
        "killed": killed,
        "worker_restart_logged": "restarted after a worker died" in text,
        "driver_warned": "Ray restarted them" in text,
        "worker_restarts": run["summary"]["worker_restarts"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="run or model folder (e.g. runs/quickstart)")
    parser.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared/data/imdb")))
    parser.add_argument("--n", type=int, default=5000, help="R1/R2: test reviews")
    parser.add_argument("--r3-n", type=int, default=2000, help="R3: test reviews (the first of R1's)")
    parser.add_argument("--r3-warmup-s", type=float, default=8.0, help="R3: seconds a worker lives before the kill")
    parser.add_argument("--r4-n", type=int, default=200_000, help="R4: reviews (test set repeated, ids unique)")
    parser.add_argument("--r4-workers", type=int, default=2)
    parser.add_argument("--only", default="r1,r2,r3,r4", help="comma-separated subset of r1,r2,r3,r4")
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="more predict flags, e.g. --precision fp32"
    )
    parser.add_argument("--out", default=str(REPO / "docs/measurements/ray_scoring.json"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    test = pd.read_parquet(Path(args.data) / "test.parquet", columns=["id", "text"])
    test = test.sample(frac=1.0, random_state=0).reset_index(drop=True)  # both classes in any prefix
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "load_at_start": load()},
        "model": args.model,
        "batch_rows": BATCH,
        "extra_flags": args.extra,
    }
    work = Path(tempfile.mkdtemp(prefix="ray-scoring-"))
    print(f"work folder {work}", flush=True)

    if only & {"r1", "r2", "r3"}:
        source = write_input(test, work / "r1", n=args.n)
        local = run_cli(predict_args(args.model, source, work / "local.parquet", None, args.extra), sample=True)
        results["R2"] = {"local": rates(local)}
        print("local", results["R2"]["local"], flush=True)
        local_out = pd.read_parquet(work / "local.parquet")
    if only & {"r1", "r2"}:
        results["R1"] = {}
        for workers in (1, 2):
            run = run_cli(predict_args(args.model, source, work / f"ray-{workers}", workers, args.extra), sample=True)
            results["R2"][f"ray_{workers}_workers"] = rates(run)
            results["R1"][f"ray_{workers}_workers"] = compare(
                local_out, pd.read_parquet(work / f"ray-{workers}"), test["id"].iloc[: args.n]
            )
            print(workers, results["R2"][f"ray_{workers}_workers"], results["R1"][f"ray_{workers}_workers"], flush=True)
        local_rate = results["R2"]["local"]["reviews_per_s"]
        for key in ("ray_1_workers", "ray_2_workers"):
            r = results["R2"][key]
            r["overhead_steady_vs_local"] = round(local_rate / r["reviews_per_s_steady"] - 1, 3)
            r["overhead_wall_vs_local"] = round(r["wall_s"] / results["R2"]["local"]["wall_s"] - 1, 3)
        save(results, out)
    if "r3" in only:
        r3_source = write_input(test, work / "r3", n=args.r3_n)
        rate = results["R2"].get("ray_2_workers", {}).get("reviews_per_s_steady") or 50.0
        r3 = r3_kill_worker(args, args.model, r3_source, work, args.r3_n / rate, out.with_name(out.stem + "_r3.txt"))
        r3["R1_check"] = compare(
            local_out[local_out["row"] < args.r3_n], pd.read_parquet(work / "r3-ray"), test["id"].iloc[: args.r3_n]
        )
        r3["rates"] = rates(r3.pop("run"))
        results["R3"] = r3
        print("R3", r3, flush=True)
        save(results, out)
    if "r4" in only:
        repeats = -(-args.r4_n // len(test))
        r4_source = write_input(test, work / "r4", repeats=max(repeats, 2), n=args.r4_n)
        run = run_cli(
            predict_args(args.model, r4_source, work / "r4-ray", args.r4_workers, args.extra),
            out.with_name(out.stem + "_r4.txt"),
            sample=True,
        )
        series = run["rss"]
        tenth = max(1, len(series) // 10)
        rate = run["summary"]["predicted"] / run["summary"]["job_s"]
        results["R4"] = {
            "rows": run["summary"]["rows"],
            "files": len(run["summary"]["files"]),
            "shards": len(run["summary"]["shards"]),
            "rates": rates(run),
            "driver_rss_mib_first_tenth_max": max(s["driver_mib"] for s in series[:tenth]),
            "driver_rss_mib_last_tenth_max": max(s["driver_mib"] for s in series[-tenth:]),
            "driver_rss_mib_peak": max(s["driver_mib"] for s in series),
            "workers_rss_mib_peak": max(s["workers_mib"] for s in series),
            "ray_other_rss_mib_peak": max(s["ray_other_mib"] for s in series),
            "reviews_per_s_per_machine": round(rate, 1),
            # Linear scaling assumed: each machine like this one, the input on shared storage, one driver.
            "hours_per_million": {str(m): round(1e6 / (rate * m) / 3600, 2) for m in (1, 2, 4, 8, 16, 32)},
            "rss_series": series,
        }
        print("R4", {k: v for k, v in results["R4"].items() if k != "rss_series"}, flush=True)
    results["machine"]["load_at_end"] = load()
    save(results, out)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
