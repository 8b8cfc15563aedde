"""tools/analyze.py's figures as a reader sees them: every kind drawn from a small synthetic run set, in every format
asked, each panel with data, every text in words (no run folder's names), at 9 pt or more, one colour per method."""

from __future__ import annotations

import re
from pathlib import Path

import analyze
import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from test_analyze import DENSE_CLASSIC, EAUDE_CLASSIC, POLY_CLASSIC, make_run

matplotlib.use("Agg")

# How the run folders name things (`eaudedqn_classic_umax10_t4k`, `dqn_classic_t4k_CartPole-v1`): words joined by
# underscores. Mathtext ($U_{\max}$) is taken out first: its underscores are subscripts.
INTERNAL_NAME = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9_.]+")
MATH = re.compile(r"\$[^$]*\$")
EXPECTED = {
    "dqn_classic_t4k": analyze.FIGURE_KINDS,  # every method, so every kind
    "dqn": tuple(k for k in analyze.FIGURE_KINDS if k != "oracle"),  # Atari, two games pooled, no oracle
}


@pytest.fixture(scope="module")
def figure_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CartPole, 4k steps, T = 500: EauDe (U_max 3 at two sizes, 10 at one, with their populations), PolyPrune, its
    oracle and dense DQN; and online Atari, two games, EauDe beside dense DQN. Two seeds each."""
    root = tmp_path_factory.mktemp("figure_runs")
    period = {"target_network_frequency": 500}
    for seed in (1, 2):
        for size, sparsity in (("small", 0.5), ("large", 0.7)):
            config = {**EAUDE_CLASSIC, "network_size": size, "u_max": 3.0}
            make_run(root, "CartPole-v1", f"eaudedqn_classic_{size}_t4k", seed, 400.0 + seed, sparsity, config,
                     args=period, population=True)  # fmt: skip
            make_run(root, "CartPole-v1", f"polyprune_dqn_classic_{size}_t4k", seed, 300.0, 0.95,
                     {**POLY_CLASSIC, "network_size": size, "final_sparsity": 0.95})  # fmt: skip
            make_run(root, "CartPole-v1", f"dqn_classic_{size}_t4k", seed, 450.0, 0.0,
                     {**DENSE_CLASSIC, "network_size": size})  # fmt: skip
        make_run(root, "CartPole-v1", "eaudedqn_classic_small_umax10_t4k", seed, 380.0, 0.8,
                 {**EAUDE_CLASSIC, "u_max": 10.0}, args=period, population=True)  # fmt: skip
        make_run(root, "CartPole-v1", "polyprune_dqn_classic_small_oracle_t4k", seed, 420.0, 0.5,
                 {**POLY_CLASSIC, "final_sparsity": 0.5 + seed / 100})  # fmt: skip
        for env in ("Pong-v5", "Breakout-v5"):
            random, human = analyze.ATARI_SCORES[analyze.atari_game(env)]
            make_run(root, env, "eaudedqn_small", seed, human, 0.6, {"network_size": "small"}, population=True)
            make_run(root, env, "dqn_small", seed, (random + human) / 2, 0.0, {"network_size": "small",
                     "final_sparsity": 0.0})  # fmt: skip
    return root


def has_data(ax) -> bool:
    """A panel draws something a reader can see: a line with a finite point, a dot, a band, a bar, or says why not."""
    lines = any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any() for line in ax.lines)
    dots = any(np.isfinite(c.get_offsets()).all(axis=1).any() for c in ax.collections if isinstance(c, PathCollection))
    bands = any(len(c.get_paths()) for c in ax.collections if not isinstance(c, PathCollection))
    bars = any(p.get_height() > 0 for p in ax.patches if isinstance(p, Rectangle))
    return lines or dots or bands or bars or bool(ax.texts)


def test_every_figure_kind_is_drawn_in_words(
    figure_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: dict[str, list[tuple[str, float]]] = {}
    colours: dict[str, set[tuple[float, ...]]] = {}
    save = Figure.savefig

    def spy(fig: Figure, fname, *args, **kwargs) -> None:
        save(fig, fname, *args, **kwargs)  # draws the figure first, so its tick labels hold their text
        if not isinstance(fname, str | Path):  # a PNG is drawn into a buffer, then reduced: its PDF and SVG are checked
            return
        name = Path(fname).name
        texts[name] = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(matplotlib.text.Text) if t.get_visible()]
        assert all(has_data(ax) for ax in fig.axes if ax.get_visible()), f"{name}: an empty panel"
        for legend in fig.legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
                colour = handle.get_color() if isinstance(handle, Line2D) else handle.get_edgecolor()
                colours.setdefault(text.get_text(), set()).add(tuple(np.round(matplotlib.colors.to_rgb(colour), 3)))

    monkeypatch.setattr(Figure, "savefig", spy)
    out = tmp_path / "out"
    argv = ["--runs-dir", str(figure_runs), "--output-dir", str(out), "--num-points", "8", "--reps", "20"]
    assert analyze.main([*argv, "--format", "png,pdf,svg"]) == 0

    # Every kind of every setting, in every format asked: none missing, none extra.
    expected = {f"{setting}_{kind}" for setting, kinds in EXPECTED.items() for kind in kinds}
    for fmt in ("png", "pdf", "svg"):
        assert {p.stem for p in out.glob(f"*.{fmt}")} == expected, fmt
    for stem in expected:
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:1000]
        image = imread(out / f"{stem}.png")
        assert image.shape[1] >= 1400, f"{stem}: {image.shape[1]} px across, blurred on a high-density screen"
        assert (image[..., :3] < 0.9).mean() > 0.01, f"{stem}: a blank image"

    # In words: no run folder's name in a title, label, legend or tick; fonts readable at README width.
    assert {f"{stem}.pdf" for stem in expected} <= set(texts)
    runs = analyze.load_runs(figure_runs)
    names = {run.exp_name for run in runs} | {run.method for run in runs if "_" in run.method}
    for name, drawn in texts.items():
        for text, size in drawn:
            words = MATH.sub("", text)
            assert not INTERNAL_NAME.search(words) and not any(n in text for n in names), f"{name}: {text!r}"
            assert size >= 9 or not text.strip(), f"{name}: {text!r} at {size} pt"
    assert any("EauDeDQN" in text for text, _ in texts["dqn_classic_t4k_overview.pdf"])
    # One colour per method across all figures.
    assert {label: len(c) for label, c in colours.items() if len(c) > 1} == {}
    for label in ("EauDeDQN ($U_{\\max}$ = 3)", "PolyPruneDQN ($s_F$ = 0.95)", "DQN (dense)"):
        assert label in colours

    # The summary shows each figure once, as its PNG, in FIGURE_KINDS order.
    summary = (out / "summary.md").read_text()
    shown = re.findall(r"!\[([^]]+)\]\(([^)]+)\)", summary)
    assert [(stem, f"{stem}.png") for stem in sorted(expected, key=order)] == shown


def order(stem: str) -> tuple[int, int]:
    setting = next(s for s in sorted(EXPECTED, key=len, reverse=True) if stem.startswith(s + "_"))
    return (0 if setting == "dqn" else 1, analyze.FIGURE_KINDS.index(stem.removeprefix(setting + "_")))


def test_pdf_alone_is_linked_and_an_unknown_format_is_one_error_line(
    figure_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--runs-dir", str(figure_runs), "--output-dir", str(out), "--num-points", "8", "--reps", "20"]
    assert analyze.main([*argv, "--env-ids", "Pong-v5,Breakout-v5", "--format", "pdf"]) == 0
    assert sorted(p.suffix for p in out.iterdir() if p.stem.startswith("dqn_")) == [".pdf"] * 6
    assert "[dqn_overview (PDF)](dqn_overview.pdf)" in (out / "summary.md").read_text()
    assert analyze.main([*argv, "--format", "png,bmp"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: --format: 'png,bmp' is not a comma list of png, pdf, svg"
