"""Group maps: which parameter group DyPS's selector puts each agent in, early to late in training.

After Figure 6b of the DyPS paper. Trains DyPS on one scenario in chunks (`make_train_fns`), takes
`--snapshots` snapshots of the selector's assignment probabilities a_g (eq. 13,
`dyps_jax.group_probabilities`, f32[E, N, M]) at evenly spaced iterations, the first after one
iteration and the last at the end of the budget, and writes `experiments/results/groups_<stem>.png`
(one map per snapshot) and `groups_<stem>.json`.

A map colours each agent by its modal group: the most common argmax of a_g over the E parallel
environments. Opacity is the confidence, the mean over environments of the largest probability
(1/M faint, 1 solid). Agreement is the share of environments whose argmax is the modal group; it is
written in a cell (percent, blank when all agree) or drawn as an x (point maps) when below 1.

Layouts:

* ride-hailing: the city's hexagonal grid (`HexGrid`: cell (i, j) = row i, column j; flat-topped
  hexagons, odd columns half a cell higher than even ones, row 0 at the top), one hexagon per cell.
* medical: one point per CBG at its centroid. The synthetic city (`envs/cities.py`) draws its
  centroids from a polycentric mixture (km): a made-up metropolis with Atlanta's statistics, not
  Atlanta's geography, and the figure says so. A city file without coordinates places CBGs by two
  static features the policy observes instead: log population and age-weighted IFR.
* other scenarios (lbf, rware, rolegame): a strip of agents by index (with their type, if any).

JSON, per snapshot: iteration, env_steps, the argmax group of every agent in env 0 and its largest
probability, the modal group, confidence and agreement of every agent, group sizes (modal; and the
mean over environments of the argmax counts), the share of agents whose modal group changed since
the previous snapshot, the mean selector entropy of a_g, and the mean team return of the
iterations since the previous snapshot.

    python experiments/group_maps.py --env ridehailing-1
    python experiments/group_maps.py --env ridehailing-2 --total-steps 150000 --snapshots 4
    python experiments/group_maps.py --env medical --total-steps 12600 --num-envs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

import dyps_jax  # noqa: E402
from dyps_jax.checkpoint import write_atomic  # noqa: E402
from dyps_jax.config import TrainConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class Layout(NamedTuple):
    """Where agents go on a map: centres, and the polygon drawn around each (None: points)."""

    xy: np.ndarray  # f32[N, 2]
    cell: np.ndarray | None  # f32[V, 2], polygon vertices relative to a centre
    caption: str
    xlabel: str = ""
    ylabel: str = ""
    ticks: list[str] | None = None  # x tick labels, one per agent (strip)
    equal: bool = True  # both axes in the same unit


def make_layout(config: TrainConfig) -> Layout:
    """The map layout of a scenario (module docstring)."""
    env = config.env.build()
    if config.env.kind == "ridehailing":
        q, r = env.grid.axial().T
        xy = np.stack([1.5 * q, -np.sqrt(3.0) * (r + q / 2)], axis=1)
        angles = np.deg2rad(np.arange(0, 360, 60))
        return Layout(xy, 0.97 * np.stack([np.cos(angles), np.sin(angles)], axis=1),
                      f"hexagonal city, {env.rows} x {env.cols} cells, row 0 at the top")
    if config.env.kind == "medical":
        city = env.city
        if env.city_path and not city.cbg_xy.any():
            return Layout(np.stack([np.log(city.population), 100 * city.ifr], axis=1), None,
                          f"{env.city_path} has no CBG coordinates: CBGs placed by two observed "
                          "features, not geography", "log population", "age-weighted IFR (%)",
                          equal=False)
        source = (f"CBG centroids of {env.city_path}" if env.city_path else
                  f"synthetic city (seed {env.city_seed}): generated CBG centroids, "
                  "not real Atlanta geography")
        return Layout(city.cbg_xy, None, source, "x (km)", "y (km)")
    n = env.num_agents
    types = getattr(env, "agent_types", None)
    ticks = [f"{a}" if types is None else f"{a}\nt{types[a]}" for a in range(n)]
    square = 0.45 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
    return Layout(np.stack([np.arange(n), np.zeros(n)], axis=1), square,
                  "agents by index" + ("" if types is None else " (t = agent type)"), ticks=ticks)


class Snapshot(NamedTuple):
    """The selector's assignment at one point of training, summarised per agent."""

    iteration: int
    env_steps: int
    group_env0: np.ndarray  # int[N]
    max_prob_env0: np.ndarray  # float[N]
    modal: np.ndarray  # int[N]
    confidence: np.ndarray  # float[N], mean over envs of the largest probability
    agreement: np.ndarray  # float[N], share of envs whose argmax is the modal group
    entropy: float  # mean over envs and agents of the entropy of a_g


