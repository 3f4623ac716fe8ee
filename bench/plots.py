"""PNG plots of one bench/run.py run: the online route vs concurrency, the offline job's stages, throughput
side by side. Needs matplotlib (the `bench` extra)."""
from pathlib import Path

STAGE_ORDER = ("listing", "read", "decode", "segment", "trace", "commit", "ledger")


def plot_all(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    return [serve_plot(results["serve_load"], out_dir / "serve_load.png"),
            stages_plot(results["batch_throughput"], out_dir / "stage_breakdown.png"),
            throughput_plot(results["batch_throughput"], out_dir / "offline_throughput.png")]


def serve_plot(serve: dict, path: Path) -> Path:
    """Answers/s and p50/p99 latency against concurrent clients, one line per max_batch_size."""
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for batch in sorted({r["max_batch_size"] for r in serve["runs"]}, reverse=True):
        runs = sorted((r for r in serve["runs"] if r["max_batch_size"] == batch), key=lambda r: r["concurrency"])
        levels = [r["concurrency"] for r in runs]
        ax1.plot(levels, [r["ok_per_s"] for r in runs], "o-", label=f"batch {batch}")
        line = ax2.plot(levels, [r["p50_s"] for r in runs], "o-", label=f"batch {batch} p50")[0]
        ax2.plot(levels, [r["p99_s"] for r in runs], "s--", color=line.get_color(), label=f"batch {batch} p99")
        for r in runs:
            ax1.annotate(f"{r['mean_batch']:.1f}", (r["concurrency"], r["ok_per_s"]), fontsize=7,
                         textcoords="offset points", xytext=(3, 3))
    ax1.set(xscale="log", xlabel="concurrent clients", ylabel="answers/s", title="throughput (labels: mean batch)")
    ax2.set(xscale="log", xlabel="concurrent clients", ylabel="seconds", title="latency")
    for ax in (ax1, ax2):
        ax.set_xticks(sorted({r["concurrency"] for r in serve["runs"]}))
        ax.get_xaxis().set_major_formatter(matplotlib_scalar())
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"online route, {serve['scan']}, {serve['cpus']} CPUs ({serve['date_utc']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stages_plot(batch: dict, path: Path) -> Path:
    """Left: seconds per scan spent in each step of the job (summed over its tasks; steps overlap). Right: the
    job's wall time split at the end of its start-up, against the time the same scans take at the model's limit
    (the actor's own segmenting and tracing can exceed the wall time: two batches run in it at once)."""
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    jobs = {k: v for k, v in batch["jobs"].items() if v["replicas"] == 1}
    width = 0.8 / max(len(jobs), 1)
    for i, (name, job) in enumerate(jobs.items()):
        per_scan = {**job["per_scan_s"], "listing": job["listing_s_per_scan"], "ledger": job["ledger_s"] / job["listed"]}
        xs = [j + i * width for j in range(len(STAGE_ORDER))]
        ax1.bar(xs, [per_scan[s] for s in STAGE_ORDER], width, label=f"{name.split('_')[0]} root")
    ax1.set_xticks([j + width * (len(jobs) - 1) / 2 for j in range(len(STAGE_ORDER))], STAGE_ORDER)
    ax1.set(ylabel="seconds per scan", title="work per step (summed over its tasks; steps overlap)")
    ax1.legend(fontsize=8)
    names = [n.split("_")[0] for n in jobs]
    parts = {"start-up (actor, first reads)": [j["startup_s"] for j in jobs.values()],
             "streaming": [j["wall_s"] - j["startup_s"] for j in jobs.values()]}
    bottoms = [0.0] * len(jobs)
    for label, values in parts.items():
        ax2.bar(names, values, 0.5, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    for k, job in enumerate(jobs.values()):
        ax2.hlines(job["model_s"], k - 0.3, k + 0.3, colors="k", zorder=3,
                   label="the same scans at the model's limit" if k == 0 else None)
    for k, job in enumerate(jobs.values()):
        ax2.annotate(f"{job['pipeline_over_model']:.0%} of the limit\nmodel busy {job['model_busy']:.0%}",
                     (k, max(job["wall_s"], job["model_s"])), ha="center", textcoords="offset points",
                     xytext=(0, 3), fontsize=8)
    ax2.set(ylabel="seconds", title=f"job wall time, {batch['n']} scans of {batch['size']}")
    ax2.set_ylim(0, max(max(j["wall_s"], j["model_s"]) for j in jobs.values()) * 1.5)
    ax2.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"offline job, batch {batch['batch_size']}, {batch['cpus']} CPUs ({batch['date_utc']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_plot(batch: dict, path: Path) -> Path:
    """Images/s: the naive loop, the job (1 and 2 actors, local and S3) and the model's limit, one run."""
    import matplotlib.pyplot as plt
    bars = {"naive loop": batch["naive_images_per_s"]}
    bars.update({f"job {k.split('_')[0]}, {v['replicas']} actor{'s' * (v['replicas'] > 1)}": v["images_per_s"]
                 for k, v in batch["jobs"].items()})
    bars["model's limit (1 actor)"] = batch["model_images_per_s"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(list(bars), list(bars.values()), color=["grey"] + ["tab:blue"] * (len(bars) - 2) + ["k"])
    for y, v in enumerate(bars.values()):
        ax.annotate(f"{v:.2f}", (v, y), va="center", textcoords="offset points", xytext=(3, 0), fontsize=8)
    ax.set(xlabel="images/s", title=f"offline, {batch['n']} scans of {batch['size']}, {batch['cpus']} CPUs "
                                    f"({batch['date_utc']})")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def matplotlib_scalar():
    from matplotlib.ticker import ScalarFormatter
    return ScalarFormatter()