def snapshot(probs: np.ndarray, iteration: int, env_steps: int) -> Snapshot:
    """Summarises assignment probabilities f32[E, N, M]."""
    probs = probs.astype(np.float64)  # rounds to short decimals in the JSON
    choice = probs.argmax(-1)  # [E, N]
    m = probs.shape[-1]
    counts = np.stack([(choice == g).sum(0) for g in range(m)], axis=-1)  # [N, M]
    modal = counts.argmax(-1)
    entropy = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1).mean()
    return Snapshot(iteration, env_steps, choice[0], probs[0].max(-1), modal,
                    probs.max(-1).mean(0), (choice == modal).mean(0), float(entropy))


def draw(ax: plt.Axes, layout: Layout, snap: Snapshot, colours: np.ndarray) -> None:
    """One map: agents coloured by modal group, opacity by confidence, agreement marked."""
    m = len(colours)
    strength = (snap.confidence - 1 / m) / (1 - 1 / m) if m > 1 else np.ones_like(snap.confidence)
    rgba = colours[snap.modal].copy()
    rgba[:, 3] = 0.3 + 0.7 * np.clip(strength, 0.0, 1.0)
    split = snap.agreement < 1
    if layout.cell is None:
        for mask, marker, width in ((~split, "o", 0.0), (split, "x", 0.8)):
            ax.scatter(*layout.xy[mask].T, c=rgba[mask], s=7, marker=marker, linewidths=width)
    else:
        ax.add_collection(PolyCollection(layout.xy[:, None] + layout.cell[None], facecolors=rgba,
                                         edgecolors="0.35", linewidths=0.5))
        size = 7 if len(layout.xy) <= 50 else 5
        for (x, y), share in zip(layout.xy[split], snap.agreement[split]):
            ax.text(x, y, f"{100 * share:.0f}", ha="center", va="center", fontsize=size)
        ax.autoscale_view()
    ax.set_aspect("equal" if layout.equal else "auto")
    ax.set_xlabel(layout.xlabel)
    ax.set_ylabel(layout.ylabel)
    if layout.ticks is not None:
        ax.set_xticks(np.arange(len(layout.ticks)), layout.ticks, fontsize=7)
        ax.set_yticks([])
    elif not layout.xlabel:
        ax.set_axis_off()


def save_png(fig: plt.Figure, path: Path) -> None:
    """Writes a figure to `path` through a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=130)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ridehailing-1")
    parser.add_argument("--total-steps", type=int, help="default: the preset's")
    parser.add_argument("--num-envs", type=int, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshots", type=int, default=3)
    parser.add_argument("--name", default="", help="results file stem (default: the env name)")
    args = parser.parse_args()
    if args.snapshots < 1:
        parser.error("--snapshots: must be >= 1")
    overrides = {k: v for k, v in (("total_steps", args.total_steps),
                                   ("num_envs", args.num_envs)) if v is not None}
    config = dyps_jax.make_config(env=args.env, method="dyps", seed=args.seed, **overrides)
    layout = make_layout(config)
    fns = dyps_jax.make_train_fns(config)
    state = jax.jit(fns.init)(jax.random.key(args.seed))
    iterate = jax.jit(fns.iterate, static_argnums=1)

    # The chunk between two snapshots runs as calls of one iteration each: one compile (a chunk
    # length is static), and an iteration is E whole episodes, so the host round trips are cheap.
    total, m = config.num_iterations, config.num_param_sets
    points = np.unique(np.linspace(1, total, args.snapshots).round().astype(int))
    snaps, rows, t0 = [], [], time.perf_counter()
    for gap in np.diff(points, prepend=0):
        returns = []
        for _ in range(gap):
            state, metrics = iterate(state, 1)
            returns.append(np.asarray(metrics["episode_return"]))
        probs = np.asarray(dyps_jax.group_probabilities(config, state))
        snap = snapshot(probs, int(state.iteration), int(state.env_steps))
        sizes = np.bincount(snap.modal, minlength=m)
        changed = None if not snaps else float((snap.modal != snaps[-1].modal).mean())
        rows.append({
            "iteration": snap.iteration, "env_steps": snap.env_steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "episode_return": float(np.concatenate(returns).mean()),
            "group_sizes": sizes.tolist(),
            "group_sizes_env_mean": (np.eye(m)[probs.argmax(-1)].sum(1).mean(0)).round(2).tolist(),
            "modal_changed_share": changed, "selector_entropy": round(snap.entropy, 4),
            "mean_confidence": round(float(snap.confidence.mean()), 4),
            "mean_agreement": round(float(snap.agreement.mean()), 4),
            "group_env0": snap.group_env0.tolist(),
            "max_prob_env0": snap.max_prob_env0.round(3).tolist(),
            "group_modal": snap.modal.tolist(), "confidence": snap.confidence.round(3).tolist(),
            "agreement": snap.agreement.round(3).tolist(),
        })
        snaps.append(snap)
        print(f"iteration {snap.iteration:>5}/{total}  env steps {snap.env_steps:>9,}  sizes "
              f"{'/'.join(map(str, sizes))}  changed {'-' if changed is None else f'{changed:.2f}'}"
              f"  entropy {snap.entropy:.3f}  confidence {snap.confidence.mean():.2f}  agreement "
              f"{snap.agreement.mean():.2f}  return {rows[-1]['episode_return']:.3f}  "
              f"({rows[-1]['train_seconds']:.0f} s)", flush=True)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"groups_{args.name or args.env}"
    header = {"command": "python experiments/group_maps.py " + " ".join(sys.argv[1:]),
              "env": config.env.name, "method": "dyps", "seed": args.seed,
              "total_steps": config.total_steps, "num_envs": config.num_envs,
              "num_iterations": total, "num_agents": len(layout.xy), "num_groups": m,
              "layout": layout.caption, "snapshots": rows}
    write_atomic(stem.with_suffix(".json"), json.dumps(header) + "\n")

    strip = layout.ticks is not None
    shape = (len(snaps), 1) if strip else (1, len(snaps))
    width = min(14, max(9, 2 + 0.35 * len(layout.xy))) if strip else 4.3 * len(snaps)
    height = (0.9 + width / (len(layout.xy) + 1)) * len(snaps) + 1.2 if strip else 5.4
    fig, axes = plt.subplots(*shape, figsize=(width, height), squeeze=False, layout="constrained")
    colours = np.asarray(matplotlib.colormaps["tab10"](np.arange(m)) if m <= 10
                         else matplotlib.colormaps["turbo"](np.linspace(0, 1, m)))
    for ax, snap, row in zip(axes.ravel(), snaps, rows):
        draw(ax, layout, snap, colours)
        ax.set_title(f"iteration {snap.iteration}/{total}, {snap.env_steps:,} env steps\n"
                     f"sizes {'/'.join(map(str, row['group_sizes']))}, entropy "
                     f"{snap.entropy:.2f}, agreement {row['mean_agreement']:.2f}", fontsize=9)
    handles = [Patch(color=colours[g], label=f"group {g}") for g in range(m)]
    if layout.cell is None:
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="", label="envs disagree"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"DyPS groups on {config.env.name}, E = {config.num_envs} envs, seed "
                 f"{args.seed}: {layout.caption}\ncolour = modal group over envs, opacity = confidence "
                 f"(mean max probability, 1/{m} faint, 1 solid)"
                 + ("" if layout.cell is None else ", numbers = % of envs agreeing (blank: all)"),
                 fontsize=9)
    save_png(fig, stem.with_suffix(".png"))
    print(f"wrote {stem}.png and .json")


if __name__ == "__main__":
    main()
